"""An SAP S/4HANA Cloud simulator over the shared sandbox state.

It presents `SandboxState`'s data the way SAP S/4HANA Cloud's OData V2 APIs do, under
`/sap/opu/odata/sap/<service>/<entity set>`:

* `API_MAINTENANCEORDER/MaintenanceOrder` (work orders, with long texts and the status
  function imports), `API_EQUIPMENT/Equipment` (assets), `API_FUNCTIONALLOCATION_SRV/
  A_FunctionalLocation` (locations other than storerooms), `API_PRODUCT_SRV/A_Product` and
  `API_MATERIAL_STOCK_SRV/A_MatlStkInAcctMod` (parts and their stock in storerooms, which are
  storage locations), `API_PURCHASEORDER_PROCESS_SRV/A_PurchaseOrder` (with items and
  schedule lines), `API_BUSINESS_PARTNER/A_Supplier` and `A_BusinessPartnerAddress` (vendors).
* OData V2 query options: `$filter` (eq ne gt ge lt le, and/or/not, parentheses; string,
  number, boolean, `datetime'...'` and `datetimeoffset'...'` literals), `$orderby`, `$top`,
  `$skip`, `$inlinecount=allpages` (`__count`), `$select`, `$expand`, server-driven paging
  (`__next` with `$skiptoken` when a page exceeds the server's page size), `$format=json`.
  Without `$format=json` or `Accept: application/json` the answer is Atom XML, as SAP's is.
* PascalCase fields, `/Date(ms+0000)/` timestamps (change timestamps in whole seconds),
  decimals as strings, empty strings for empty character fields; no deletion flags (deleted
  sandbox records simply stop being listed).
* OAuth2: an authorization page at `/sap/bc/sec/oauth2/authorize` (a form where the user
  signs in and allows or denies; `auto_approve=1` skips it for tests), the token endpoint at
  `/sap/bc/sec/oauth2/token` (authorization codes single-use and valid 10 minutes, PKCE S256,
  exact redirect_uri, client authentication with HTTP Basic, rotating refresh tokens whose
  reuse revokes the grant), expiring access tokens (lifetime set by `POST /_sandbox/oauth`).
* The gateway: an HTML page with 401 for a missing, expired or revoked token; writes need the
  CSRF round trip (`x-csrf-token: Fetch` on a GET hands out a token bound to a session
  cookie; a POST/PATCH/MERGE without both answers 403 "CSRF token validation failed"); 429
  with `Retry-After`; OData errors `{"error": {"code", "message": {"lang", "value"}}}`.

Each OAuth grant is a sandbox credential: the shared `/_sandbox/credentials/*` control routes
revoke, restore and set faults on it (by its key, or by any of its access or refresh tokens),
and `POST /_sandbox/credentials` creates a grant for a client and returns its tokens. OAuth
state (clients other than the demo client, codes, tokens) lives in memory only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import html
import operator
import re
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import unquote_plus, urlencode, urlsplit

from pydantic import Field
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from maintlink.sandbox import app as sandbox_app
from maintlink.sandbox.bodies import Body, CredentialBody, parse_body
from maintlink.sandbox.data import ID_BASE, Record, format_ts, parse_ts
from maintlink.sandbox.state import Credential, Faults, SandboxError, SandboxState

ODATA_PREFIX = "/sap/opu/odata/sap"
OAUTH_PREFIX = "/sap/bc/sec/oauth2"
DEMO_CLIENT_ID = "sap-demo-client"
DEMO_CLIENT_SECRET = "sap-demo-secret"
DEMO_USER = "MAINT_PLANNER"
ACCESS_TOKEN_SECONDS = 3600
CODE_SECONDS = 600
MAX_PAGE_SIZE = 1000
SESSION_COOKIE = "SAP_SESSIONID_S4H_100"
CREDENTIAL_KEY = "sap.credential"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

# SAP keys of sandbox records: a number range per object type.
ORDER_BASE = 4_000_000
EQUIPMENT_BASE = 10_000_000
SUPPLIER_BASE = 17_300_000
PURCHASE_ORDER_BASE = 4_500_000_000
PERSON_BASE = 50_000_000
OPEN_END = "/Date(253402214400000)/"  # 9999-12-31: the current time segment

# The simulated customer's order types (the sandbox's categories).
ORDER_TYPES = {"PM01": "CORRECTIVE", "PM03": "PREVENTIVE", "PM05": "INSPECTION", "PM06": "SAFETY"}
ORDER_TYPE_FOR = {category: code for code, category in ORDER_TYPES.items()}
KNOWN_ORDER_TYPES = ("PM01", "PM02", "PM03", "PM04", "PM05", "PM06")
PRIORITY_CODE = {"NONE": "", "LOW": "4", "MEDIUM": "3", "HIGH": "2"}
PRIORITY_FROM_CODE = {"": "NONE", "4": "LOW", "3": "MEDIUM", "2": "HIGH", "1": "HIGH"}
UNITS = {"each": "EA", "box": "BOX", "liter": "L"}
# Purchasing processing status for the sandbox's purchase order statuses.
PO_STATUS = {
    "PENDING": "01",
    "REQUESTED": "03",
    "APPROVED": "05",
    "DECLINED": "08",
    "PARTIALLY_FULFILLED": "05",
    "COMPLETED": "05",
    "CANCELED": "05",
}
ABC = {"HIGH": "A", "MEDIUM": "B", "LOW": "C"}

# Which unified entity a service serves: a credential limited to some entities gets 403.
SERVICE_ENTITY = {
    "API_MAINTENANCEORDER": "work_orders",
    "API_EQUIPMENT": "assets",
    "API_FUNCTIONALLOCATION_SRV": "locations",
    "API_PRODUCT_SRV": "parts",
    "API_MATERIAL_STOCK_SRV": "parts",
    "API_PURCHASEORDER_PROCESS_SRV": "purchase_orders",
    "API_BUSINESS_PARTNER": "vendors",
}


class ODataError(Exception):
    """A refusal in SAP Gateway's shape."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def response(self, headers: Mapping[str, str] | None = None) -> JSONResponse:
        body = {
            "error": {
                "code": self.code,
                "message": {"lang": "en", "value": self.message},
                "innererror": {"transactionid": secrets.token_hex(16).upper()},
            }
        }
        return JSONResponse(body, self.status, headers=dict(headers or {}))


def _business(message: str) -> ODataError:
    return ODataError(400, "/IWBEP/CX_MGW_BUSI_EXCEPTION", message)


def _technical(message: str, status: int = 400) -> ODataError:
    return ODataError(status, "/IWBEP/CX_MGW_TECH_EXCEPTION", message)


class OAuthError(Exception):
    """A refusal of the token endpoint (RFC 6749 5.2)."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description

    def response(self) -> JSONResponse:
        headers = dict(NO_STORE)
        if self.status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="SAP NetWeaver Application Server"'
        body = {"error": self.error, "error_description": self.description}
        return JSONResponse(body, self.status, headers=headers)


# -- keys and values ------------------------------------------------------------------------------


def _key(entity: str, base: int, record_id: str) -> str:
    return str(base + int(record_id) - ID_BASE[entity])


def _record_id(entity: str, base: int, key: str) -> str | None:
    if not key.isdigit() or int(key) <= base:
        return None
    return str(ID_BASE[entity] + int(key) - base)


def _dto(ts: str | None) -> str | None:
    """An Edm.DateTimeOffset in whole seconds, as SAP keeps change timestamps."""
    if not ts:
        return None
    return f"/Date({int(parse_ts(ts).timestamp()) * 1000}+0000)/"


def _date(ts: str | None) -> str | None:
    """An Edm.DateTime holding a date (midnight UTC)."""
    if not ts:
        return None
    day = parse_ts(ts)
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return f"/Date({int(midnight.timestamp()) * 1000})/"


def _amount(value: Any, places: int = 2) -> str:
    return f"{Decimal(str(value or 0)):.{places}f}"


_DATE_VALUE = re.compile(r"^/Date\((-?\d+)(?:[+-]\d{1,4})?\)/$")


def _when(value: Any) -> datetime | None:
    """A written Edm.DateTimeOffset (`/Date(ms+0000)/` or ISO 8601); ValueError if neither."""
    if value is None:
        return None
    match = _DATE_VALUE.match(str(value).strip())
    if match:
        return datetime.fromtimestamp(int(match.group(1)) / 1000, UTC)
    return parse_ts(str(value))


def _typed(value: Any) -> Any:
    """A property value as something comparable: dates as datetimes."""
    if isinstance(value, str):
        match = _DATE_VALUE.match(value)
        if match:
            return datetime.fromtimestamp(int(match.group(1)) / 1000, UTC)
    return value


# -- the sandbox's records as SAP objects ----------------------------------------------------------


class View:
    """One consistent look at the state: keys, plants and functional location labels."""

    def __init__(self, state: SandboxState) -> None:
        self.records = state.data.records
        locations = self.records["locations"]
        sites = sorted(rid for rid, r in locations.items() if r["type"] == "SITE")
        self.plants = {rid: str(1010 + 10 * index) for index, rid in enumerate(sites)}
        self.default_plant = "1010"
        self.labels: dict[str, str] = {}
        for rid in locations:
            self._label(rid, set())
        self.by_label = {label: rid for rid, label in self.labels.items()}

    def _label(self, rid: str, seen: set[str]) -> str | None:
        """`<plant>-SITE001-BLD004`: a functional location label; None for storerooms."""
        if rid in self.labels:
            return self.labels[rid]
        record = self.records["locations"].get(rid)
        if record is None or record["type"] == "STOREROOM" or rid in seen:
            return None
        seen.add(rid)
        code = str(record["code"]).replace("-", "")
        parent = record.get("parentId")
        prefix = self._label(parent, seen) if parent else None
        label = f"{prefix}-{code}" if prefix else f"{self.plant(rid)}-{code}"
        self.labels[rid] = label
        return label

    def plant(self, location_id: str | None) -> str:
        seen: set[str] = set()
        while location_id and location_id not in seen:
            seen.add(location_id)
            if location_id in self.plants:
                return self.plants[location_id]
            record = self.records["locations"].get(location_id)
            location_id = record.get("parentId") if record else None
        return self.default_plant

    def live(self, entity: str) -> Iterator[Record]:
        for record in self.records[entity].values():
            if not record.get("deleted"):
                yield record

    def get(self, entity: str, record_id: str | None) -> Record | None:
        record = self.records[entity].get(record_id or "")
        return None if record is None or record.get("deleted") else record

    def storage_location(self, location_id: str | None) -> str:
        return f"S{int(location_id) - ID_BASE['locations']:03d}" if location_id else ""

    def work_center(self, plant: str) -> str:
        return f"MECH{plant}"

    def person(self, user_id: str | None) -> str:
        return _key("users", PERSON_BASE, user_id) if user_id else ""


def sap_keys(state: SandboxState, entity: str) -> dict[str, str]:
    """Sandbox record id -> the key the simulator shows it under, for live records (locations:
    functional locations only; `users`: personnel numbers). For tests and tools."""
    bases = {
        "work_orders": ORDER_BASE,
        "assets": EQUIPMENT_BASE,
        "purchase_orders": PURCHASE_ORDER_BASE,
        "vendors": SUPPLIER_BASE,
        "users": PERSON_BASE,
    }
    with state._lock:
        view = View(state)
        records = list(view.live(entity))
        if entity == "locations":
            return {r["id"]: view.labels[r["id"]] for r in records if r["id"] in view.labels}
        if entity == "parts":
            return {r["id"]: str(r["partNumber"]) for r in records}
        return {r["id"]: _key(entity, bases[entity], r["id"]) for r in records}


def _order_status_text(record: Record) -> str:
    sap = record.get("_sap") or {}
    status = record["status"]
    if status == "OPEN":
        return "CRTD MANC NMAT"
    if status == "IN_PROGRESS":
        return "REL  PCNF MANC NMAT"
    if status == "ON_HOLD":
        before = "CRTD" if sap.get("locked_from") == "OPEN" else "REL "
        return f"{before} LKD  MANC NMAT"
    if status == "DONE":
        return "TECO PCNF NMAT PRC  SETC"
    before = "REL " if sap.get("deleted_from") in ("IN_PROGRESS", "DONE") else "CRTD"
    return f"{before} DLFL NMAT"


def _order_type(record: Record) -> str:
    sap = record.get("_sap") or {}
    if sap.get("order_type"):
        return str(sap["order_type"])
    categories = record.get("categories") or []
    return ORDER_TYPE_FOR.get(categories[0] if categories else "", "PM01")


def _order(record: Record, view: View) -> dict[str, Any]:
    sap = record.get("_sap") or {}
    asset = view.records["assets"].get(record.get("assetId") or "")
    location_id = record.get("locationId") or (asset or {}).get("locationId")
    plant = view.plant(asset["locationId"] if asset else location_id)
    if not asset and not location_id and sap.get("planning_plant"):
        plant = str(sap["planning_plant"])
    priority = PRIORITY_CODE.get(record["priority"], "")
    if record["priority"] == "HIGH" and sap.get("critical"):
        priority = "1"
    assignees = record.get("assigneeIds") or []
    downtime = (record.get("customFields") or {}).get("Downtime (h)")
    key = _key("work_orders", ORDER_BASE, record["id"])
    description = record.get("description")
    return {
        "MaintenanceOrder": key,
        "MaintenanceOrderType": _order_type(record),
        "MaintenanceOrderDesc": str(record["title"])[:40],
        "MaintOrdBasicStartDateTime": _dto(record["createdAt"]),
        "MaintOrdBasicEndDateTime": _dto(record.get("dueDate")),
        "MainWorkCompletedDateTime": _dto(record.get("completedAt")),
        "MaintOrderReferenceDateTime": (
            _dto(record.get("completedAt")) if record["status"] == "DONE" else None
        ),
        "MaintenanceNotification": "",
        "MainWorkCenter": view.work_center(plant),
        "MainWorkCenterPlant": plant,
        "MaintenancePlanningPlant": plant,
        "MaintenancePlant": plant,
        "MaintenanceActivityType": "",
        "Equipment": _key("assets", EQUIPMENT_BASE, asset["id"]) if asset else "",
        "EquipmentName": str(asset["name"])[:40] if asset else "",
        "FunctionalLocation": view.labels.get(location_id or "", ""),
        "MaintPriority": priority,
        "MaintPriorityType": "PM",
        "MaintOrdPersonResponsible": view.person(assignees[0] if assignees else None),
        "LastChangeByUser": "CB9980000010",
        "LastChangeDateTime": _dto(record["updatedAt"]),
        "CreatedByUser": "CB9980000010",
        "MaintOrderCreationDateTime": _dto(record["createdAt"]),
        "OrderHasLongText": bool(description),
        "SystemStatusText": _order_status_text(record),
        "UserStatusText": "",
        "YY1_DowntimeHours_ORD": "" if downtime is None else _amount(downtime, 1),
        "to_MaintenanceOrderLongText": {
            "results": [
                {
                    "MaintenanceOrder": key,
                    "TextObjectType": "KOPF",
                    "Language": "EN",
                    "MaintenanceOrderLongText": description,
                }
            ]
            if description
            else []
        },
    }


def _equipment(record: Record, view: View) -> dict[str, Any]:
    kind = str(record["name"]).rsplit(" ", 1)[0]
    location_id = record.get("locationId")
    plant = view.plant(location_id)
    label = view.labels.get(location_id or "", "")
    parent = view.records["assets"].get(record.get("parentId") or "")
    status = record.get("status")
    return {
        "Equipment": _key("assets", EQUIPMENT_BASE, record["id"]),
        "ValidityEndDate": OPEN_END,
        "ValidityStartDate": _date(record["createdAt"]),
        "EquipmentName": str(record["name"])[:40],
        "EquipmentCategory": "M",
        "TechnicalObjectType": kind.split()[-1].upper()[:10],
        "AssetManufacturerName": record.get("manufacturer") or "",
        "ManufacturerPartTypeName": record.get("model") or "",
        "ManufacturerSerialNumber": record.get("serialNumber") or "",
        "SerialNumber": "",
        "InventoryNumber": record.get("barcode") or "",
        "TechnicalObjectSortCode": str(record["name"]).rsplit(" ", 1)[-1],
        "MaintenancePlant": plant,
        "MaintenancePlanningPlant": plant,
        "FunctionalLocation": label,
        "FunctionalLocationLabelName": label,
        "SuperordinateEquipment": _key("assets", EQUIPMENT_BASE, parent["id"]) if parent else "",
        "ABCIndicator": ABC.get(str(record.get("criticality")), ""),
        "CostCenter": str((record.get("customFields") or {}).get("Cost center") or ""),
        "CreationDate": _date(record["createdAt"]),
        "LastChangeDateTime": _dto(record["updatedAt"]),
        "EquipmentIsMarkedForDeletion": status == "DECOMMISSIONED",
        "EquipmentIsInactive": status == "OFFLINE",
        "EquipmentIsAvailable": status == "ONLINE",
        "EquipmentIsInstalled": bool(label),
    }


def _street(address: str | None) -> dict[str, str]:
    """`12 Mill Road, Leipzig` as SAP's address fields."""
    street, _, city = (address or "").partition(", ")
    number, _, name = street.partition(" ")
    if not number.isdigit():
        number, name = "", street
    return {"HouseNumber": number, "StreetName": name, "CityName": city}


def _functional_location(record: Record, view: View) -> dict[str, Any]:
    parent = view.labels.get(record.get("parentId") or "", "")
    plant = view.plant(record["id"])
    return {
        "FunctionalLocation": view.labels[record["id"]],
        "FunctionalLocationLabelName": view.labels[record["id"]],
        "FunctionalLocationName": str(record["name"])[:40],
        "FunctionalLocationCategory": "M",
        "SuperiorFunctionalLocation": parent,
        "SuperiorFuncnlLocLabelName": parent,
        "TechnicalObjectType": str(record["type"])[:10],
        "MaintenancePlant": plant,
        "MaintenancePlanningPlant": plant,
        **_street(record.get("address")),
        "PostalCode": "",
        "Region": "",
        "Country": "US" if record.get("address") else "",
        "CreationDate": _date(record["createdAt"]),
        "LastChangeDateTime": _dto(record["updatedAt"]),
        "FuncnlLocIsMarkedForDeletion": False,
        "FunctionalLocationIsActive": True,
    }


def _product(record: Record, view: View) -> dict[str, Any]:
    key = str(record["partNumber"])
    plant = view.plant(record.get("locationId"))
    unit = UNITS.get(str(record.get("unit")), "EA")
    cost = _amount(record.get("unitCost"))
    moving = int(record["id"]) % 2 == 1  # some products at moving average price
    return {
        "Product": key,
        # Oils and greases are operating supplies; the rest spare parts.
        "ProductType": "HIBE" if unit == "L" or "grease" in str(record["name"]).lower() else "ERSA",
        "ProductGroup": "MRO",
        "BaseUnit": unit,
        "CreationDate": _date(record["createdAt"]),
        "LastChangeDateTime": _dto(record["updatedAt"]),
        "IsMarkedForDeletion": False,
        "to_Description": {
            "results": [
                {"Product": key, "Language": "EN", "ProductDescription": str(record["name"])[:40]}
            ]
        },
        "to_Plant": {
            "results": [
                {
                    "Product": key,
                    "Plant": plant,
                    "ReorderThresholdQuantity": _amount(record.get("minimumQuantity"), 3),
                    "MRPType": "VB",
                }
            ]
        },
        "to_Valuation": {
            "results": [
                {
                    "Product": key,
                    "ValuationArea": plant,
                    "ValuationType": "",
                    "InventoryValuationProcedure": "V" if moving else "S",
                    "StandardPrice": "0.00" if moving else cost,
                    "MovingAveragePrice": cost if moving else "0.00",
                    "PriceUnitQty": "1",
                    "Currency": record.get("currency") or "USD",
                }
            ]
        },
    }


def _stock_rows(record: Record, view: View) -> list[dict[str, Any]]:
    """Unrestricted stock, plus quality-inspection stock for the sandbox's reserved quantity."""
    location_id = record.get("locationId")
    base = {
        "Material": str(record["partNumber"]),
        "Plant": view.plant(location_id),
        "StorageLocation": view.storage_location(location_id),
        "Batch": "",
        "Supplier": "",
        "Customer": "",
        "WBSElementInternalID": "00000000",
        "SDDocument": "",
        "SDDocumentItem": "000000",
        "InventorySpecialStockType": "",
        "MaterialBaseUnit": UNITS.get(str(record.get("unit")), "EA"),
    }
    rows = [
        {
            **base,
            "InventoryStockType": "01",
            "MatlWrhsStkQtyInMatlBaseUnit": _amount(record.get("availableQuantity"), 3),
        }
    ]
    if record.get("reservedQuantity"):
        rows.append(
            {
                **base,
                "InventoryStockType": "02",
                "MatlWrhsStkQtyInMatlBaseUnit": _amount(record["reservedQuantity"], 3),
            }
        )
    return rows


def _purchase_order(record: Record, view: View) -> dict[str, Any]:
    key = _key("purchase_orders", PURCHASE_ORDER_BASE, record["id"])
    currency = record.get("currency") or "USD"
    items = []
    for line, item in enumerate(record.get("items") or [], start=1):
        part = view.records["parts"].get(item.get("partId") or "")
        quantity, received = item.get("quantity") or 0, item.get("quantityReceived") or 0
        number = f"{10 * line:05d}"
        items.append(
            {
                "PurchaseOrder": key,
                "PurchaseOrderItem": number,
                "PurchaseOrderItemText": str(item.get("description") or "")[:40],
                "Material": str(part["partNumber"]) if part else "",
                "Plant": view.plant(part.get("locationId")) if part else view.default_plant,
                "StorageLocation": view.storage_location(part.get("locationId")) if part else "",
                "OrderQuantity": _amount(quantity, 3),
                "PurchaseOrderQuantityUnit": UNITS.get(str((part or {}).get("unit")), "EA"),
                "NetPriceAmount": _amount(item.get("unitCost")),
                "NetPriceQuantity": "1",
                "DocumentCurrency": currency,
                "IsCompletelyDelivered": bool(quantity) and received >= quantity,
                "PurchasingDocumentDeletionCode": "",
                "to_ScheduleLine": {
                    "results": [
                        {
                            "PurchasingDocument": key,
                            "PurchasingDocumentItem": number,
                            "ScheduleLine": "1",
                            "ScheduleLineDeliveryDate": _date(record.get("dueDate")),
                            "ScheduleLineOrderQuantity": _amount(quantity, 3),
                            "RoughGoodsReceiptQty": _amount(received, 3),
                        }
                    ]
                },
            }
        )
    vendor = record.get("vendorId")
    return {
        "PurchaseOrder": key,
        "CompanyCode": "1010",
        "PurchaseOrderType": "NB",
        "PurchasingDocumentDeletionCode": "L" if record["status"] == "CANCELED" else "",
        "PurchasingProcessingStatus": PO_STATUS.get(record["status"], "01"),
        "CreatedByUser": "CB9980000020",
        "CreationDate": _date(record["createdAt"]),
        "LastChangeDateTime": _dto(record["updatedAt"]),
        "Supplier": _key("vendors", SUPPLIER_BASE, vendor) if vendor else "",
        "PurchasingOrganization": "1010",
        "PurchasingGroup": "001",
        "DocumentCurrency": currency,
        "PurchaseOrderDate": _date(record.get("orderedAt") or record["createdAt"]),
        "ReleaseIsNotCompleted": record["status"] == "REQUESTED",
        "to_PurchaseOrderItem": {"results": items},
    }


def _supplier(record: Record, view: View) -> dict[str, Any]:
    return {
        "Supplier": _key("vendors", SUPPLIER_BASE, record["id"]),
        "SupplierName": str(record["name"])[:80],
        "SupplierFullName": str(record["name"]),
        "SupplierAccountGroup": "SUPL",
        "CreationDate": _date(record["createdAt"]),
        "PostingIsBlocked": False,
        "PurchasingIsBlocked": False,
        "DeletionIndicator": False,
    }


def _address(record: Record, view: View) -> dict[str, Any]:
    partner = _key("vendors", SUPPLIER_BASE, record["id"])
    address_id = f"{int(record['id']) - ID_BASE['vendors']:010d}"
    phone = str(record.get("phone") or "")
    return {
        "BusinessPartner": partner,
        "AddressID": address_id,
        "ValidityStartDate": _date(record["createdAt"]),
        "ValidityEndDate": OPEN_END,
        **_street(record.get("address")),
        "PostalCode": "",
        "Region": "",
        "Country": "US",
        "to_EmailAddress": {
            "results": [
                {
                    "AddressID": address_id,
                    "Person": "",
                    "OrdinalNumber": "1",
                    "IsDefaultEmailAddress": True,
                    "EmailAddress": record.get("email") or "",
                }
            ]
        },
        "to_PhoneNumber": {
            "results": [
                {
                    "AddressID": address_id,
                    "Person": "",
                    "OrdinalNumber": "1",
                    "DestinationLocationCountry": "US",
                    "IsDefaultPhoneNumber": True,
                    "PhoneNumber": phone.removeprefix("+1-"),
                    "InternationalPhoneNumber": phone.replace("-", " "),
                }
            ]
        },
    }


@dataclass(frozen=True)
class EntitySet:
    type_name: str
    keys: tuple[str, ...]
    rows: Callable[[View], list[dict[str, Any]]]


def _rows(
    entity: str,
    present: Callable[[Record, View], dict[str, Any]],
    keep: Callable[[Record, View], bool] = lambda record, view: True,
) -> Callable[[View], list[dict[str, Any]]]:
    def rows(view: View) -> list[dict[str, Any]]:
        return [present(r, view) for r in view.live(entity) if keep(r, view)]

    return rows


def _stock(view: View) -> list[dict[str, Any]]:
    return [row for record in view.live("parts") for row in _stock_rows(record, view)]


STOCK_KEYS = (
    "Material", "Plant", "StorageLocation", "Batch", "Supplier", "Customer",
    "WBSElementInternalID", "SDDocument", "SDDocumentItem", "InventorySpecialStockType",
    "InventoryStockType",
)  # fmt: skip
SERVICES: dict[str, dict[str, EntitySet]] = {
    "API_MAINTENANCEORDER": {
        "MaintenanceOrder": EntitySet(
            "MaintenanceOrderType", ("MaintenanceOrder",), _rows("work_orders", _order)
        ),
    },
    "API_EQUIPMENT": {
        "Equipment": EntitySet(
            "EquipmentType", ("Equipment", "ValidityEndDate"), _rows("assets", _equipment)
        ),
    },
    "API_FUNCTIONALLOCATION_SRV": {
        "A_FunctionalLocation": EntitySet(
            "A_FunctionalLocationType",
            ("FunctionalLocation",),
            _rows("locations", _functional_location, lambda r, v: r["id"] in v.labels),
        ),
    },
    "API_PRODUCT_SRV": {
        "A_Product": EntitySet("A_ProductType", ("Product",), _rows("parts", _product)),
    },
    "API_MATERIAL_STOCK_SRV": {
        "A_MatlStkInAcctMod": EntitySet(
            "A_MatlStkInAcctModType",
            STOCK_KEYS,
            _stock,
        ),
    },
    "API_PURCHASEORDER_PROCESS_SRV": {
        "A_PurchaseOrder": EntitySet(
            "A_PurchaseOrderType", ("PurchaseOrder",), _rows("purchase_orders", _purchase_order)
        ),
    },
    "API_BUSINESS_PARTNER": {
        "A_Supplier": EntitySet("A_SupplierType", ("Supplier",), _rows("vendors", _supplier)),
        "A_BusinessPartnerAddress": EntitySet(
            "A_BusinessPartnerAddressType",
            ("BusinessPartner", "AddressID"),
            _rows("vendors", _address),
        ),
    },
}
ORDER_FUNCTIONS = (
    "ReleaseMaintenanceOrder",
    "SetMaintOrderStatusToLocked",
    "SetMaintOrderStatusToUnlocked",
    "SetMaintOrdToTechCompleted",
    "ResetMaintOrdStsTechCompleted",
    "SetMaintOrdStsToMrkdForDeltn",
    "ResetMaintOrdStsMrkdForDeltn",
)


# -- $filter and $orderby -------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<typed>(?:datetimeoffset|datetime|guid|time)'[^']*')
      | (?P<string>'(?:[^']|'')*')
      | (?P<number>-?\d+(?:\.\d+)?)[mMdDfFlL]?(?![A-Za-z0-9_])
      | (?P<paren>[()])
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.X,
)
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}


def parse_literal(text: str) -> Any:
    """An OData V2 URI literal: 'text', datetime'...', datetimeoffset'...', numbers, bools."""
    text = text.strip()
    typed = re.fullmatch(r"(datetimeoffset|datetime|guid|time)'([^']*)'", text)
    if typed:
        kind, value = typed.groups()
        if kind in ("datetime", "datetimeoffset"):
            try:
                return parse_ts(value)
            except ValueError:
                raise _technical(f"Invalid {kind} literal '{value}'") from None
        return value
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    if text in ("true", "false"):
        return text == "true"
    if text == "null":
        return None
    try:
        return Decimal(text.rstrip("mMdDfFlL"))
    except InvalidOperation:
        raise _technical(f"Invalid literal {text!r}") from None


class Filter:
    """A parsed `$filter` (a subset of OData V2: comparisons, and, or, not, parentheses)."""

    def __init__(self, text: str, properties: set[str] | None) -> None:
        self.tokens = self._tokenize(text)
        self.position = 0
        self.properties = properties
        self.tree = self._or()
        if self.position != len(self.tokens):
            raise _technical(f"Invalid filter: unexpected '{self.tokens[self.position][1]}'")

    @staticmethod
    def _tokenize(text: str) -> list[tuple[str, str]]:
        tokens, position = [], 0
        while position < len(text):
            if text[position:].strip() == "":
                break
            match = _TOKEN.match(text, position)
            if match is None or match.end() == position:
                raise _technical(f"Invalid filter expression at '{text[position : position + 20]}'")
            kind = next(k for k, v in match.groupdict().items() if v is not None)
            tokens.append((kind, match.group(kind)))
            position = match.end()
        return tokens

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def _take(self) -> tuple[str, str]:
        token = self._peek()
        if token is None:
            raise _technical("Invalid filter: unexpected end")
        self.position += 1
        return token

    def _or(self) -> tuple[Any, ...]:
        node = self._and()
        while self._peek() == ("name", "or"):
            self.position += 1
            node = ("or", node, self._and())
        return node

    def _and(self) -> tuple[Any, ...]:
        node = self._unary()
        while self._peek() == ("name", "and"):
            self.position += 1
            node = ("and", node, self._unary())
        return node

    def _unary(self) -> tuple[Any, ...]:
        if self._peek() == ("name", "not"):
            self.position += 1
            return ("not", self._unary())
        if self._peek() == ("paren", "("):
            self.position += 1
            node = self._or()
            if self._take() != ("paren", ")"):
                raise _technical("Invalid filter: ')' expected")
            return node
        left = self._operand()
        kind, op = self._take()
        if kind != "name" or op not in _COMPARE:
            raise _technical(f"Invalid filter: operator expected, got '{op}'")
        return ("cmp", op, left, self._operand())

    def _operand(self) -> tuple[str, Any]:
        kind, text = self._take()
        if kind == "name" and text not in ("true", "false", "null"):
            if self.properties is not None and text not in self.properties:
                raise _technical(f"Property '{text}' not found")
            return ("prop", text)
        if kind == "paren":
            raise _technical("Invalid filter: operand expected")
        return ("lit", parse_literal(text))

    def matches(self, row: Mapping[str, Any]) -> bool:
        return bool(self._eval(self.tree, row))

    def _eval(self, node: tuple[Any, ...], row: Mapping[str, Any]) -> bool:
        kind = node[0]
        if kind == "or":
            return self._eval(node[1], row) or self._eval(node[2], row)
        if kind == "and":
            return self._eval(node[1], row) and self._eval(node[2], row)
        if kind == "not":
            return not self._eval(node[1], row)
        _, op, left, right = node
        a, b = self._value(left, row), self._value(right, row)
        if op in ("eq", "ne"):
            equal = _coerce(a, b)
            return equal[0] == equal[1] if op == "eq" else equal[0] != equal[1]
        if a is None or b is None:
            return False
        a, b = _coerce(a, b)
        try:
            return _COMPARE[op](a, b)
        except TypeError:
            raise _technical(f"Incompatible types in filter ({type(a).__name__})") from None

    @staticmethod
    def _value(node: tuple[str, Any], row: Mapping[str, Any]) -> Any:
        return _typed(row.get(node[1])) if node[0] == "prop" else node[1]


def _coerce(a: Any, b: Any) -> tuple[Any, Any]:
    """Decimal literals compare with decimal strings."""
    if isinstance(b, Decimal) and isinstance(a, str):
        with contextlib.suppress(InvalidOperation):
            return Decimal(a), b
    if isinstance(a, Decimal) and isinstance(b, str):
        with contextlib.suppress(InvalidOperation):
            return a, Decimal(b)
    return a, b


def _order_by(text: str, properties: set[str] | None) -> list[tuple[str, bool]]:
    keys = []
    for part in (p.strip() for p in text.split(",")):
        name, _, direction = part.partition(" ")
        direction = direction.strip().lower() or "asc"
        if not name or direction not in ("asc", "desc"):
            raise _technical(f"Invalid $orderby '{part}'")
        if properties is not None and name not in properties:
            raise _technical(f"Property '{name}' not found")
        keys.append((name, direction == "desc"))
    return keys


def _sort(rows: list[dict[str, Any]], keys: list[tuple[str, bool]]) -> list[dict[str, Any]]:
    for name, descending in reversed(keys):  # stable sorts, least significant key first
        rows = sorted(
            rows,
            key=lambda r, n=name: (_typed(r.get(n)) is not None, _typed(r.get(n)) or ""),
            reverse=descending,
        )
    return rows


# -- OData answers ---------------------------------------------------------------------------------


def _key_predicate(spec: EntitySet, row: Mapping[str, Any]) -> str:
    def literal(value: Any) -> str:
        if isinstance(value, str) and _DATE_VALUE.match(value):
            moment = _typed(value)
            return f"datetime'{moment.strftime('%Y-%m-%dT%H:%M:%S')}'"
        return "'" + str(value).replace("'", "''") + "'"

    if len(spec.keys) == 1:
        return f"({literal(row[spec.keys[0]])})"
    return "(" + ",".join(f"{k}={literal(row[k])}" for k in spec.keys) + ")"


def _etag(row: Mapping[str, Any]) -> str | None:
    changed = _typed(row.get("LastChangeDateTime"))
    if not isinstance(changed, datetime):
        return None
    return f"W/\"datetimeoffset'{changed.strftime('%Y-%m-%dT%H%%3A%M%%3A%SZ')}'\""


def _shape(
    row: dict[str, Any],
    *,
    uri: str,
    type_name: str,
    expand: set[str],
    select: set[str] | None,
) -> dict[str, Any]:
    """Navigation properties expanded only when asked; the rest deferred. `$select` applied."""
    shaped: dict[str, Any] = {"__metadata": {"id": uri, "uri": uri, "type": type_name}}
    etag = _etag(row)
    if etag:
        shaped["__metadata"]["etag"] = etag
    for name, value in row.items():
        if name.startswith("to_"):
            if name in {path.split("/")[0] for path in expand}:
                inner = {p.split("/", 1)[1] for p in expand if p.startswith(f"{name}/")}
                shaped[name] = {
                    "results": [
                        _expand_child(child, inner, f"{uri}/{name}")
                        for child in value.get("results", [])
                    ]
                }
            elif select is None or name in select:
                shaped[name] = {"__deferred": {"uri": f"{uri}/{name}"}}
        elif select is None or name in select:
            shaped[name] = value
    return shaped


def _expand_child(child: dict[str, Any], expand: set[str], uri: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in child.items():
        if name.startswith("to_"):
            if name in expand:
                out[name] = {"results": list(value.get("results", []))}
            else:
                out[name] = {"__deferred": {"uri": f"{uri}/{name}"}}
        else:
            out[name] = value
    return out


def _wants_json(request: Request) -> bool:
    fmt = request.query_params.get("$format", "").lower()
    if fmt:
        return fmt == "json"
    return "json" in request.headers.get("accept", "").lower()


def _atom(request: Request, title: str) -> Response:
    """SAP's default format when JSON was not asked for (the simulator sends an empty feed)."""
    body = (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<feed xml:base="{html.escape(str(request.base_url))}" '
        'xmlns="http://www.w3.org/2005/Atom" '
        'xmlns:m="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata">'
        f"<title>{html.escape(title)}</title></feed>"
    )
    return Response(body, 200, media_type="application/atom+xml")


def _int_option(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not raw.isdigit():
        raise _technical(f"Invalid value '{raw}' for system query option {name}")
    return int(raw)


def _expand_paths(request: Request) -> set[str]:
    raw = request.query_params.get("$expand", "")
    return {p.strip() for p in raw.split(",") if p.strip()}


# -- the simulated system: OAuth server, gateway sessions, settings -------------------------------


@dataclass
class OAuthClient:
    client_id: str
    client_secret: str
    name: str = "OAuth client"
    redirect_uris: list[str] | None = None  # None: any http(s) redirect URI

    def public(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    challenge: str | None
    grant: str
    scope: str
    expires_at: float
    used: bool = False


@dataclass
class _Token:
    grant: str
    client_id: str
    scope: str
    expires_at: float | None


class SapSystem:
    """What the simulated SAP system knows beyond the sandbox state."""

    def __init__(self, state: SandboxState, clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.clock = clock
        self.clients = {
            DEMO_CLIENT_ID: OAuthClient(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, "Demo client")
        }
        self.codes: dict[str, _Code] = {}
        self.access: dict[str, _Token] = {}
        self.refresh: dict[str, _Token] = {}
        self.retired: dict[str, str] = {}  # rotated-out refresh token -> grant
        self.sessions: dict[str, tuple[str, str]] = {}  # session id -> (grant, CSRF token)
        self.access_token_seconds: float = ACCESS_TOKEN_SECONDS
        self.refresh_token_seconds: float | None = None  # None: until revoked
        self.max_page_size = MAX_PAGE_SIZE
        self.token_requests = 0
        self._lock = threading.RLock()

    # -- grants and tokens -------------------------------------------------------------------

    def new_grant(self, client_id: str, user: str) -> Credential:
        return self.state.create_credential(name=f"OAuth grant: {client_id} for {user}")

    def issue(self, grant: str, client_id: str, scope: str = "") -> dict[str, Any]:
        with self._lock:
            now = self.clock()
            access, refresh = f"at_{secrets.token_urlsafe(24)}", f"rt_{secrets.token_urlsafe(32)}"
            self.access[access] = _Token(grant, client_id, scope, now + self.access_token_seconds)
            refresh_until = now + self.refresh_token_seconds if self.refresh_token_seconds else None
            self.refresh[refresh] = _Token(grant, client_id, scope, refresh_until)
            body: dict[str, Any] = {
                "access_token": access,
                "token_type": "Bearer",
                "expires_in": int(self.access_token_seconds),
                "refresh_token": refresh,
            }
            if scope:
                body["scope"] = scope
            return body

    def _grant_usable(self, grant: str) -> bool:
        credential = self.state.credentials.get(grant)
        return credential is not None and not credential.revoked

    def authenticate(self, token: str) -> Credential | None:
        with self._lock:
            found = self.access.get(token)
            if found is None or (found.expires_at is not None and found.expires_at <= self.clock()):
                return None
            credential = self.state.credentials.get(found.grant)
            return None if credential is None or credential.revoked else credential

    def grant_key(self, value: str) -> str:
        """A credential's key from the key itself or any of its tokens."""
        with self._lock:
            if value in self.state.credentials:
                return value
            for table in (self.access, self.refresh):
                if value in table:
                    return table[value].grant
            return self.retired.get(value, value)

    def revoke(self, grant: str) -> None:
        if grant in self.state.credentials:
            self.state.set_revoked(grant, True)

    def redeem_code(self, client: OAuthClient, data: Mapping[str, str]) -> dict[str, Any]:
        with self._lock:
            code = self.codes.get(data.get("code", ""))
            if code is None:
                raise OAuthError(400, "invalid_grant", "Unknown authorization code")
            if code.used:
                # RFC 6749 4.1.2: a code used twice revokes what it granted.
                self.revoke(code.grant)
                raise OAuthError(400, "invalid_grant", "Authorization code already used")
            code.used = True
            if code.expires_at <= self.clock():
                raise OAuthError(400, "invalid_grant", "Authorization code expired")
            if code.client_id != client.client_id:
                raise OAuthError(400, "invalid_grant", "Code was issued to another client")
            if data.get("redirect_uri") != code.redirect_uri:
                raise OAuthError(400, "invalid_grant", "redirect_uri does not match")
            if code.challenge is not None:
                verifier = data.get("code_verifier", "")
                digest = hashlib.sha256(verifier.encode()).digest()
                computed = base64.urlsafe_b64encode(digest).decode().rstrip("=")
                if not verifier or not secrets.compare_digest(computed, code.challenge):
                    raise OAuthError(400, "invalid_grant", "PKCE verification failed")
            if not self._grant_usable(code.grant):
                raise OAuthError(400, "invalid_grant", "The authorization was revoked")
            return self.issue(code.grant, client.client_id, code.scope)

    def rotate(self, client: OAuthClient, data: Mapping[str, str]) -> dict[str, Any]:
        with self._lock:
            value = data.get("refresh_token", "")
            if value in self.retired:
                # A rotated-out refresh token came back: someone holds a copy. Revoke all.
                self.revoke(self.retired[value])
                raise OAuthError(400, "invalid_grant", "Refresh token already used")
            token = self.refresh.get(value)
            if token is None:
                raise OAuthError(400, "invalid_grant", "Unknown refresh token")
            if token.client_id != client.client_id:
                raise OAuthError(400, "invalid_grant", "Refresh token of another client")
            if token.expires_at is not None and token.expires_at <= self.clock():
                raise OAuthError(400, "invalid_grant", "Refresh token expired")
            if not self._grant_usable(token.grant):
                raise OAuthError(400, "invalid_grant", "The authorization was revoked")
            del self.refresh[value]
            self.retired[value] = token.grant
            return self.issue(token.grant, client.client_id, token.scope)

    def client(self, authorization: str | None, data: Mapping[str, str]) -> OAuthClient:
        """The authenticated client: HTTP Basic, or client_id/client_secret in the body."""
        client_id, secret = data.get("client_id"), data.get("client_secret")
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() == "basic":
            try:
                raw = base64.b64decode(value.strip(), validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                raise OAuthError(401, "invalid_client", "Malformed Basic credentials") from None
            user, _, password = raw.partition(":")
            client_id, secret = unquote_plus(user), unquote_plus(password)
        known = self.clients.get(client_id or "")
        if known is None or not secrets.compare_digest(known.client_secret, secret or ""):
            raise OAuthError(401, "invalid_client", "Client authentication failed")
        return known

    def expire_access_tokens(self) -> int:
        with self._lock:
            now = self.clock()
            for token in self.access.values():
                token.expires_at = now - 1
            return len(self.access)

    # -- gateway sessions (CSRF) -------------------------------------------------------------

    def session(self, session_id: str | None, grant: str) -> tuple[str, str, bool]:
        """(session id, CSRF token, new?) for a fetch: the cookie's session if it is this
        grant's, else a new one."""
        with self._lock:
            if session_id and self.sessions.get(session_id, ("", ""))[0] == grant:
                return session_id, self.sessions[session_id][1], False
            session_id = secrets.token_hex(16)
            token = secrets.token_urlsafe(18)
            self.sessions[session_id] = (grant, token)
            return session_id, token, True

    def csrf_ok(self, session_id: str | None, grant: str, token: str | None) -> bool:
        session = self.sessions.get(session_id or "")
        return bool(
            session and token and session[0] == grant and secrets.compare_digest(session[1], token)
        )


# -- the gate: faults, bearer token, rate limit, CSRF ----------------------------------------------


def route_path(scope: Scope) -> str:
    """The path below where the app is mounted (e.g. `/sap/...` under `/sap_s4hana`)."""
    path: str = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :] or "/"
    return path


def _logon_page(message: str) -> HTMLResponse:
    """What SAP's gateway answers for a missing, expired or revoked token: a logon page."""
    body = (
        "<html><head><title>Logon Error Message</title></head><body>"
        "<h1>401 Unauthorized</h1><p>Logon failed</p>"
        f"<p>{html.escape(message)}</p><hr><p>Server: SAP NetWeaver Application Server</p>"
        "</body></html>"
    )
    headers = {
        "WWW-Authenticate": 'Bearer realm="SAP NetWeaver Application Server [S4H/100]", '
        'error="invalid_token"'
    }
    return HTMLResponse(body, 401, headers=headers)


def _cookie(scope: Scope, name: str) -> str | None:
    for header, value in scope.get("headers", []):
        if header == b"cookie":
            for part in value.decode("latin-1").split(";"):
                key, _, val = part.strip().partition("=")
                if key == name:
                    return val
    return None


def _header(scope: Scope, name: bytes) -> str | None:
    for header, value in scope.get("headers", []):
        if header == name:
            return str(value.decode("latin-1"))
    return None


async def _faults(faults: Faults, scope: Scope, receive: Receive, send: Send) -> bool:
    """Offline and latency switches; True when the request was answered (or dropped)."""
    if faults.offline:
        if faults.offline_mode == "refuse":
            await sandbox_app.drop_connection(receive, send)
        else:
            page = "<html><body><h1>503 Service Unavailable</h1></body></html>"
            await HTMLResponse(page, 503)(scope, receive, send)
        return True
    if faults.latency_ms > 0:
        await asyncio.sleep(faults.latency_ms / 1000)
    return False


class Gate:
    """ASGI middleware in the order SAP's gateway checks: faults, token, rate limit, CSRF."""

    def __init__(self, app: ASGIApp, state: SandboxState, system: SapSystem) -> None:
        self.app = app
        self.state = state
        self.system = system

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = route_path(scope)
        if scope["type"] != "http" or not path.startswith(("/sap/", "/sap?")):
            await self.app(scope, receive, send)
            return
        if await _faults(self.state.faults, scope, receive, send):
            return
        if not path.startswith(f"{ODATA_PREFIX}/"):
            await self.app(scope, receive, send)  # the OAuth endpoints: no token needed
            return
        scheme, _, token = (_header(scope, b"authorization") or "").partition(" ")
        credential = self.system.authenticate(token.strip()) if scheme.lower() == "bearer" else None
        if credential is None:
            reason = "No bearer token" if not token else "The access token is invalid or expired"
            await _logon_page(reason)(scope, receive, send)
            return
        if await _faults(credential.faults, scope, receive, send):
            return
        decision = self.state.check_rate_limit(credential)
        if not decision.allowed:
            refusal = ODataError(429, "TOO_MANY_REQUESTS", "Rate limit exceeded; retry later")
            retry = {"Retry-After": str(decision.reset_seconds)}
            await refusal.response(retry)(scope, receive, send)
            return
        extra: list[tuple[bytes, bytes]] = []
        session_id = _cookie(scope, SESSION_COOKIE)
        csrf = _header(scope, b"x-csrf-token")
        if scope["method"] in ("GET", "HEAD"):
            if (csrf or "").lower() == "fetch":
                session_id, csrf_token, new = self.system.session(session_id, credential.api_key)
                extra.append((b"x-csrf-token", csrf_token.encode()))
                if new:
                    cookie = (
                        f"{SESSION_COOKIE}={session_id}; Path={scope.get('root_path', '')}/sap; "
                        "HttpOnly; SameSite=None"
                    )
                    extra.append((b"set-cookie", cookie.encode()))
        elif not self.system.csrf_ok(session_id, credential.api_key, csrf):
            response = PlainTextResponse(
                "CSRF token validation failed", 403, headers={"x-csrf-token": "Required"}
            )
            await response(scope, receive, send)
            return
        scope[CREDENTIAL_KEY] = credential

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and extra:
                message = dict(message)
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


# -- OData routes ----------------------------------------------------------------------------------

_RESOURCE = re.compile(
    r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:\((?P<key>[^)]*)\))?(?:/(?P<nav>[A-Za-z_][A-Za-z0-9_]*))?$"
)


def _state(request: Request) -> SandboxState:
    state: SandboxState = request.app.state.sandbox
    return state


def _system(request: Request) -> SapSystem:
    system: SapSystem = request.app.state.sap
    return system


def _service_entity(request: Request, service: str, *, write: bool) -> None:
    """403 when the grant's communication arrangement lacks the service (or is read-only)."""
    credential: Credential = request.scope[CREDENTIAL_KEY]
    entity = SERVICE_ENTITY[service]
    if credential.entities is not None and entity not in credential.entities:
        raise ODataError(
            403, "/IWFND/CM_CONSUMER/101", f"No authorization to access service {service}"
        )
    if write and credential.read_only:
        raise ODataError(403, "/IWFND/CM_CONSUMER/101", f"No authorization to change {service}")


async def odata(request: Request) -> Response:
    service = request.path_params["service"]
    if service not in SERVICES:
        raise ODataError(
            404, "/IWFND/MED/170",
            f"No service found for namespace '/SAP/', name '{service}', version '0001'",
        )  # fmt: skip
    method = request.method
    if method == "POST" and request.headers.get("x-http-method", "").upper() in ("MERGE", "PATCH"):
        method = "MERGE"
    write = method not in ("GET", "HEAD")
    _service_entity(request, service, write=write)
    resource = request.path_params["resource"]
    if resource == "":
        if write:
            raise _technical("Method not allowed on the service document", 405)
        if not _wants_json(request):
            return _atom(request, service)
        return JSONResponse({"d": {"EntitySets": list(SERVICES[service])}})
    if resource == "$metadata":
        body = f'<edmx:Edmx Version="1.0"><!-- {service}: metadata not simulated --></edmx:Edmx>'
        return Response(body, 200, media_type="application/xml")
    if service == "API_MAINTENANCEORDER" and resource in ORDER_FUNCTIONS:
        if method != "POST":
            raise _technical(f"Function import {resource} must be called with POST", 405)
        return await _order_function(request, resource)
    match = _RESOURCE.match(resource)
    spec = SERVICES[service].get(match.group("name")) if match else None
    if match is None or spec is None:
        raise ODataError(404, "RESOURCE_NOT_FOUND", f"Resource not found for segment '{resource}'")
    name, key, nav = match.group("name"), match.group("key"), match.group("nav")
    base = f"{str(request.base_url).rstrip('/')}{ODATA_PREFIX}/{service}"
    if key is None:
        if nav is not None:
            raise ODataError(404, "RESOURCE_NOT_FOUND", f"Resource not found for '{resource}'")
        if method == "POST" and name == "MaintenanceOrder":
            return await _create_order(request, base, spec)
        if write:
            raise _technical(f"Method {method} not allowed on {name}", 405)
        return _collection(request, base, name, spec)
    if method in ("PATCH", "MERGE", "PUT") and name == "MaintenanceOrder" and nav is None:
        return await _update_order(request, base, spec, key)
    if write:
        raise _technical(f"Method {method} not allowed on {name}", 405)
    return _entity(request, base, name, spec, key, nav)


def _collection(request: Request, base: str, name: str, spec: EntitySet) -> Response:
    if not _wants_json(request):
        return _atom(request, name)
    system = _system(request)
    with _state(request)._lock:
        rows = spec.rows(View(_state(request)))
    properties = set(rows[0]) if rows else None
    raw_filter = request.query_params.get("$filter")
    if raw_filter:
        condition = Filter(raw_filter, properties)
        rows = [row for row in rows if condition.matches(row)]
    raw_order = request.query_params.get("$orderby")
    order = _order_by(raw_order, properties) if raw_order else [(k, False) for k in spec.keys]
    rows = _sort(rows, order)
    count = len(rows)
    skip, top = _int_option(request, "$skip") or 0, _int_option(request, "$top")
    window = rows[skip : None if top is None else skip + top]
    token = _int_option(request, "$skiptoken") or 0
    page = window[token : token + system.max_page_size]
    expand = _expand_paths(request)
    raw_select = request.query_params.get("$select")
    select = {s.strip() for s in raw_select.split(",")} if raw_select else None
    results = [
        _shape(row, uri=f"{base}/{name}{_key_predicate(spec, row)}",
               type_name=f"{request.path_params['service']}.{spec.type_name}",
               expand=expand, select=select)
        for row in page
    ]  # fmt: skip
    body: dict[str, Any] = {"results": results}
    if request.query_params.get("$inlinecount") == "allpages":
        body["__count"] = str(count)
    if token + len(page) < len(window):
        body["__next"] = str(request.url.include_query_params(**{"$skiptoken": token + len(page)}))
    return JSONResponse({"d": body})


def _parse_key(spec: EntitySet, text: str) -> dict[str, Any]:
    parts = re.findall(r"(?:[A-Za-z_][A-Za-z0-9_]*=)?(?:[a-z]*'(?:[^']|'')*'|[^,]+)", text)
    values: dict[str, Any] = {}
    for index, part in enumerate(parts):
        name, sep, literal = part.partition("=")
        if not sep or "'" in name:
            if index >= len(spec.keys):
                raise _technical("Invalid key predicate")
            name, literal = spec.keys[index], part
        values[name] = parse_literal(literal)
    return values


def _find(request: Request, spec: EntitySet, key: str) -> dict[str, Any]:
    wanted = _parse_key(spec, key)
    with _state(request)._lock:
        rows = spec.rows(View(_state(request)))
    for row in rows:
        if all((_typed(row.get(k)) == v) or (str(row.get(k)) == str(v)) for k, v in wanted.items()):
            return row
    raise ODataError(
        404, "/IWBEP/CM_MGW_RT/020", f"Resource not found for the segment '{spec.type_name[:-4]}'"
    )


def _entity(
    request: Request, base: str, name: str, spec: EntitySet, key: str, nav: str | None
) -> Response:
    row = _find(request, spec, key)
    uri = f"{base}/{name}{_key_predicate(spec, row)}"
    type_name = f"{request.path_params['service']}.{spec.type_name}"
    if nav is not None:
        value = row.get(nav)
        if not isinstance(value, Mapping) or not nav.startswith("to_"):
            raise ODataError(404, "RESOURCE_NOT_FOUND", f"Resource not found for '{nav}'")
        return JSONResponse({"d": {"results": list(value.get("results", []))}})
    shaped = _shape(row, uri=uri, type_name=type_name, expand=_expand_paths(request), select=None)
    etag = shaped["__metadata"].get("etag")
    return JSONResponse({"d": shaped}, headers={"ETag": etag} if etag else None)


# -- maintenance order writes ----------------------------------------------------------------------

_CREATABLE = {
    "MaintenanceOrderType", "MaintenanceOrderDesc", "MaintPriority", "Equipment",
    "FunctionalLocation", "MaintenancePlanningPlant", "MaintenancePlant", "MainWorkCenter",
    "MaintOrdPersonResponsible", "MaintOrdBasicStartDateTime", "MaintOrdBasicEndDateTime",
}  # fmt: skip
_UPDATABLE = {
    "MaintenanceOrderDesc", "MaintPriority", "Equipment", "FunctionalLocation",
    "MainWorkCenter", "MaintOrdPersonResponsible", "MaintOrdBasicStartDateTime",
    "MaintOrdBasicEndDateTime",
}  # fmt: skip


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise _technical("The request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _technical("The request body must be a JSON object")
    body.pop("__metadata", None)
    return body


def _text_field(body: Mapping[str, Any], name: str, limit: int) -> str:
    value = body.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _technical(f"Property '{name}' must be a string")
    if len(value) > limit:
        raise _business(f"{name}: the value is longer than {limit} characters")
    return value


def _order_fields(
    body: Mapping[str, Any], view: View, sent: set[str], record: Record | None
) -> dict[str, Any]:
    """Written MaintenanceOrder properties as sandbox work order fields (and `_sap`)."""
    fields: dict[str, Any] = {}
    sap = dict((record or {}).get("_sap") or {})
    if "MaintenanceOrderDesc" in sent:
        title = _text_field(body, "MaintenanceOrderDesc", 40)
        if not title.strip():
            raise _business("Enter a description for the order")
        fields["title"] = title
    if "MaintPriority" in sent:
        code = _text_field(body, "MaintPriority", 1)
        if code not in PRIORITY_FROM_CODE:
            raise _business(f"Priority {code} is not defined for priority type PM")
        fields["priority"] = PRIORITY_FROM_CODE[code]
        sap["critical"] = code == "1"
    if "Equipment" in sent:
        key = _text_field(body, "Equipment", 18)
        asset_id = _record_id("assets", EQUIPMENT_BASE, key) if key else None
        if key and view.get("assets", asset_id) is None:
            raise _business(f"Equipment {key} does not exist")
        fields["assetId"] = asset_id
        if asset_id and "FunctionalLocation" not in sent:
            fields["locationId"] = view.records["assets"][asset_id].get("locationId")
    if "FunctionalLocation" in sent:
        label = _text_field(body, "FunctionalLocation", 30)
        location_id = view.by_label.get(label) if label else None
        if label and view.get("locations", location_id) is None:
            raise _business(f"Functional location {label} does not exist")
        fields["locationId"] = location_id
    if "MaintOrdPersonResponsible" in sent:
        person = _text_field(body, "MaintOrdPersonResponsible", 12)
        user_id = _record_id("users", PERSON_BASE, person) if person else None
        if person and view.get("users", user_id) is None:
            raise _business(f"Person responsible {person} does not exist")
        fields["assigneeIds"] = [user_id] if user_id else []
    if "MaintOrdBasicEndDateTime" in sent:
        try:
            due = _when(body.get("MaintOrdBasicEndDateTime"))
        except ValueError:
            raise _technical("Invalid value for MaintOrdBasicEndDateTime") from None
        fields["dueDate"] = format_ts(due) if due else None
    for name in ("MaintOrdBasicStartDateTime",):
        if name in sent:
            try:
                _when(body.get(name))
            except ValueError:
                raise _technical(f"Invalid value for {name}") from None
    fields["_sap"] = sap
    return fields


async def _create_order(request: Request, base: str, spec: EntitySet) -> Response:
    body = await _json_body(request)
    unknown = sorted(set(body) - _CREATABLE)
    if unknown:
        raise _technical(f"Property '{unknown[0]}' is invalid or not creatable")
    state = _state(request)
    with state._lock:
        view = View(state)
        order_type = _text_field(body, "MaintenanceOrderType", 4)
        if order_type not in KNOWN_ORDER_TYPES:
            raise _business(f"Order type '{order_type}' is not defined")
        fields = _order_fields(body, view, set(body), None)
        if "title" not in fields:
            raise _business("Enter a description for the order")
        plant = _text_field(body, "MaintenancePlanningPlant", 4)
        if not (fields.get("assetId") or fields.get("locationId")):
            if not plant:
                raise _business("Enter a maintenance planning plant or a technical object")
            if plant not in {*view.plants.values(), view.default_plant}:
                raise _business(f"Planning plant {plant} is not defined")
        sap = {**fields.pop("_sap"), "order_type": order_type}
        if plant and not (fields.get("assetId") or fields.get("locationId")):
            sap["planning_plant"] = plant
        fields["categories"] = [ORDER_TYPES.get(order_type, order_type)]
        fields = {k: v for k, v in fields.items() if v is not None}
        created = state.create_work_order(fields)
        state.data.records["work_orders"][created["id"]]["_sap"] = sap
        row = _order(state.data.records["work_orders"][created["id"]], View(state))
    uri = f"{base}/MaintenanceOrder{_key_predicate(spec, row)}"
    shaped = _shape(row, uri=uri, type_name=f"API_MAINTENANCEORDER.{spec.type_name}",
                    expand=set(), select=None)  # fmt: skip
    return JSONResponse({"d": shaped}, 201, headers={"Location": uri})


def _order_record(state: SandboxState, key: str) -> Record:
    record_id = _record_id("work_orders", ORDER_BASE, key)
    record = state.data.records["work_orders"].get(record_id or "")
    if record is None or record.get("deleted"):
        raise ODataError(404, "RESOURCE_NOT_FOUND", f"Maintenance order {key} does not exist")
    return record


async def _update_order(request: Request, base: str, spec: EntitySet, key_text: str) -> Response:
    body = await _json_body(request)
    key = str(_parse_key(spec, key_text).get("MaintenanceOrder", ""))
    refused = sorted(set(body) - _UPDATABLE)
    if refused:
        raise _technical(f"Property '{refused[0]}' is invalid or not updatable")
    state = _state(request)
    with state._lock:
        record = _order_record(state, key)
        view = View(state)
        current = _order(record, view)
        wanted = request.headers.get("if-match")
        if wanted and wanted != "*" and wanted != _etag(current):
            raise ODataError(412, "PRECONDITION_FAILED", f"Order {key} was changed meanwhile")
        if record["status"] in ("ON_HOLD", "CANCELED"):
            status = "LKD" if record["status"] == "ON_HOLD" else "DLFL"
            raise _business(f"Order {key} has status {status}; it cannot be changed")
        fields = _order_fields(body, view, set(body), record)
        state.update_work_order(record["id"], fields)
    return Response(status_code=204)


def _move(
    state: SandboxState, record: Record, key: str, function: str, params: Mapping[str, str]
) -> None:
    """The status changes SAP allows, on the sandbox's statuses (+ where a lock came from)."""
    status = record["status"]
    sap = dict(record.get("_sap") or {})
    code = _order_status_text(record).split()[0]
    refuse = _business(f"Order {key}: function not possible in status {code}")
    if function == "ReleaseMaintenanceOrder":
        if status != "OPEN":
            raise refuse
        new = "IN_PROGRESS"
    elif function == "SetMaintOrderStatusToLocked":
        if status not in ("OPEN", "IN_PROGRESS"):
            raise refuse
        new, sap["locked_from"] = "ON_HOLD", status
    elif function == "SetMaintOrderStatusToUnlocked":
        if status != "ON_HOLD":
            raise refuse
        new = str(sap.pop("locked_from", "IN_PROGRESS"))
    elif function == "SetMaintOrdToTechCompleted":
        if status not in ("OPEN", "IN_PROGRESS"):
            raise refuse
        if "MaintOrderReferenceDateTime" in params:
            parse_literal(params["MaintOrderReferenceDateTime"])
        new = "DONE"
    elif function == "ResetMaintOrdStsTechCompleted":
        if status != "DONE":
            raise refuse
        new = "IN_PROGRESS"
    elif function == "SetMaintOrdStsToMrkdForDeltn":
        if status not in ("OPEN", "IN_PROGRESS", "DONE"):
            raise refuse
        new, sap["deleted_from"] = "CANCELED", status
    else:  # ResetMaintOrdStsMrkdForDeltn
        if status != "CANCELED":
            raise refuse
        new = str(sap.pop("deleted_from", "OPEN"))
    state.update_work_order(record["id"], {"status": new, "_sap": sap})


async def _order_function(request: Request, function: str) -> Response:
    params = dict(request.query_params)
    raw = params.get("MaintenanceOrder")
    if not raw:
        raise _technical(f"Parameter MaintenanceOrder is missing for {function}")
    key = str(parse_literal(raw))
    state = _state(request)
    with state._lock:
        _move(state, _order_record(state, key), key, function, params)
    result = {
        "__metadata": {"type": "API_MAINTENANCEORDER.DummyFunctionImportResult"},
        "IsInvalid": False,
    }
    return JSONResponse({"d": {function: result}})


# -- OAuth routes ----------------------------------------------------------------------------------


def _page(title: str, content: str, status: int = 200) -> HTMLResponse:
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head><body><main>"
        f"<h1>{html.escape(title)}</h1>{content}</main></body></html>"
    )
    return HTMLResponse(body, status, headers={"Cache-Control": "no-store"})


def _redirect_allowed(client: OAuthClient, redirect_uri: str) -> bool:
    parts = urlsplit(redirect_uri)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
        return False
    return client.redirect_uris is None or redirect_uri in client.redirect_uris


def _back(redirect_uri: str, params: Mapping[str, str], status: int) -> RedirectResponse:
    separator = "&" if urlsplit(redirect_uri).query else "?"
    return RedirectResponse(f"{redirect_uri}{separator}{urlencode(params)}", status)


async def authorize(request: Request) -> Response:
    """The authorization page: GET shows the sign-in form, POST decides."""
    system = _system(request)
    if request.method == "POST":
        form = await request.form()
        values = {k: v for k, v in form.items() if isinstance(v, str)}
    else:
        values = dict(request.query_params)
    client = system.clients.get(values.get("client_id", ""))
    redirect_uri = values.get("redirect_uri", "")
    if client is None:
        return _page("Sign-in failed", "<p>Unknown OAuth client.</p>", 400)
    if not _redirect_allowed(client, redirect_uri):
        return _page("Sign-in failed", "<p>The redirect URI is not allowed.</p>", 400)
    state = values.get("state")
    with_state = {"state": state} if state is not None else {}
    status = 303 if request.method == "POST" else 302
    if values.get("response_type") != "code":
        params = {"error": "unsupported_response_type", **with_state}
        return _back(redirect_uri, params, status)
    method = values.get("code_challenge_method") or ("S256" if values.get("code_challenge") else "")
    if method not in ("", "S256") or (method and not values.get("code_challenge")):
        params = {"error": "invalid_request", "error_description": "PKCE needs S256", **with_state}
        return _back(redirect_uri, params, status)
    auto = request.method == "GET" and values.get("auto_approve") in ("1", "true")
    if request.method == "GET" and not auto:
        return _consent(values, client)
    if values.get("decision") == "deny":
        return _back(redirect_uri, {"error": "access_denied", **with_state}, status)
    user = (values.get("user") or (DEMO_USER if auto else "")).strip()
    if not user:
        return _consent(values, client, error="Enter your user name.")
    grant = system.new_grant(client.client_id, user)
    code = secrets.token_urlsafe(24)
    system.codes[code] = _Code(
        client_id=client.client_id,
        redirect_uri=redirect_uri,
        challenge=values.get("code_challenge") or None,
        grant=grant.api_key,
        scope=values.get("scope", ""),
        expires_at=system.clock() + CODE_SECONDS,
    )
    return _back(redirect_uri, {"code": code, **with_state}, status)


def _consent(values: Mapping[str, str], client: OAuthClient, error: str | None = None) -> Response:
    hidden = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in values.items()
        if k in ("response_type", "client_id", "redirect_uri", "state", "scope",
                 "code_challenge", "code_challenge_method")
    )  # fmt: skip
    alert = f'<p role="alert">{html.escape(error)}</p>' if error else ""
    content = (
        f"<p><strong>{html.escape(client.name)}</strong> ({html.escape(client.client_id)}) "
        "asks to read and change maintenance data in SAP S/4HANA Cloud on your behalf.</p>"
        f'{alert}<form method="post">{hidden}'
        f'<p><label>User <input name="user" value="{DEMO_USER}" autocomplete="username">'
        "</label></p>"
        '<p><label>Password <input name="password" type="password" value="demo" '
        'autocomplete="current-password"></label></p>'
        '<p><button type="submit" name="decision" value="allow">Allow</button> '
        '<button type="submit" name="decision" value="deny">Deny</button></p></form>'
        "<p><small>Simulator: any user name and password sign in.</small></p>"
    )
    return _page("Sign in to SAP S/4HANA Cloud", content, 400 if error else 200)


async def token(request: Request) -> Response:
    system = _system(request)
    form = await request.form()
    data = {k: v for k, v in form.items() if isinstance(v, str)}
    system.token_requests += 1
    client = system.client(request.headers.get("authorization"), data)
    grant_type = data.get("grant_type")
    if grant_type == "authorization_code":
        body = system.redeem_code(client, data)
    elif grant_type == "refresh_token":
        body = system.rotate(client, data)
    else:
        raise OAuthError(
            400, "unsupported_grant_type", f"Grant type {grant_type!r} is not supported"
        )
    return JSONResponse(body, headers=NO_STORE)


# -- control routes --------------------------------------------------------------------------------


class GrantBody(CredentialBody):
    client_id: str | None = Field(None, max_length=128)


class OAuthClientBody(Body):
    client_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.\-]{3,128}$")
    client_secret: str | None = Field(None, min_length=8, max_length=256)
    name: str | None = Field(None, max_length=200)
    redirect_uris: list[str] | None = None


class OAuthSettingsBody(Body):
    access_token_seconds: int | None = Field(None, ge=1, le=30 * 86_400)
    refresh_token_seconds: int | None = Field(None, ge=1, le=3650 * 86_400)
    expire_access_tokens: bool = False


class ODataSettingsBody(Body):
    max_page_size: int | None = Field(None, ge=1, le=100_000)
    expire_csrf_tokens: bool = False


async def create_grant(request: Request) -> Response:
    """A sandbox credential that is an OAuth grant of a client, with its first tokens."""
    body, _ = parse_body(GrantBody, await request.body())
    system = _system(request)
    client_id = body.client_id or DEMO_CLIENT_ID
    if client_id not in system.clients:
        raise SandboxError(400, "invalid_request", f"Unknown OAuth client {client_id}")
    credential = _state(request).create_credential(
        body.api_key, name=body.name or f"OAuth grant: {client_id}",
        read_only=body.read_only, entities=body.entities,
    )  # fmt: skip
    tokens = system.issue(credential.api_key, client_id)
    return JSONResponse({**credential.public(), "client_id": client_id, **tokens}, 201)


def _by_grant(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
    """A shared credential control route that also accepts any token of the grant."""

    async def route(request: Request) -> Response:
        params = request.scope["path_params"]
        params["api_key"] = _system(request).grant_key(params["api_key"])
        response: Response = await handler(request)
        return response

    return route


async def oauth_clients(request: Request) -> Response:
    system = _system(request)
    if request.method == "GET":
        return JSONResponse({"data": [c.public() for c in system.clients.values()]})
    body, _ = parse_body(OAuthClientBody, await request.body())
    client_id = body.client_id or f"client-{secrets.token_hex(6)}"
    if client_id in system.clients:
        raise SandboxError(409, "already_exists", "This OAuth client already exists")
    for uri in body.redirect_uris or []:
        if urlsplit(uri).scheme not in ("http", "https"):
            raise SandboxError(400, "invalid_request", f"Not an http(s) redirect URI: {uri}")
    client = OAuthClient(
        client_id,
        body.client_secret or secrets.token_urlsafe(24),
        body.name or "OAuth client",
        body.redirect_uris,
    )
    system.clients[client_id] = client
    return JSONResponse(client.public(), 201)


def _oauth_settings(system: SapSystem) -> dict[str, Any]:
    return {
        "access_token_seconds": system.access_token_seconds,
        "refresh_token_seconds": system.refresh_token_seconds,
        "token_requests": system.token_requests,
        "active_access_tokens": len(system.access),
    }


async def oauth_settings(request: Request) -> Response:
    system = _system(request)
    if request.method == "POST":
        body, sent = parse_body(OAuthSettingsBody, await request.body())
        if body.access_token_seconds is not None:
            system.access_token_seconds = body.access_token_seconds
        if "refresh_token_seconds" in sent:
            system.refresh_token_seconds = body.refresh_token_seconds
        if body.expire_access_tokens:
            system.expire_access_tokens()
    return JSONResponse(_oauth_settings(system))


async def odata_settings(request: Request) -> Response:
    system = _system(request)
    if request.method == "POST":
        body, _ = parse_body(ODataSettingsBody, await request.body())
        if body.max_page_size is not None:
            system.max_page_size = body.max_page_size
        if body.expire_csrf_tokens:
            system.sessions.clear()
    return JSONResponse({"max_page_size": system.max_page_size, "sessions": len(system.sessions)})


async def index(request: Request) -> Response:
    state = _state(request)
    return JSONResponse(
        {
            "name": "maintlink SAP S/4HANA Cloud simulator",
            "odata": ODATA_PREFIX,
            "oauth": {"authorize": f"{OAUTH_PREFIX}/authorize", "token": f"{OAUTH_PREFIX}/token"},
            "demo_client": {"client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET},
            "services": {name: list(sets) for name, sets in SERVICES.items()},
            "control": "/_sandbox",
            "seed": state.seed,
            "size": state.size,
        }
    )


# -- errors and the app ----------------------------------------------------------------------------


def _is_control(request: Request) -> bool:
    return route_path(request.scope).startswith("/_sandbox")


async def _odata_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ODataError)
    return exc.response()


async def _oauth_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OAuthError)
    return exc.response()


async def _sandbox_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SandboxError)
    if _is_control(request):
        return sandbox_app.error_response(exc.status, exc.code, exc.message)
    return ODataError(exc.status, exc.code, exc.message).response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if _is_control(request):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return sandbox_app.error_response(exc.status_code, code, str(exc.detail))
    if route_path(request.scope).startswith(OAUTH_PREFIX):
        return OAuthError(exc.status_code, "invalid_request", str(exc.detail)).response()
    return ODataError(exc.status_code, "/IWFND/CM_BEC/026", str(exc.detail)).response()


async def _internal_error(request: Request, exc: Exception) -> Response:
    return ODataError(500, "/IWFND/CM_BEC/026", "Internal server error").response()


def create_sap_s4hana_app(state: SandboxState) -> Starlette:
    """The SAP S/4HANA Cloud simulator as an ASGI app; mount it (e.g. at `/sap_s4hana`).

    Its lifespan runs the sandbox's simulated changes when served on its own; mounted apps
    get no lifespan, so the host app's simulator is the only one running then.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(sandbox_app.simulate_changes(state))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    control = sandbox_app
    methods = ["GET", "POST", "PATCH", "MERGE", "PUT", "DELETE"]
    routes = [
        Route("/", index),
        Route(f"{OAUTH_PREFIX}/authorize", authorize, methods=["GET", "POST"]),
        Route(f"{OAUTH_PREFIX}/token", token, methods=["POST"]),
        Route(f"{ODATA_PREFIX}/{{service}}/{{resource:path}}", odata, methods=methods),
        Route("/_sandbox/credentials", create_grant, methods=["POST"]),
        Route("/_sandbox/credentials", control.list_credentials, methods=["GET"]),
        Route(
            "/_sandbox/credentials/{api_key}/revoke",
            _by_grant(control.revoke_credential),
            methods=["POST"],
        ),
        Route(
            "/_sandbox/credentials/{api_key}/restore",
            _by_grant(control.restore_credential),
            methods=["POST"],
        ),
        Route(
            "/_sandbox/credentials/{api_key}/faults",
            _by_grant(control.credential_faults),
            methods=["GET", "POST"],
        ),
        Route("/_sandbox/faults", control.global_faults, methods=["GET", "POST"]),
        Route("/_sandbox/stats", control.stats),
        Route("/_sandbox/reset", control.reset, methods=["POST"]),
        Route("/_sandbox/changes", control.changes, methods=["POST"]),
        Route("/_sandbox/oauth-clients", oauth_clients, methods=["GET", "POST"]),
        Route("/_sandbox/oauth", oauth_settings, methods=["GET", "POST"]),
        Route("/_sandbox/odata", odata_settings, methods=["GET", "POST"]),
    ]
    system = SapSystem(state)
    app = Starlette(
        routes=routes,
        middleware=[Middleware(Gate, state=state, system=system)],
        exception_handlers={
            ODataError: _odata_error,
            OAuthError: _oauth_error,
            SandboxError: _sandbox_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
        lifespan=lifespan,
    )
    app.state.sandbox = state
    app.state.sap = system
    return app


__all__ = [
    "DEMO_CLIENT_ID",
    "DEMO_CLIENT_SECRET",
    "ODataError",
    "SapSystem",
    "create_sap_s4hana_app",
    "sap_keys",
]
