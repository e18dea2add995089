"""Connector for SAP S/4HANA Cloud maintenance, through SAP's OData V2 APIs.

Auth is OAuth2 (authorization code, then refresh tokens) against the system's own OAuth
server (`/sap/bc/sec/oauth2/authorize` and `/token`); access tokens expire, refresh tokens
rotate (see `maintlink.connectors.oauth2`). Every entity is an OData V2 entity set under
`/sap/opu/odata/sap/<service>/`: envelopes `{"d": {"results": [...], "__count", "__next"}}`,
PascalCase fields, timestamps as `/Date(ms)/` or `/Date(ms+0000)/`, decimals as strings,
errors `{"error": {"code", "message": {"lang", "value"}}}`, and gateway 401s as HTML pages.

Listing: `$filter=LastChangeDateTime ge datetimeoffset'...'` (whole seconds, as SAP stores
them), `$orderby=LastChangeDateTime,<key>`, `$top`, `$inlinecount=allpages` on the first page.
A server-driven `__next` link (`$skiptoken`) is followed when the server sends one; otherwise
the next page continues after the last record (`LastChangeDateTime gt t or
(LastChangeDateTime eq t and <key> gt k)`) rather than by `$skip`, so a record that changes
while a listing runs cannot shift unseen records behind the offset. Entity sets without a
change timestamp (suppliers) page with `$skip`. SAP lists no deletions (`reports_deletions =
False`): the sync engine reconciles with full listings.

Writes (maintenance orders only) need SAP's CSRF round trip: a GET with `x-csrf-token: Fetch`
returns a token bound to a session cookie; POST and PATCH send both. Status changes are the
API's function imports (`ReleaseMaintenanceOrder`, `SetMaintOrdToTechCompleted`, ...).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

import httpx

from maintlink.connectors.base import (
    TIMEOUT_SETTING,
    AccountInfo,
    ConnectorError,
    CredentialField,
    FailureKind,
    Page,
    SettingField,
    page_size_setting,
)
from maintlink.connectors.http import (
    DEFAULT_TIMEOUT_SECONDS,
    MAX_ERROR_MESSAGE,
    classify_response,
    classify_transport_error,
    error_message,
    parse_base_url,
)
from maintlink.connectors.oauth2 import (
    DEFAULT_REFRESH_MARGIN_SECONDS,
    OAuth2Client,
    OAuth2Connector,
)
from maintlink.connectors.oauth2 import authorization_url as build_authorization_url

SYSTEM = "SAP S/4HANA Cloud"
ODATA_PATH = "/sap/opu/odata/sap"
AUTHORIZE_PATH = "/sap/bc/sec/oauth2/authorize"
TOKEN_PATH = "/sap/bc/sec/oauth2/token"
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
LOOKUP_BATCH = 40  # keys per `or` filter when reading stock and addresses (URL length)
MAX_STATUS_STEPS = 4
CURSOR_VERSION = 1
ORDER_SERVICE = "API_MAINTENANCEORDER"
DESCRIPTION_LIMIT = 40  # MaintenanceOrderDesc is CHAR 40
LONG_TEXT_ID = "KOPF"  # the order header's long text
DEFAULT_ORDER_TYPES = "PM01=CORRECTIVE,PM02=PREVENTIVE,PM03=PREVENTIVE"
UNIFIED_TYPES = ("CORRECTIVE", "PREVENTIVE", "INSPECTION", "OTHER")
JSON_HEADERS = {"Accept": "application/json"}


@dataclass(frozen=True)
class EntitySet:
    service: str
    name: str
    key: str
    changed: str | None = "LastChangeDateTime"
    filters: tuple[str, ...] = ()
    expand: tuple[str, ...] = ()


RESOURCES: dict[str, EntitySet] = {
    "work_orders": EntitySet(ORDER_SERVICE, "MaintenanceOrder", "MaintenanceOrder",
                             expand=("to_MaintenanceOrderLongText",)),
    # Equipment has time segments: the current one is valid until 9999-12-31.
    "assets": EntitySet("API_EQUIPMENT", "Equipment", "Equipment",
                        filters=("ValidityEndDate eq datetime'9999-12-31T00:00:00'",)),
    "locations": EntitySet("API_FUNCTIONALLOCATION_SRV", "A_FunctionalLocation",
                           "FunctionalLocation"),
    "parts": EntitySet("API_PRODUCT_SRV", "A_Product", "Product",
                       expand=("to_Description", "to_Plant", "to_Valuation")),
    "purchase_orders": EntitySet("API_PURCHASEORDER_PROCESS_SRV", "A_PurchaseOrder",
                                 "PurchaseOrder",
                                 expand=("to_PurchaseOrderItem",
                                         "to_PurchaseOrderItem/to_ScheduleLine")),
    # A_Supplier has no change timestamp: every listing reads all suppliers.
    "vendors": EntitySet("API_BUSINESS_PARTNER", "A_Supplier", "Supplier", changed=None),
}  # fmt: skip
STOCK = EntitySet("API_MATERIAL_STOCK_SRV", "A_MatlStkInAcctMod", "Material", changed=None)
ADDRESSES = EntitySet(
    "API_BUSINESS_PARTNER",
    "A_BusinessPartnerAddress",
    "BusinessPartner",
    changed=None,
    expand=("to_EmailAddress", "to_PhoneNumber"),
)

# System statuses in `SystemStatusText`, strongest first.
SYSTEM_STATUS: tuple[tuple[str, str], ...] = (
    ("DLFL", "CANCELLED"),  # deletion flag
    ("DLT", "CANCELLED"),  # deleted (archiving)
    ("CLSD", "COMPLETED"),  # closed (business completion)
    ("TECO", "COMPLETED"),  # technically completed
    ("LKD", "ON_HOLD"),  # locked
    ("CNF", "IN_PROGRESS"),  # confirmed, not yet technically completed
    ("PCNF", "IN_PROGRESS"),  # partially confirmed
    ("REL", "IN_PROGRESS"),  # released for work
    ("CRTD", "OPEN"),  # created
)
# SAP's standard priorities (priority type PM).
PRIORITY = {"1": "CRITICAL", "2": "HIGH", "3": "MEDIUM", "4": "LOW", "": "NONE"}
PRIORITY_OUT = {"CRITICAL": "1", "HIGH": "2", "MEDIUM": "3", "LOW": "4", "NONE": ""}
# Purchasing processing status (EKKO-PROCSTAT).
PO_PROCESSING = {
    "01": "DRAFT",  # version in process
    "02": "APPROVED",  # active (no release strategy)
    "03": "PENDING_APPROVAL",  # in release
    "04": "PENDING_APPROVAL",  # partially released
    "05": "APPROVED",  # release completed
    "08": "REJECTED",
}
UNRESTRICTED_STOCK = "01"
EXTENSION_PREFIXES = ("YY1_", "ZZ1_")  # key-user extension fields: the customer's own fields

# Function imports that move a maintenance order's status, with their fixed parameters.
RELEASE = ("ReleaseMaintenanceOrder", {})
LOCK = ("SetMaintOrderStatusToLocked", {})
UNLOCK = ("SetMaintOrderStatusToUnlocked", {})
TECO = (
    "SetMaintOrdToTechCompleted",
    {"MainWrkCmpltdDateTimeIsUsed": "false", "AssignedMaintNotifIsToBeClosed": "false"},
)
RESET_TECO = ("ResetMaintOrdStsTechCompleted", {"AssgdMaintNotifIsToBePutInProc": "false"})
DELETION_FLAG = ("SetMaintOrdStsToMrkdForDeltn", {"AssgdMaintNotifIsToBeSetDel": "false"})
RESET_DELETION_FLAG = ("ResetMaintOrdStsMrkdForDeltn", {"AssgdMaintNotifIsToBeResetDel": "false"})

_WORK_ORDER_CREATE = frozenset(
    {"title", "status", "priority", "type", "asset_ids", "location_id", "assignee_user_ids",
     "due_at"}
)  # fmt: skip
_WORK_ORDER_UPDATE = frozenset({"title", "status", "priority", "assignee_user_ids", "due_at"})
_NOT_WRITABLE_REASON = {
    "description": "the order's long text is not writable through API_MAINTENANCEORDER",
    "notes": "the order's long text is not writable through API_MAINTENANCEORDER",
    "team_ids": "the main work center comes from the technical object",
}


# -- values ----------------------------------------------------------------------------------

_SAP_DATE = re.compile(r"^/Date\((-?\d+)(?:[+-]\d{1,4})?\)/$")


def sap_datetime(value: Any) -> datetime | None:
    """`/Date(ms)/`, `/Date(ms+0000)/` (ms since the epoch, UTC) or ISO 8601 as aware UTC;
    None for empty values and SAP's open end 9999-12-31."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    else:
        text = str(value).strip()
        match = _SAP_DATE.match(text)
        try:
            if match:
                parsed = datetime.fromtimestamp(int(match.group(1)) / 1000, UTC)
            else:
                parsed = datetime.fromisoformat(text)
        except (ValueError, OverflowError, OSError):
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    parsed = parsed.astimezone(UTC)
    return None if parsed.year >= 9999 else parsed


def to_sap_datetime(value: Any) -> str:
    """A unified datetime as an OData V2 Edm.DateTimeOffset JSON value."""
    moment = sap_datetime(value)
    if moment is None:
        raise ValueError(f"not a date/time: {value!r}")
    return f"/Date({int(moment.timestamp() * 1000)}+0000)/"


def _floor_iso(moment: datetime) -> str:
    """Whole seconds, UTC: SAP keeps change timestamps to the second."""
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _dto(iso: str) -> str:
    return f"datetimeoffset'{iso}'"


def _literal(value: str) -> str:
    """An OData string literal."""
    return "'" + value.replace("'", "''") + "'"


def _text(value: Any) -> str | None:
    """SAP sends empty character fields as "": those are None here."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    if not number.is_finite():
        return None
    # Plain notation without trailing zeros ("12.000" -> 12, never 1.2E+1).
    if number == number.to_integral_value():
        return number.quantize(Decimal(1))
    return number.normalize()


def _flag(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().upper() in ("X", "TRUE"))


def _results(value: Any) -> list[Mapping[str, Any]]:
    """An expanded navigation property (`{"results": [...]}`, or a bare list)."""
    if isinstance(value, Mapping):
        value = value.get("results")
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _custom(raw: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """SAP fields outside the unified model worth keeping, plus extension fields."""
    fields = {name: raw[name] for name in names if raw.get(name) not in (None, "")}
    for name, value in raw.items():
        if name.startswith(EXTENSION_PREFIXES) and value not in (None, ""):
            fields[name] = value
    return fields


def _enum_codes(text: Any, label: str, *, width: int) -> tuple[str, ...]:
    if text is None or (isinstance(text, str) and not text.strip()):
        return ()
    codes = tuple(c.strip().upper() for c in re.split(r"[,;\s]+", str(text)) if c.strip())
    bad = [c for c in codes if not re.fullmatch(rf"[A-Z0-9_]{{1,{width}}}", c)]
    if bad:
        raise ConnectorError(
            FailureKind.INVALID_CONFIGURATION, f"{label}: not SAP codes: {', '.join(bad)}"
        )
    return codes


def parse_order_types(text: Any) -> dict[str, str]:
    """`PM01=CORRECTIVE,PM02=PREVENTIVE` -> {order type: unified type}, in the given order."""
    if text is None or (isinstance(text, str) and not text.strip()):
        text = DEFAULT_ORDER_TYPES
    table: dict[str, str] = {}
    for entry in (e.strip() for e in re.split(r"[,;\n]+", str(text))):
        if not entry:
            continue
        code, sep, kind = (part.strip().upper() for part in entry.partition("="))
        if not sep or not re.fullmatch(r"[A-Z0-9]{1,4}", code) or kind not in UNIFIED_TYPES:
            raise ConnectorError(
                FailureKind.INVALID_CONFIGURATION,
                f"Order types: {entry!r} is not ORDER_TYPE=TYPE with TYPE one of "
                f"{', '.join(UNIFIED_TYPES)}",
            )
        table[code] = kind
    if not table:
        raise ConnectorError(FailureKind.INVALID_CONFIGURATION, "Order types: none given")
    return table


def instance_root(base_url: Any) -> str:
    """The system's root URL: a pasted OData or OAuth URL works too (cut at `/sap/`)."""
    url = parse_base_url(base_url)
    path = url.path.rstrip("/")
    cut = (path + "/").find("/sap/")
    if cut >= 0:
        path = path[:cut]
    return str(url.copy_with(path=path or "/")).rstrip("/")


# -- mapping ---------------------------------------------------------------------------------


def order_status(system_status: Any) -> str:
    codes = set(str(system_status or "").upper().split())
    return next((unified for code, unified in SYSTEM_STATUS if code in codes), "UNKNOWN")


def _long_text(raw: Mapping[str, Any]) -> str | None:
    texts = _results(raw.get("to_MaintenanceOrderLongText"))
    header = [t for t in texts if t.get("TextObjectType") in (LONG_TEXT_ID, None, "")] or texts
    parts = [str(t["MaintenanceOrderLongText"]) for t in header
             if t.get("MaintenanceOrderLongText")]  # fmt: skip
    return "\n".join(parts) if parts else None


def _map_work_order(raw: Mapping[str, Any], order_types: Mapping[str, str]) -> dict[str, Any]:
    status_text = _text(raw.get("SystemStatusText"))
    status = order_status(status_text)
    priority = raw.get("MaintPriority")
    priority_code = "" if priority is None else str(priority).strip()
    order_type = _text(raw.get("MaintenanceOrderType"))
    completed = sap_datetime(raw.get("MainWorkCompletedDateTime"))
    if completed is None and status == "COMPLETED":
        completed = sap_datetime(raw.get("MaintOrderReferenceDateTime"))
    person = _text(raw.get("MaintOrdPersonResponsible"))
    work_center = _text(raw.get("MainWorkCenter"))
    return {
        "remote_number": _text(raw.get("MaintenanceOrder")),
        "title": _text(raw.get("MaintenanceOrderDesc")),
        "description": _long_text(raw),
        "status": status,
        "remote_status": status_text,
        "priority": PRIORITY.get(priority_code),
        "remote_priority": priority_code or None,
        "type": order_types.get(order_type, "OTHER") if order_type else None,
        "asset_ids": [e] if (e := _text(raw.get("Equipment"))) else [],
        "location_id": _text(raw.get("FunctionalLocation")),
        "assignee_user_ids": [person] if person else [],
        "team_ids": [work_center] if work_center else [],
        "due_at": sap_datetime(raw.get("MaintOrdBasicEndDateTime")),
        "started_at": None,  # the API has planned (basic) dates, not an actual start
        "completed_at": completed,
        "parent_work_order_id": None,
        "custom_fields": _custom(raw, (
            "MaintenanceOrderType", "MaintenancePlanningPlant", "MaintenancePlant",
            "MaintenanceActivityType", "MaintenanceNotification", "UserStatusText",
            "MaintOrdBasicStartDateTime",
        )),
    }  # fmt: skip


def _map_asset(raw: Mapping[str, Any]) -> dict[str, Any]:
    deleted, inactive = raw.get("EquipmentIsMarkedForDeletion"), raw.get("EquipmentIsInactive")
    if _flag(deleted):
        status = "DECOMMISSIONED"
    elif _flag(inactive):
        status = "INACTIVE"
    else:
        status = "ACTIVE" if deleted is not None or inactive is not None else "UNKNOWN"
    return {
        "remote_number": _text(raw.get("Equipment")),
        "name": _text(raw.get("EquipmentName")),
        "description": None,  # the equipment's long text is a separate entity
        "serial_number": (
            _text(raw.get("ManufacturerSerialNumber")) or _text(raw.get("SerialNumber"))
        ),
        "model": _text(raw.get("ManufacturerPartTypeName")),
        "manufacturer": _text(raw.get("AssetManufacturerName")),
        "barcode": None,
        "parent_asset_id": _text(raw.get("SuperordinateEquipment")),
        "location_id": _text(raw.get("FunctionalLocation")),
        "status": status,
        "criticality": _text(raw.get("ABCIndicator")),
        "custom_fields": _custom(raw, (
            "TechnicalObjectType", "TechnicalObjectSortCode", "InventoryNumber",
            "MaintenancePlant", "CostCenter", "EquipmentCategory",
        )),
    }  # fmt: skip


def _address(raw: Mapping[str, Any]) -> str | None:
    street = " ".join(p for p in (_text(raw.get("HouseNumber")), _text(raw.get("StreetName"))) if p)
    city = " ".join(p for p in (_text(raw.get("PostalCode")), _text(raw.get("CityName"))) if p)
    parts = [p for p in (street, city, _text(raw.get("Region")), _text(raw.get("Country"))) if p]
    return ", ".join(parts) or None


def _map_location(raw: Mapping[str, Any]) -> dict[str, Any]:
    code = _text(raw.get("FunctionalLocationLabelName")) or _text(raw.get("FunctionalLocation"))
    return {
        "remote_number": code,
        "name": _text(raw.get("FunctionalLocationName")),
        "code": code,
        "address": _address(raw),
        "parent_location_id": _text(raw.get("SuperiorFunctionalLocation")),
        "type": "FUNCTIONAL_LOCATION",
        "custom_fields": _custom(raw, (
            "MaintenancePlant", "TechnicalObjectType", "FunctionalLocationCategory",
        )),
    }  # fmt: skip


def _unit_cost(valuations: list[Mapping[str, Any]]) -> tuple[Decimal | None, str | None]:
    """Standard price for price control S, moving average price for V; per price unit."""
    for row in valuations:
        moving = str(row.get("InventoryValuationProcedure") or "").upper() == "V"
        price = _decimal(row.get("MovingAveragePrice" if moving else "StandardPrice"))
        if price is None:
            continue
        per = _decimal(row.get("PriceUnitQty")) or Decimal(1)
        return _decimal(price / per) if per else price, _text(row.get("Currency"))
    return None, None


def _map_part(raw: Mapping[str, Any]) -> dict[str, Any]:
    descriptions = _results(raw.get("to_Description"))
    english = [d for d in descriptions if str(d.get("Language", "")).upper() == "EN"]
    name = next((_text(d.get("ProductDescription")) for d in english or descriptions), None)
    unit_cost, currency = _unit_cost(_results(raw.get("to_Valuation")))
    minimums = [_decimal(p.get("ReorderThresholdQuantity")) for p in _results(raw.get("to_Plant"))]
    known = [m for m in minimums if m is not None]
    stock = raw.get("_stock")
    rows = [r for r in stock if isinstance(r, Mapping)] if isinstance(stock, list) else None
    on_hand = None
    if rows is not None:
        amounts = [
            _decimal(r.get("MatlWrhsStkQtyInMatlBaseUnit"))
            for r in rows
            if str(r.get("InventoryStockType") or UNRESTRICTED_STOCK) == UNRESTRICTED_STOCK
        ]
        on_hand = _decimal(sum((a for a in amounts if a is not None), Decimal(0)))
    custom = _custom(raw, ("ProductType", "ProductGroup"))
    if rows:
        custom["stock"] = [
            {
                "plant": _text(r.get("Plant")),
                "storage_location": _text(r.get("StorageLocation")),
                "stock_type": _text(r.get("InventoryStockType")),
                "quantity": str(_decimal(r.get("MatlWrhsStkQtyInMatlBaseUnit"))),
            }
            for r in rows
        ]
    product = _text(raw.get("Product"))
    return {
        "remote_number": product,
        "name": name,
        "part_number": product,
        "uom": _text(raw.get("BaseUnit")),
        "unit_cost": unit_cost,
        "currency": currency,
        "qty_on_hand": on_hand,
        "qty_min": _decimal(sum(known, Decimal(0))) if known else None,
        "qty_reserved": None,  # reservations are not in these APIs
        "qty_on_order": None,
        "stock_location_id": None,  # stock sits in plant storage locations, not locations
        "vendor_ids": [],
        "custom_fields": custom,
    }


def _per_unit(item: Mapping[str, Any]) -> Decimal | None:
    price = _decimal(item.get("NetPriceAmount"))
    per = _decimal(item.get("NetPriceQuantity")) or Decimal(1)
    return None if price is None else _decimal(price / per)


def _map_purchase_order(raw: Mapping[str, Any]) -> dict[str, Any]:
    items = [
        i for i in _results(raw.get("to_PurchaseOrderItem"))
        if not _text(i.get("PurchasingDocumentDeletionCode"))
    ]  # fmt: skip
    lines, total, due = [], Decimal(0), None
    received_any, delivered_all = False, bool(items)
    for item in items:
        quantity, unit = _decimal(item.get("OrderQuantity")), _per_unit(item)
        schedule = _results(item.get("to_ScheduleLine"))
        received = None
        if schedule:
            got = [_decimal(s.get("RoughGoodsReceiptQty")) for s in schedule]
            received = _decimal(sum((g for g in got if g is not None), Decimal(0)))
            for s in schedule:
                when = sap_datetime(s.get("ScheduleLineDeliveryDate"))
                if when is not None and (due is None or when > due):
                    due = when
        received_any = received_any or bool(received)
        delivered_all = delivered_all and _flag(item.get("IsCompletelyDelivered"))
        if total is not None:
            total = None if quantity is None or unit is None else total + quantity * unit
        lines.append({
            "remote_id": _text(item.get("PurchaseOrderItem")),
            "part_id": _text(item.get("Material")),
            "description": _text(item.get("PurchaseOrderItemText")),
            "qty_ordered": quantity,
            "qty_received": received,
            "unit_price": unit,
        })  # fmt: skip
    processing = _text(raw.get("PurchasingProcessingStatus"))
    status = PO_PROCESSING.get(processing or "", "UNKNOWN")
    if _text(raw.get("PurchasingDocumentDeletionCode")):
        status = "CANCELLED"
    elif status == "APPROVED" and delivered_all:
        status = "RECEIVED"
    elif status == "APPROVED" and received_any:
        status = "PARTIALLY_RECEIVED"
    number = _text(raw.get("PurchaseOrder"))
    return {
        "remote_number": number,
        "number": number,
        "status": status,
        "remote_status": processing,
        "vendor_id": _text(raw.get("Supplier")),
        "currency": _text(raw.get("DocumentCurrency")),
        "total_amount": _decimal(total) if total is not None and items else None,
        "ordered_at": sap_datetime(raw.get("PurchaseOrderDate")),
        "due_at": due,
        "lines": lines,
        "custom_fields": _custom(raw, (
            "PurchaseOrderType", "CompanyCode", "PurchasingOrganization", "PurchasingGroup",
        )),
    }  # fmt: skip


def _default_first(rows: list[Mapping[str, Any]], flag: str) -> Mapping[str, Any] | None:
    return next((r for r in rows if _flag(r.get(flag))), rows[0] if rows else None)


def _map_vendor(raw: Mapping[str, Any]) -> dict[str, Any]:
    addresses = [a for a in raw.get("_addresses") or [] if isinstance(a, Mapping)]
    address = addresses[0] if addresses else {}
    email = _default_first(_results(address.get("to_EmailAddress")), "IsDefaultEmailAddress")
    phone = _default_first(_results(address.get("to_PhoneNumber")), "IsDefaultPhoneNumber")
    supplier = _text(raw.get("Supplier"))
    return {
        "remote_number": supplier,
        "name": _text(raw.get("SupplierName")) or _text(raw.get("SupplierFullName")),
        "code": supplier,
        "email": _text(email.get("EmailAddress")) if email else None,
        "phone": (
            _text(phone.get("InternationalPhoneNumber")) or _text(phone.get("PhoneNumber"))
            if phone
            else None
        ),
        "address": _address(address) if address else None,
        "contacts": [],  # contact persons are business partner relationships
        "custom_fields": _custom(raw, (
            "SupplierAccountGroup", "PurchasingIsBlocked", "PostingIsBlocked",
            "DeletionIndicator",
        )),
    }  # fmt: skip


# -- listing state (the opaque Page.next_cursor) ---------------------------------------------


@dataclass(frozen=True)
class _Listing:
    entity: str
    since: str | None = None  # change filter, whole seconds (ISO)
    after: tuple[str, str] | None = None  # (LastChangeDateTime, key) of the last record
    skip: int = 0  # offset within the current filter (sets without a change timestamp)
    next: str | None = None  # query of the server's __next link
    total: int | None = None  # __count of the first page
    listed: int = 0

    def encode(self) -> str:
        raw = json.dumps({"v": CURSOR_VERSION, **asdict(self)}, separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, entity: str, cursor: str) -> _Listing:
        try:
            body = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
            if not isinstance(body, dict) or body.pop("v", None) != CURSOR_VERSION:
                raise ValueError("unknown cursor version")
            after = body.get("after")
            if after is not None:
                body["after"] = (str(after[0]), str(after[1]))
            listing = cls(**body)
        except (ValueError, TypeError, IndexError, UnicodeError, binascii.Error) as exc:
            raise ConnectorError(
                FailureKind.PROVIDER_ERROR, f"Unusable {SYSTEM} listing cursor: {exc}"
            ) from exc
        if listing.entity != entity:
            raise ConnectorError(
                FailureKind.PROVIDER_ERROR, f"This cursor lists {listing.entity}, not {entity}"
            )
        return listing


# -- the connector ---------------------------------------------------------------------------


class SapS4HanaConnector(OAuth2Connector):
    slug: ClassVar[str] = "sap_s4hana"
    name: ClassVar[str] = SYSTEM
    credential_fields: ClassVar[tuple[CredentialField, ...]] = (
        CredentialField(
            name="base_url",
            label="Instance URL",
            type="url",
            placeholder="https://my123456-api.s4hana.cloud.sap",
            help="The API URL of the SAP S/4HANA Cloud system (the host with `-api`).",
        ),
        CredentialField(
            name="client_id",
            label="OAuth client ID",
            help="The OAuth client registered in the SAP system for maintlink.",
        ),
        CredentialField(
            name="client_secret", label="OAuth client secret", type="password", secret=True
        ),
        CredentialField(
            name="refresh_token",
            label="Refresh token",
            type="password",
            secret=True,
            help="From the OAuth authorization; maintlink's connection flow fills it in.",
        ),
        CredentialField(
            name="access_token",
            label="Access token",
            type="password",
            secret=True,
            required=False,
            help="Kept up to date by maintlink.",
        ),
        CredentialField(
            name="expires_at",
            label="Access token expiry",
            required=False,
            help="Kept up to date by maintlink (ISO 8601, UTC).",
        ),
        CredentialField(
            name="order_types",
            label="Order types",
            required=False,
            placeholder=DEFAULT_ORDER_TYPES,
            help="Which maintenance order types mean what: `TYPE=CORRECTIVE`, `PREVENTIVE`, "
            "`INSPECTION` or `OTHER`, comma separated. The first one is used for new orders.",
        ),
        CredentialField(
            name="product_types",
            label="Product types of parts",
            required=False,
            placeholder="ERSA,HIBE",
            help="Only products of these types are synced as parts; empty: all products.",
        ),
    )
    entities: ClassVar[tuple[str, ...]] = tuple(RESOURCES)
    writable_entities: ClassVar[tuple[str, ...]] = ("work_orders",)
    setting_fields: ClassVar[tuple[SettingField, ...]] = (
        page_size_setting(MAX_PAGE_SIZE, DEFAULT_PAGE_SIZE), TIMEOUT_SETTING,
        SettingField(
            "token_refresh_margin_seconds", "Refresh margin (seconds)", "number",
            DEFAULT_REFRESH_MARGIN_SECONDS, 0, 3600,
            help="An access token is refreshed this long before it expires",
        ),
    )
    reports_deletions: ClassVar[bool] = False
    docs_url: ClassVar[str | None] = "https://api.sap.com/api/API_MAINTENANCEORDER/overview"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._csrf_token: str | None = None
        self._session_cookies: dict[str, str] = {}

    # -- the hosted connection flow ----------------------------------------------------------

    @classmethod
    def authorization_url(
        cls,
        base_url: str,
        client_id: str,
        redirect_uri: str,
        state: str,
        code_challenge: str,
        scope: str | None = None,
    ) -> str:
        """The SAP system's authorization page for this client (PKCE S256)."""
        return build_authorization_url(
            f"{instance_root(base_url)}{AUTHORIZE_PATH}",
            client_id=client_id,
            redirect_uri=redirect_uri,
            state=state,
            code_challenge=code_challenge,
            scope=scope,
        )

    @classmethod
    async def exchange_code(
        cls,
        http: httpx.AsyncClient,
        base_url: str,
        client_id: str,
        client_secret: str,
        code: str,
        redirect_uri: str,
        code_verifier: str,
    ) -> dict[str, str]:
        """Trade the authorization code for tokens; returns the credentials to store."""
        client = cls._client(instance_root(base_url), client_id, client_secret)
        tokens = await client.exchange_code(
            http, code=code, redirect_uri=redirect_uri, code_verifier=code_verifier
        )
        if not tokens.get("refresh_token"):
            raise ConnectorError(
                FailureKind.PROVIDER_ERROR,
                f"{SYSTEM} issued no refresh token: allow refresh tokens for the OAuth client",
            )
        return {**tokens, "client_id": client_id, "client_secret": client_secret}

    @staticmethod
    def _client(root: str, client_id: str, client_secret: str | None) -> OAuth2Client:
        return OAuth2Client(
            token_url=f"{root}{TOKEN_PATH}",
            client_id=client_id,
            client_secret=client_secret,
            system=SYSTEM,
        )

    def oauth_client(self, credentials: Mapping[str, Any]) -> OAuth2Client:
        client_id = credentials.get("client_id")
        if not isinstance(client_id, str) or not client_id.strip():
            raise ConnectorError(FailureKind.INVALID_CONFIGURATION, "OAuth client ID is missing")
        secret = credentials.get("client_secret")
        client = self._client(
            instance_root(credentials.get("base_url")),
            client_id.strip(),
            secret if isinstance(secret, str) else None,
        )
        return replace(client, timeout=self.timeout)

    # -- plumbing ----------------------------------------------------------------------------

    @property
    def root(self) -> str:
        return instance_root(self.credentials.get("base_url"))

    @property
    def odata_url(self) -> str:
        return f"{self.root}{ODATA_PATH}"

    @property
    def timeout(self) -> float:
        return float(self.settings.get("timeout", DEFAULT_TIMEOUT_SECONDS))

    @property
    def page_size(self) -> int:
        return max(1, min(int(self.settings.get("page_size", DEFAULT_PAGE_SIZE)), MAX_PAGE_SIZE))

    @property
    def order_types(self) -> dict[str, str]:
        return parse_order_types(self.credentials.get("order_types"))

    @property
    def product_types(self) -> tuple[str, ...]:
        return _enum_codes(self.credentials.get("product_types"), "Product types", width=4)

    def _set_url(self, res: EntitySet) -> str:
        return f"{self.odata_url}/{res.service}/{res.name}"

    async def _send_with_token(
        self, token: str, method: str, url: str, **kwargs: Any
    ) -> httpx.Response:
        """Send with our own SAP session cookies only: the shared client's cookie jar may
        hold other connections' sessions for the same host."""
        headers = {**(kwargs.pop("headers", None) or {}), "Authorization": f"Bearer {token}"}
        try:
            request = self.http.build_request(
                method, url, headers=headers, timeout=self.timeout, **kwargs
            )
            request.headers.pop("Cookie", None)
            if self._session_cookies:
                request.headers["Cookie"] = "; ".join(
                    f"{k}={v}" for k, v in self._session_cookies.items()
                )
            response = await self.http.send(request)
        except httpx.HTTPError as exc:
            raise classify_transport_error(exc, system=SYSTEM) from exc
        self._take_cookies(response)
        return response

    def _take_cookies(self, response: httpx.Response) -> None:
        if "set-cookie" not in response.headers:
            return
        for cookie in response.cookies.jar:
            if cookie.value is not None:
                self._session_cookies[cookie.name] = cookie.value
            # Keep this connection's SAP session out of the shared client's jar.
            try:
                self.http.cookies.jar.clear(cookie.domain, cookie.path, cookie.name)
            except KeyError:
                pass

    async def _get(self, url: str, params: Any = None, *, headers: Any = None) -> Any:
        response = await self.send_authorized(
            "GET", url, params=params, headers={**JSON_HEADERS, **(headers or {})}
        )
        if not response.is_success:
            raise _classify(response)
        return _json(response)

    async def _modify(
        self,
        method: str,
        url: str,
        *,
        params: Any = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """A write: with a CSRF token (fetched once per connector, again if SAP says it is
        no longer valid)."""
        response: httpx.Response | None = None
        for attempt in range(2):
            token = await self._fetch_csrf_token(renew=attempt > 0)
            response = await self.send_authorized(
                method, url, params=params, json=json_body,
                headers={**JSON_HEADERS, **(headers or {}), "x-csrf-token": token},
            )  # fmt: skip
            if not (response.status_code == 403 and _csrf_refused(response)):
                break
        assert response is not None
        if not response.is_success:
            raise _classify(response)
        return response

    async def _fetch_csrf_token(self, *, renew: bool = False) -> str:
        if self._csrf_token and not renew:
            return self._csrf_token
        self._csrf_token = None
        self._session_cookies.clear()  # a new token comes with a new session
        response = await self.send_authorized(
            "GET", f"{self.odata_url}/{ORDER_SERVICE}/",
            headers={**JSON_HEADERS, "x-csrf-token": "Fetch"},
        )  # fmt: skip
        if not response.is_success:
            raise _classify(response)
        token = response.headers.get("x-csrf-token", "").strip()
        if not token or token.lower() == "required":
            raise ConnectorError(
                FailureKind.PROVIDER_ERROR, f"{SYSTEM} handed out no CSRF token for writes"
            )
        self._csrf_token = token
        return token

    def _resource(self, entity: str) -> EntitySet:
        if entity not in RESOURCES:
            raise ValueError(f"{SYSTEM} has no entity {entity!r}")
        return RESOURCES[entity]

    # -- the contract ------------------------------------------------------------------------

    async def validate(self) -> AccountInfo:
        """Read the maintenance order service document: checks the URL, the OAuth client,
        the grant and the access to API_MAINTENANCEORDER in one request."""
        order_types = self.order_types  # refuse bad settings before any request
        _ = self.product_types
        try:
            body = await self._get(f"{self.odata_url}/{ORDER_SERVICE}/")
        except ConnectorError as exc:
            code = exc.status_code
            if code is not None and (code == 404 or code < 400):
                raise ConnectorError(
                    FailureKind.INVALID_CONFIGURATION,
                    f"No {SYSTEM} OData service {ORDER_SERVICE} or OAuth server at this URL "
                    f"(HTTP {code}): {exc.message}",
                    status_code=code,
                ) from exc
            raise
        sets = body.get("d", {}).get("EntitySets") if isinstance(body, Mapping) else None
        if not isinstance(sets, list) or "MaintenanceOrder" not in sets:
            raise ConnectorError(
                FailureKind.INVALID_CONFIGURATION,
                f"The service at this URL is not {SYSTEM}'s {ORDER_SERVICE}",
            )
        url = httpx.URL(self.root)
        host = url.netloc.decode("ascii", "replace")
        path = url.path.rstrip("/")
        return AccountInfo(
            remote_account_id=f"{host}{path}",
            remote_account_name=f"{SYSTEM} ({host})",
            extra={"odata_url": self.odata_url, "order_types": order_types},
        )

    async def check_health(self) -> None:
        body = await self._get(f"{self.odata_url}/{ORDER_SERVICE}/")
        if not isinstance(body, Mapping) or not isinstance(body.get("d"), Mapping):
            raise ConnectorError(
                FailureKind.PROVIDER_ERROR, f"{SYSTEM} answered its service document oddly"
            )

    async def list_records(
        self, entity: str, *, modified_since: datetime | None = None, cursor: str | None = None
    ) -> AsyncIterator[Page]:
        """Pages oldest change first. `cursor` resumes a listing: it holds the change filter
        of the listing it came from, so `modified_since` only applies to a fresh start."""
        res = self._resource(entity)
        if cursor:
            listing = _Listing.decode(entity, cursor)
        else:
            since = sap_datetime(modified_since) if res.changed else None
            listing = _Listing(entity, since=_floor_iso(since) if since else None)
        page_size = self.page_size
        while True:
            if listing.next is not None:
                url, params = f"{self._set_url(res)}?{listing.next}", None
            else:
                url, params = self._set_url(res), self._params(res, listing, page_size)
            body = await self._get(url, params)
            records, next_link, count = _page(body)
            if entity == "parts":
                await self._attach_stock(records)
            elif entity == "vendors":
                await self._attach_addresses(records)
            following = self._following(res, listing, records, next_link, count, page_size)
            yield Page(records=records, next_cursor=following.encode() if following else None)
            if following is None:
                return
            listing = following

    def _params(self, res: EntitySet, listing: _Listing, page_size: int) -> list[tuple[str, str]]:
        clauses = list(res.filters)
        if res.name == "A_Product" and self.product_types:
            types = " or ".join(f"ProductType eq {_literal(t)}" for t in self.product_types)
            clauses.append(f"({types})")
        if res.changed and listing.after is not None:
            stamp, key = _dto(listing.after[0]), _literal(listing.after[1])
            clauses.append(
                f"({res.changed} gt {stamp} or ({res.changed} eq {stamp} and {res.key} gt {key}))"
            )
        elif res.changed and listing.since is not None:
            clauses.append(f"{res.changed} ge {_dto(listing.since)}")
        order = f"{res.changed} asc,{res.key} asc" if res.changed else f"{res.key} asc"
        params = [("$top", str(page_size)), ("$orderby", order)]
        if clauses:
            params.append(("$filter", " and ".join(clauses)))
        if res.expand:
            params.append(("$expand", ",".join(res.expand)))
        if listing.skip:
            params.append(("$skip", str(listing.skip)))
        if listing.listed == 0:
            params.append(("$inlinecount", "allpages"))
        return params

    def _following(
        self,
        res: EntitySet,
        listing: _Listing,
        records: list[dict[str, Any]],
        next_link: str | None,
        count: int | None,
        page_size: int,
    ) -> _Listing | None:
        """Where the listing continues after this page, or None at the end."""
        listed = listing.listed + len(records)
        total = listing.total if listing.total is not None else count
        if next_link:  # server-driven paging: the server decides
            query = self._next_query(res, next_link)
            if query == listing.next:
                raise ConnectorError(
                    FailureKind.PROVIDER_ERROR,
                    f"{SYSTEM} answered a __next link that does not move",
                )
            return replace(listing, next=query, listed=listed, total=total)
        if not records or listing.next is not None:
            return None
        # A short page ends the listing, unless the count says the server capped the page
        # silently. (A full page is followed by another request even when the count is
        # reached: records changed meanwhile come again at the end.)
        if len(records) < page_size and (total is None or listed >= total):
            return None
        last = records[-1]
        stamp = sap_datetime(last.get(res.changed)) if res.changed else None
        key = _text(last.get(res.key))
        if stamp is not None and key is not None:
            after = (_floor_iso(stamp), key)
            if after == listing.after:
                raise ConnectorError(
                    FailureKind.PROVIDER_ERROR, f"{SYSTEM} ignored the listing's $filter"
                )
            return replace(listing, after=after, skip=0, listed=listed, total=total)
        # No change timestamp on this record (or set): continue by offset in this filter.
        return replace(listing, skip=listing.skip + len(records), listed=listed, total=total)

    def _next_query(self, res: EntitySet, link: str) -> str:
        """The query of a `__next` link. Only the query is used, on our own URL: the token
        goes nowhere but the instance URL, whatever host a link names."""
        try:
            url = httpx.URL(self._set_url(res)).join(link)
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            raise ConnectorError(
                FailureKind.PROVIDER_ERROR, f"{SYSTEM} answered an unusable __next link"
            ) from exc
        if not url.path.rstrip("/").endswith(f"/{res.service}/{res.name}") or not url.query:
            raise ConnectorError(
                FailureKind.PROVIDER_ERROR,
                f"{SYSTEM} answered a __next link to another resource: {url.path}",
            )
        return url.query.decode("ascii", "replace")

    async def _lookup(self, res: EntitySet, keys: list[str]) -> list[Mapping[str, Any]]:
        """Every record of a set whose key is one of `keys` (batched `or` filters)."""
        rows: list[Mapping[str, Any]] = []
        for start in range(0, len(keys), LOOKUP_BATCH):
            batch = keys[start : start + LOOKUP_BATCH]
            base = [
                ("$filter", " or ".join(f"{res.key} eq {_literal(k)}" for k in batch)),
                ("$top", str(MAX_PAGE_SIZE)),
            ]
            if res.expand:
                base.append(("$expand", ",".join(res.expand)))
            url, query, skip = self._set_url(res), base, 0
            for _ in range(1000):  # bound: a server whose pages never end
                found, next_link, _ = _page(await self._get(url, query))
                rows.extend(found)
                if next_link:
                    url = f"{self._set_url(res)}?{self._next_query(res, next_link)}"
                    query = None
                elif query is not None and len(found) >= MAX_PAGE_SIZE:
                    skip += len(found)
                    query = [*base, ("$skip", str(skip))]
                else:
                    break
        return rows

    async def _attach_stock(self, records: list[dict[str, Any]]) -> None:
        """Stock quantities per product from API_MATERIAL_STOCK_SRV (`_stock` on the record).
        Without access to that API, parts still sync, without quantities."""
        products = sorted({str(r["Product"]) for r in records if _text(r.get("Product"))})
        try:
            rows = await self._lookup(STOCK, products) if products else []
        except ConnectorError as exc:
            if exc.kind is not FailureKind.PERMISSION_DENIED:
                raise
            for record in records:
                record["_stock"] = None
            return
        by_product: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_product.setdefault(str(row.get("Material")), []).append(dict(row))
        for record in records:
            record["_stock"] = by_product.get(str(record.get("Product")), [])

    async def _attach_addresses(self, records: list[dict[str, Any]]) -> None:
        """E-mail, phone and address of each supplier's business partner (`_addresses`)."""
        suppliers = sorted({str(r["Supplier"]) for r in records if _text(r.get("Supplier"))})
        rows = await self._lookup(ADDRESSES, suppliers) if suppliers else []
        by_partner: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_partner.setdefault(str(row.get("BusinessPartner")), []).append(dict(row))
        for record in records:
            record["_addresses"] = by_partner.get(str(record.get("Supplier")), [])

    def map_record(self, entity: str, raw: Mapping[str, Any]) -> dict[str, Any]:
        res = self._resource(entity)
        if entity == "work_orders":
            fields = _map_work_order(raw, self.order_types)
            created = sap_datetime(raw.get("MaintOrderCreationDateTime"))
        else:
            fields = MAPPERS[entity](raw)
            created = sap_datetime(raw.get("CreationDate"))
        return {
            "remote_id": str(raw[res.key]),
            "created_at": created,
            "updated_at": sap_datetime(raw.get(res.changed)) if res.changed else None,
            "remote_deleted_at": None,  # SAP lists no deletions
            **fields,
        }

    # -- writes: maintenance orders ----------------------------------------------------------

    def _order_url(self, key: str) -> str:
        return f"{self.odata_url}/{ORDER_SERVICE}/MaintenanceOrder({_literal(key)})"

    async def create(self, entity: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Create a maintenance order, then move it to `status` with function imports."""
        if entity != "work_orders":
            raise ValueError(f"{SYSTEM} cannot create {entity} through maintlink")
        _check_fields(fields, _WORK_ORDER_CREATE, "create maintenance orders with")
        body = self._order_body(fields, creating=True)
        target = _status(fields.get("status"))
        response = await self._modify("POST", f"{self.odata_url}/{ORDER_SERVICE}/MaintenanceOrder",
                                      json_body=body)  # fmt: skip
        created = _json(response)
        record = created.get("d") if isinstance(created, Mapping) else None
        key = _text(record.get("MaintenanceOrder")) if isinstance(record, Mapping) else None
        if key is None:
            raise ConnectorError(
                FailureKind.PROVIDER_ERROR, f"{SYSTEM} answered a create without an order number"
            )
        if target not in (None, "OPEN"):
            await self._move_status(key, str(target))
        return await self._get_order(key)

    async def update(
        self, entity: str, remote_id: str, fields: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Change a maintenance order's fields (PATCH with If-Match), then its status."""
        if entity != "work_orders":
            raise ValueError(f"{SYSTEM} cannot update {entity} through maintlink")
        _check_fields(fields, _WORK_ORDER_UPDATE, "update maintenance orders with")
        body = self._order_body(fields, creating=False)
        target = _status(fields.get("status"))
        key = str(remote_id).strip()
        if not key:
            raise ValueError("remote_id must be a maintenance order number")
        current = await self._get_order(key)
        status = order_status(current.get("SystemStatusText"))
        if target == "OPEN" and status in ("IN_PROGRESS", "COMPLETED"):
            raise ValueError(f"{SYSTEM} cannot take a released or completed order back to OPEN")
        # SAP refuses changes to locked orders and orders flagged for deletion: when the
        # order leaves that state anyway, change the status first.
        status_first = (
            bool(body)
            and status in ("ON_HOLD", "CANCELLED")
            and target not in (None, "ON_HOLD", "CANCELLED")
        )
        if status_first:
            await self._move_status(key, str(target), current=current)
            current = await self._get_order(key)
        if body:
            meta = current.get("__metadata")
            etag = meta.get("etag") if isinstance(meta, Mapping) else None
            await self._modify("PATCH", self._order_url(key), json_body=body,
                               headers={"If-Match": str(etag)} if etag else None)  # fmt: skip
        if target is not None and not status_first:
            await self._move_status(key, target, current=current)  # a PATCH keeps the status
        return await self._get_order(key)

    def _order_body(self, fields: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if "title" in fields or creating:
            title = fields.get("title")
            if not isinstance(title, str) or not title.strip():
                raise ValueError("title is required and cannot be empty")
            if len(title) > DESCRIPTION_LIMIT:
                raise ValueError(
                    f"{SYSTEM} order descriptions hold {DESCRIPTION_LIMIT} characters, "
                    f"got {len(title)}"
                )
            body["MaintenanceOrderDesc"] = title
        if "priority" in fields:
            priority = fields["priority"]
            if priority not in PRIORITY_OUT:
                raise ValueError(f"priority {priority!r} is not one of {sorted(PRIORITY_OUT)}")
            body["MaintPriority"] = PRIORITY_OUT[priority]
        if creating:
            body["MaintenanceOrderType"] = self._order_type(fields.get("type"))
            assets = _ids(fields.get("asset_ids"), "asset_ids")
            if len(assets) > 1:
                raise ValueError(f"{SYSTEM} orders reference one equipment, got {len(assets)}")
            if assets:
                body["Equipment"] = assets[0]
            if fields.get("location_id") is not None:
                body["FunctionalLocation"] = str(fields["location_id"])
        if "assignee_user_ids" in fields:
            people = _ids(fields.get("assignee_user_ids"), "assignee_user_ids")
            if len(people) > 1:
                raise ValueError(f"{SYSTEM} orders have one person responsible, got {len(people)}")
            if people or not creating:
                body["MaintOrdPersonResponsible"] = people[0] if people else ""
        if "due_at" in fields and (fields["due_at"] is not None or not creating):
            due = fields["due_at"]
            body["MaintOrdBasicEndDateTime"] = None if due is None else to_sap_datetime(due)
        return body

    def _order_type(self, kind: Any) -> str:
        table = self.order_types
        if kind is None:
            return next(iter(table))
        if kind not in UNIFIED_TYPES:
            raise ValueError(f"type {kind!r} is not one of {list(UNIFIED_TYPES)}")
        code = next((c for c, k in table.items() if k == kind), None)
        if code is None:
            raise ValueError(
                f"No SAP order type is mapped to {kind}; add one to the connection's Order types"
            )
        return code

    async def _get_order(self, key: str) -> dict[str, Any]:
        body = await self._get(self._order_url(key), [("$expand", "to_MaintenanceOrderLongText")])
        record = body.get("d") if isinstance(body, Mapping) else None
        if not isinstance(record, Mapping):
            raise ConnectorError(
                FailureKind.PROVIDER_ERROR, f"{SYSTEM} answered without a maintenance order"
            )
        return dict(record)

    async def _move_status(
        self, key: str, target: str, *, current: Mapping[str, Any] | None = None
    ) -> None:
        """Function imports, one step at a time, until the order has the target status."""
        record = current if current is not None else await self._get_order(key)
        for _ in range(MAX_STATUS_STEPS):
            status = order_status(record.get("SystemStatusText"))
            step = _status_step(status, target)
            if step is None:
                return
            name, extra = step
            params = {"MaintenanceOrder": _literal(key), **extra}
            if name == TECO[0]:
                params["MaintOrderReferenceDateTime"] = _dto(_floor_iso(self.clock()))
            await self._modify("POST", f"{self.odata_url}/{ORDER_SERVICE}/{name}", params=params)
            record = await self._get_order(key)
            if order_status(record.get("SystemStatusText")) == status:
                raise ConnectorError(
                    FailureKind.PROVIDER_ERROR,
                    f"{SYSTEM} accepted {name} but order {key} is still {status}",
                )
        raise ConnectorError(
            FailureKind.PROVIDER_ERROR, f"Order {key} did not reach {target} in time"
        )


MAPPERS = {
    "assets": _map_asset,
    "locations": _map_location,
    "parts": _map_part,
    "purchase_orders": _map_purchase_order,
    "vendors": _map_vendor,
}


# -- write helpers ---------------------------------------------------------------------------


def _check_fields(fields: Mapping[str, Any], allowed: frozenset[str], action: str) -> None:
    unknown = sorted(set(fields) - allowed)
    if unknown:
        reasons = [f"{n} ({_NOT_WRITABLE_REASON[n]})" if n in _NOT_WRITABLE_REASON else n
                   for n in unknown]  # fmt: skip
        raise ValueError(f"{SYSTEM} cannot {action}: {', '.join(reasons)}")


def _ids(value: Any, label: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise ValueError(f"{label} must be a list of ids")
    return [str(v) for v in value]


def _status(value: Any) -> str | None:
    if value is None:
        return None
    allowed = ("OPEN", "IN_PROGRESS", "ON_HOLD", "COMPLETED", "CANCELLED")
    if value not in allowed:
        raise ValueError(f"status {value!r} is not one of {list(allowed)}")
    return str(value)


def _status_step(status: str, target: str) -> tuple[str, dict[str, str]] | None:
    """The next function import on the way from `status` to `target` (None: arrived)."""
    if status == target:
        return None
    if status == "CANCELLED":
        return RESET_DELETION_FLAG
    if status == "ON_HOLD":
        return UNLOCK
    if status == "UNKNOWN":
        raise ValueError(f"{SYSTEM} order status is not one maintlink can change")
    if target == "OPEN":
        raise ValueError(f"{SYSTEM} cannot take a released or completed order back to OPEN")
    if target == "CANCELLED":
        return DELETION_FLAG
    if status == "COMPLETED":
        return RESET_TECO
    if target == "IN_PROGRESS":
        return RELEASE
    if target == "ON_HOLD":
        return LOCK
    return TECO  # target COMPLETED from OPEN or IN_PROGRESS


# -- answers ---------------------------------------------------------------------------------


def _json(response: httpx.Response) -> Any:
    kind = response.headers.get("content-type", "").lower()
    try:
        return response.json()
    except ValueError as exc:
        what = "an HTML page (a logon page?)" if "html" in kind else "a body that is not JSON"
        raise ConnectorError(
            FailureKind.PROVIDER_ERROR,
            f"{SYSTEM} answered {response.status_code} with {what} instead of OData JSON",
            status_code=response.status_code,
        ) from exc


def _page(body: Any) -> tuple[list[dict[str, Any]], str | None, int | None]:
    """(records, __next, __count) of an OData V2 collection answer."""
    d = body.get("d") if isinstance(body, Mapping) else None
    if isinstance(d, list):  # OData V1-style answers have no results wrapper
        d = {"results": d}
    results = d.get("results") if isinstance(d, Mapping) else None
    if not isinstance(results, list) or not all(isinstance(r, Mapping) for r in results):
        raise ConnectorError(
            FailureKind.PROVIDER_ERROR, f"{SYSTEM} answered a page without d.results"
        )
    assert isinstance(d, Mapping)
    next_link = d.get("__next")
    if next_link is not None and (not isinstance(next_link, str) or not next_link):
        raise ConnectorError(FailureKind.PROVIDER_ERROR, f"{SYSTEM} answered an unusable __next")
    count: int | None = None
    try:
        count = int(d["__count"]) if d.get("__count") not in (None, "") else None
    except (TypeError, ValueError):
        count = None
    return [dict(r) for r in results], next_link, count


def _odata_message(response: httpx.Response) -> tuple[str | None, str | None]:
    """(code, message) of an OData error body; (None, None) for anything else."""
    try:
        body = response.json()
    except ValueError:
        return None, None
    error = body.get("error") if isinstance(body, Mapping) else None
    if not isinstance(error, Mapping):
        return None, None
    message = error.get("message")
    if isinstance(message, Mapping):
        message = message.get("value")
    code = error.get("code")
    return (str(code) if code else None), (str(message)[:MAX_ERROR_MESSAGE] if message else None)


def _csrf_refused(response: httpx.Response) -> bool:
    if response.headers.get("x-csrf-token", "").strip().lower() == "required":
        return True
    return "csrf token validation failed" in response.text[:500].lower()


def _classify(response: httpx.Response) -> ConnectorError:
    """SAP's answers: OData error bodies, HTML gateway pages, CSRF refusals."""
    status = response.status_code
    code, message = _odata_message(response)
    if status == 401:
        return ConnectorError(
            FailureKind.AUTH,
            f"{SYSTEM} refused the access token (HTTP 401)" + (f": {message}" if message else ""),
            status_code=status,
        )
    if status == 403 and _csrf_refused(response):
        return ConnectorError(
            FailureKind.PROVIDER_ERROR,
            f"{SYSTEM}: CSRF token validation failed",
            status_code=status,
        )
    base = classify_response(response, system=SYSTEM)
    text = message or error_message(response)
    if code and message:
        text = f"{message} ({code})"
    if base.kind is FailureKind.UNAVAILABLE:
        text = f"{SYSTEM} answered {status}: {text}"
    elif base.kind is FailureKind.PERMISSION_DENIED and not message:
        text = (
            f"{SYSTEM} denied access (HTTP 403): the communication arrangement or the "
            "user's role does not include this API"
        )
    return ConnectorError(base.kind, text, status_code=status, retry_after=base.retry_after)
