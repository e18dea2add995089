"""Connector for MaintainX's public REST API (`https://api.getmaintainx.com/v1`).

API key in `Authorization: Bearer` (multi-organization keys also send `x-organization-id`),
cursor pages `{"workOrders": [...], "nextCursor"}` with `limit` up to 200, integer ids,
amounts in cents, optional fields behind `expand=`. The API has no updated-since filter and no
deletion flag: listings are sorted `-updatedAt` (newest first) and stop at the first record
older than `modified_since`, so an incremental sync with no changes costs one request, and
deletions are found by the sync engine's full reconciliation (`reports_deletions = False`).

A newest-first listing can miss a record that changes while the listing runs (it moves to the
front, behind the cursor). So a listing of more than one page ends with a catch-up pass from
the top down to the newest record the pass started from; usually one more request. If the
server ever answers out of order (it ignored `sort`), the listing stops relying on the order:
it reads to the end and filters by `updatedAt` itself.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, ClassVar

import httpx

from maintlink.connectors.base import (
    TIMEOUT_SETTING,
    AccountInfo,
    Connector,
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
    json_body,
    parse_base_url,
)
from maintlink.connectors.values import parse_datetime, parse_decimal

SYSTEM = "MaintainX"
DEFAULT_BASE_URL = "https://api.getmaintainx.com"
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 200
MAX_CATCH_UP_PASSES = 3
CURSOR_VERSION = 1

# entity -> (URL segment, list envelope, single-record envelope, expand= values we need)
RESOURCES: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "work_orders": ("workorders", "workOrders", "workOrder", ("assignees", "categories",
                                                              "extra_fields")),
    "assets": ("assets", "assets", "asset", ("barcode", "vendor_ids", "extra_fields", "status",
                                             "manufacturer", "model")),
    "locations": ("locations", "locations", "location", ("barcode", "extra_fields")),
    "parts": ("parts", "parts", "part", ("vendors", "extra_fields")),
    "purchase_orders": ("purchaseorders", "purchaseOrders", "purchaseOrder", ()),
    "vendors": ("vendors", "vendors", "vendor", ("extra_fields",)),
    "users": ("users", "users", "user", ("role", "extra_fields")),
}  # fmt: skip

WORK_ORDER_STATUS = {
    "OPEN": "OPEN",
    "IN_PROGRESS": "IN_PROGRESS",
    "ON_HOLD": "ON_HOLD",
    "DONE": "COMPLETED",
    "CANCELED": "CANCELLED",
    "SKIPPED": "CANCELLED",
}
WORK_ORDER_STATUS_OUT = {
    "OPEN": "OPEN",
    "IN_PROGRESS": "IN_PROGRESS",
    "ON_HOLD": "ON_HOLD",
    "COMPLETED": "DONE",
    "CANCELLED": "CANCELED",
}
PRIORITY = {"NONE": "NONE", "LOW": "LOW", "MEDIUM": "MEDIUM", "HIGH": "HIGH"}
PRIORITY_OUT = {**PRIORITY, "CRITICAL": "HIGH"}  # MaintainX's highest priority is HIGH
WORK_ORDER_TYPE = {"REACTIVE": "CORRECTIVE", "PREVENTIVE": "PREVENTIVE"}
# unified type -> (MaintainX type, categories to add); inspections are a category there.
WORK_ORDER_TYPE_OUT: dict[str, tuple[str, list[str]]] = {
    "CORRECTIVE": ("REACTIVE", []),
    "PREVENTIVE": ("PREVENTIVE", []),
    "INSPECTION": ("OTHER", ["Inspection"]),
    "OTHER": ("OTHER", []),
}
ASSET_STATUS = {"ONLINE": "ACTIVE", "OFFLINE": "INACTIVE"}
DECOMMISSIONED_LABELS = {"decommissioned", "retired", "disposed", "scrapped"}
# REQUESTED is a new purchase order, PENDING awaits approval (MaintainX's status table).
PURCHASE_ORDER_STATUS = {
    "REQUESTED": "DRAFT",
    "PENDING": "PENDING_APPROVAL",
    "APPROVED": "APPROVED",
    "DECLINED": "REJECTED",
    "PARTIALLY_FULFILLED": "PARTIALLY_RECEIVED",
    "COMPLETED": "RECEIVED",
    "CANCELED": "CANCELLED",
}
CENTS = Decimal(100)


# -- value helpers ---------------------------------------------------------------------------


def _iso(value: Any) -> str | None:
    """A unified datetime as MaintainX's wire format (UTC, milliseconds, `Z`)."""
    parsed = parse_datetime(value)
    if value is not None and parsed is None:
        raise ValueError(f"not a date/time: {value!r}")
    if parsed is None:
        return None
    return parsed.strftime("%Y-%m-%dT%H:%M:%S.") + f"{parsed.microsecond // 1000:03d}Z"


def _money(cents: Any, text: Any = None) -> Decimal | None:
    """MaintainX amounts: a decimal string when it sends one, else integer cents."""
    exact = parse_decimal(text)
    if exact is not None:
        return exact.normalize()
    amount = parse_decimal(cents)
    return None if amount is None else (amount / CENTS).normalize()


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _custom(raw: Mapping[str, Any]) -> dict[str, Any]:
    return dict(_mapping(raw.get("extraFields")))


def _int_id(value: Any, label: str) -> int:
    """MaintainX ids are integers; anything else cannot name a MaintainX record."""
    text = str(value).strip() if value is not None else ""
    if not text.isdigit():
        raise ValueError(f"{label} must be a MaintainX id (an integer), got {value!r}")
    return int(text)


# -- mapping ---------------------------------------------------------------------------------


def _common(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "remote_id": str(raw["id"]),
        "created_at": parse_datetime(raw.get("createdAt")),
        "updated_at": parse_datetime(raw.get("updatedAt")),
        "remote_deleted_at": parse_datetime(raw.get("deletedAt")),
    }


def _work_order_type(raw: Mapping[str, Any]) -> str | None:
    kind = raw.get("type")
    if kind in WORK_ORDER_TYPE:
        return WORK_ORDER_TYPE[kind]
    labels = [str(c).lower() for c in _list(raw.get("categories"))]
    if any("inspection" in label for label in labels):
        return "INSPECTION"
    return "OTHER" if kind or labels else None


def _assignees(raw: Mapping[str, Any], kind: str) -> list[str]:
    return [
        str(a["id"])
        for a in _list(raw.get("assignees"))
        if isinstance(a, Mapping) and a.get("type") == kind and a.get("id") is not None
    ]


def _map_work_order(raw: Mapping[str, Any]) -> dict[str, Any]:
    status, priority = raw.get("status"), raw.get("priority")
    asset_id = raw.get("assetId") or _mapping(raw.get("asset")).get("id")
    return {
        "remote_number": _str(raw.get("sequentialId")),
        "title": raw.get("title"),
        "description": raw.get("description"),
        "status": WORK_ORDER_STATUS.get(status, "UNKNOWN"),
        "remote_status": status,
        "priority": PRIORITY.get(priority),
        "remote_priority": priority,
        "type": _work_order_type(raw),
        "asset_ids": [str(asset_id)] if asset_id else [],
        "location_id": _str(raw.get("locationId")),
        "assignee_user_ids": _assignees(raw, "USER"),
        "team_ids": _assignees(raw, "TEAM"),
        "due_at": parse_datetime(raw.get("dueDate")),
        "started_at": parse_datetime(raw.get("startedAt")),
        "completed_at": parse_datetime(raw.get("completedAt")),
        "parent_work_order_id": _str(raw.get("parentId")),
        "custom_fields": _custom(raw),
    }


def _asset_status(value: Any) -> str:
    status = _mapping(value)
    label = _mapping(status.get("customStatus")).get("label")
    if isinstance(label, str) and label.strip().lower() in DECOMMISSIONED_LABELS:
        return "DECOMMISSIONED"
    base = status.get("status") if status else value
    return ASSET_STATUS.get(base, "UNKNOWN") if isinstance(base, str) else "UNKNOWN"


def _name(value: Any) -> str | None:
    """Manufacturer/model: a name, or an object with one (both shapes are documented)."""
    if isinstance(value, Mapping):
        return _str(value.get("name"))
    return _str(value)


def _map_asset(raw: Mapping[str, Any], criticalities: Mapping[str, str]) -> dict[str, Any]:
    criticality = raw.get("criticalityId")
    return {
        "remote_number": raw.get("barcode"),
        "name": raw.get("name"),
        "description": raw.get("description"),
        "serial_number": raw.get("serialNumber"),
        "model": _name(raw.get("model")),
        "manufacturer": _name(raw.get("manufacturer")),
        "barcode": raw.get("barcode"),
        "parent_asset_id": _str(raw.get("parentId")),
        "location_id": _str(raw.get("locationId")),
        "status": _asset_status(raw.get("status")),
        "criticality": (
            None if criticality is None else criticalities.get(str(criticality), str(criticality))
        ),
        "custom_fields": _custom(raw),
    }


def _map_location(raw: Mapping[str, Any]) -> dict[str, Any]:
    parent = raw.get("parentId")
    return {
        "remote_number": raw.get("barcode"),
        "name": raw.get("name"),
        "code": raw.get("barcode"),
        "address": raw.get("address"),
        "parent_location_id": _str(parent),
        # MaintainX locations have no type; top-level ones are the sites.
        "type": "SITE" if parent is None else "OTHER",
        "custom_fields": _custom(raw),
    }


def _map_part(raw: Mapping[str, Any]) -> dict[str, Any]:
    stock = [loc for loc in _list(raw.get("locations")) if isinstance(loc, Mapping)]
    on_hand = parse_decimal(raw.get("availableQuantity"))
    if on_hand is None and stock:
        amounts = [parse_decimal(loc.get("availableQuantity")) for loc in stock]
        on_hand = sum((a for a in amounts if a is not None), Decimal(0))
    vendors = [v for v in _list(raw.get("vendors")) if isinstance(v, Mapping)]
    vendor_ids = [str(v["vendorId"]) for v in vendors if v.get("vendorId") is not None]
    part_number = raw.get("partNumber") or next(
        (v.get("partNumber") for v in vendors if v.get("partNumber")), None
    )
    location = stock[0].get("locationId") if stock else raw.get("locationId")
    return {
        "remote_number": part_number,
        "name": raw.get("name"),
        "part_number": part_number,
        "uom": None,
        "unit_cost": _money(raw.get("unitCost"), raw.get("unitCostDecimal")),
        "currency": None,  # amounts are in the organization's currency
        "qty_on_hand": on_hand,
        "qty_min": parse_decimal(raw.get("minimumQuantity")),
        "qty_reserved": parse_decimal(raw.get("reservedQuantity")),
        "qty_on_order": parse_decimal(raw.get("orderedQuantity")),
        "stock_location_id": _str(location),
        "vendor_ids": vendor_ids or [str(v) for v in _list(raw.get("vendorIds"))],
        "custom_fields": _custom(raw),
    }


def _purchase_order_total(items: list[Mapping[str, Any]], costs: list[Any]) -> Decimal | None:
    """Items plus extra costs: amounts in cents, PERCENT_TAXABLE on the taxable subtotal."""
    subtotal = Decimal(0)
    for item in items:
        price = _money(item.get("price"), item.get("priceDecimal"))
        if price is None:
            quantity = parse_decimal(item.get("quantityOrdered"))
            unit = _money(item.get("unitCost"), item.get("unitCostDecimal"))
            if quantity is None or unit is None:
                return None
            price = quantity * unit
        subtotal += price
    taxable, untaxed, percent = subtotal, Decimal(0), Decimal(0)
    for cost in costs:
        if not isinstance(cost, Mapping):
            continue
        amount = parse_decimal(cost.get("amount")) or Decimal(0)
        if cost.get("type") == "AMOUNT_TAXABLE":
            taxable += amount / CENTS
        elif cost.get("type") == "AMOUNT_NON_TAXABLE":
            untaxed += amount / CENTS
        elif cost.get("type") == "PERCENT_TAXABLE":
            percent += amount
    return (taxable + taxable * percent / CENTS + untaxed).normalize()


def _map_purchase_order(raw: Mapping[str, Any]) -> dict[str, Any]:
    items = [i for i in _list(raw.get("items")) if isinstance(i, Mapping)]
    lines = [
        {
            "remote_id": _str(item.get("id")),
            "part_id": _str(item.get("partId")),
            "description": item.get("name"),
            "qty_ordered": parse_decimal(item.get("quantityOrdered")),
            "qty_received": parse_decimal(item.get("quantityReceived")),
            "unit_price": _money(item.get("unitCost"), item.get("unitCostDecimal")),
        }
        for item in items
    ]
    status = raw.get("status")
    number = raw.get("overrideNumber") or _str(raw.get("autoGeneratedNumber"))
    return {
        "remote_number": number,
        "number": number,
        "status": PURCHASE_ORDER_STATUS.get(status, "UNKNOWN"),
        "remote_status": status,
        "vendor_id": _str(raw.get("vendorId")),
        "currency": None,  # amounts are in the organization's currency
        "total_amount": _purchase_order_total(items, _list(raw.get("costs"))),
        "ordered_at": parse_datetime(raw.get("approvalDate")),
        "due_at": parse_datetime(raw.get("dueDate")),
        "lines": lines,
        "custom_fields": _custom(raw),
    }


def _map_vendor(raw: Mapping[str, Any]) -> dict[str, Any]:
    contacts = [
        {
            "name": c.get("name"),
            "email": c.get("email"),
            "phone": c.get("phoneNumber"),
            "role": c.get("role"),
        }
        for c in _list(raw.get("contacts"))
        if isinstance(c, Mapping)
    ]
    emails = [e for e in _list(raw.get("emails")) if e] + [c["email"] for c in contacts]
    phones = [p for p in _list(raw.get("phoneNumbers")) if p] + [c["phone"] for c in contacts]
    return {
        "remote_number": None,
        "name": raw.get("name"),
        "code": None,
        "email": next((e for e in emails if e), None),
        "phone": next((p for p in phones if p), None),
        "address": None,
        "contacts": contacts,
        "custom_fields": _custom(raw),
    }


def _map_user(raw: Mapping[str, Any]) -> dict[str, Any]:
    first, last = raw.get("firstName"), raw.get("lastName")
    return {
        "remote_number": None,
        "first_name": first,
        "last_name": last,
        "display_name": " ".join(p for p in (first, last) if p) or raw.get("email"),
        "email": raw.get("email"),
        "phone": raw.get("phoneNumber"),
        "role": raw.get("customRole") or raw.get("role"),
        "job_title": None,
        "is_active": True,  # MaintainX lists the organization's current members
        "custom_fields": _custom(raw),
    }


# -- listing state (the opaque Page.next_cursor) ---------------------------------------------


@dataclass(frozen=True)
class _Listing:
    """Where a listing is: MaintainX's cursor plus our stop mark and order bookkeeping."""

    entity: str
    remote: str | None = None  # MaintainX's nextCursor for the next request
    since: str | None = None  # stop at records older than this (ISO)
    seen: tuple[str, ...] = ()  # ids already listed with updatedAt == since (catch-up)
    scan: bool = False  # the server ignored the sort: read to the end, filter ourselves
    top: str | None = None  # updatedAt of the first record of this pass
    top_ids: tuple[str, ...] = ()  # ids of this pass's first page with updatedAt == top
    last: str | None = None  # updatedAt of the last record seen (order check)
    pages: int = 0  # pages fetched in this pass
    passes: int = 0  # catch-up passes done

    def encode(self) -> str:
        body = {"v": CURSOR_VERSION, **asdict(self)}
        raw = json.dumps(body, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, entity: str, cursor: str) -> _Listing:
        try:
            body = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
            if not isinstance(body, dict) or body.pop("v", None) != CURSOR_VERSION:
                raise ValueError("unknown cursor version")
            listing = cls(**body)
            listing = replace(listing, seen=tuple(listing.seen), top_ids=tuple(listing.top_ids))
        except (ValueError, TypeError, UnicodeError, binascii.Error) as exc:
            raise ConnectorError(
                FailureKind.PROVIDER_ERROR, f"Unusable {SYSTEM} listing cursor: {exc}"
            ) from exc
        if listing.entity != entity:
            raise ConnectorError(
                FailureKind.PROVIDER_ERROR,
                f"This cursor lists {listing.entity}, not {entity}",
            )
        return listing

    def take(self, items: list[dict[str, Any]]) -> tuple[_Listing, list[dict[str, Any]], bool]:
        """The records of one page this listing keeps, and whether the listing is done."""
        top, top_ids = parse_datetime(self.top), list(self.top_ids)
        last, scan = parse_datetime(self.last), self.scan
        for raw in items:
            stamp = parse_datetime(raw.get("updatedAt"))
            if stamp is None:
                continue
            if self.pages == 0 and (top is None or stamp == top):
                top = stamp
                top_ids.append(str(raw.get("id")))
            if last is not None and stamp > last:
                scan = True  # not newest-first: the order cannot tell us where to stop
            last = stamp
        since, seen = parse_datetime(self.since), set(self.seen)
        kept, older = [], False
        for raw in items:
            stamp = parse_datetime(raw.get("updatedAt"))
            if (
                since is not None
                and stamp is not None
                and (stamp < since or (stamp == since and str(raw.get("id")) in seen))
            ):
                older = True
                continue
            kept.append(raw)
        state = replace(
            self,
            top=top.isoformat() if top else None,
            top_ids=tuple(top_ids),
            last=last.isoformat() if last else None,
            scan=scan,
            pages=self.pages + 1,
        )
        return state, kept, older and not scan

    def catch_up(self) -> _Listing | None:
        """The next pass from the top, if records may have moved past this one's cursor."""
        if self.scan or self.pages <= 1 or self.top is None or self.passes >= MAX_CATCH_UP_PASSES:
            return None
        # From the top down to the record this pass started from, which it already listed.
        return _Listing(self.entity, since=self.top, seen=self.top_ids, passes=self.passes + 1)


# -- the connector ---------------------------------------------------------------------------


class MaintainXConnector(Connector):
    slug: ClassVar[str] = "maintainx"
    name: ClassVar[str] = SYSTEM
    auth_type = "api_key"
    credential_fields: ClassVar[tuple[CredentialField, ...]] = (
        CredentialField(
            name="base_url",
            label="Instance URL",
            type="url",
            required=False,
            placeholder=DEFAULT_BASE_URL,
            help="Leave empty for MaintainX's cloud API; set it for a simulator or a proxy.",
        ),
        CredentialField(
            name="api_key",
            label="API key",
            type="password",
            secret=True,
            help="MaintainX: Settings > Integrations > API Keys > New Key.",
        ),
        CredentialField(
            name="organization_id",
            label="Organization ID",
            required=False,
            placeholder="12345",
            help="Only for a key that works in several organizations: the one to sync.",
        ),
    )
    writable_entities: ClassVar[tuple[str, ...]] = ("work_orders", "purchase_orders")
    setting_fields: ClassVar[tuple[SettingField, ...]] = (
        page_size_setting(MAX_PAGE_SIZE, DEFAULT_PAGE_SIZE), TIMEOUT_SETTING,
    )
    reports_deletions: ClassVar[bool] = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._criticalities: dict[str, str] | None = None

    # -- plumbing --------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        raw = self.credentials.get("base_url")
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            raw = DEFAULT_BASE_URL
        url = str(parse_base_url(raw)).rstrip("/")
        # Accept the API root too, as people paste whichever URL they have.
        return url if url.endswith("/v1") else f"{url}/v1"

    @property
    def timeout(self) -> float:
        return float(self.settings.get("timeout", DEFAULT_TIMEOUT_SECONDS))

    @property
    def organization_id(self) -> int | None:
        raw = self.credentials.get("organization_id")
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None
        try:
            return _int_id(raw, "Organization ID")
        except ValueError as exc:
            raise ConnectorError(FailureKind.INVALID_CONFIGURATION, str(exc)) from exc

    def _headers(self, *, organization: bool = True) -> dict[str, str]:
        key = self.credentials.get("api_key")
        if not isinstance(key, str) or not key.strip():
            raise ConnectorError(FailureKind.INVALID_CONFIGURATION, "API key is missing")
        headers = {"Authorization": f"Bearer {key.strip()}", "Accept": "application/json"}
        org = self.organization_id
        if organization and org is not None:
            headers["x-organization-id"] = str(org)
        return headers

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: list[tuple[str, Any]] | None = None,
        json: Any = None,
        organization: bool = True,
    ) -> Any:
        headers = self._headers(organization=organization)
        try:
            response = await self.http.request(
                method,
                f"{self.api_url}{path}",
                headers=headers,
                params=params,
                json=json,
                timeout=self.timeout,
            )
        except httpx.HTTPError as exc:
            raise classify_transport_error(exc, system=SYSTEM) from exc
        if not response.is_success:
            raise _classify(response)
        return json_body(response, system=SYSTEM)

    def _resource(self, entity: str) -> tuple[str, str, str, tuple[str, ...]]:
        if entity not in RESOURCES:
            raise ValueError(f"{SYSTEM} has no entity {entity!r}")
        return RESOURCES[entity]

    # -- the contract ----------------------------------------------------------------------

    async def validate(self) -> AccountInfo:
        organizations = await self._organizations(limit=MAX_PAGE_SIZE)
        wanted = self.organization_id
        if wanted is not None:
            chosen = next((o for o in organizations if o.get("id") == wanted), None)
            if chosen is None:
                ids = ", ".join(str(o.get("id")) for o in organizations)
                raise ConnectorError(
                    FailureKind.INVALID_CONFIGURATION,
                    f"This API key has no access to organization {wanted} (it has: {ids})",
                )
        elif len(organizations) == 1:
            chosen = organizations[0]
        else:
            ids = ", ".join(f"{o.get('id')} ({o.get('name')})" for o in organizations)
            raise ConnectorError(
                FailureKind.INVALID_CONFIGURATION,
                "This API key works in several organizations; enter the Organization ID of "
                f"the one to sync: {ids}",
            )
        return AccountInfo(
            remote_account_id=_str(chosen.get("id")),
            remote_account_name=_str(chosen.get("name")),
            extra={
                "currency": chosen.get("currency"),
                "time_zone": chosen.get("timeZone"),
                "multi_organization_key": len(organizations) > 1,
            },
        )

    async def _organizations(self, *, limit: int) -> list[Mapping[str, Any]]:
        """The key's organizations; a wrong URL shows up here as a non-API answer."""
        try:
            body = await self._request(
                "GET", "/organizations", params=[("limit", limit)], organization=False
            )
        except ConnectorError as exc:
            if exc.status_code is not None and (exc.status_code == 404 or exc.status_code < 400):
                raise ConnectorError(
                    FailureKind.INVALID_CONFIGURATION,
                    f"No {SYSTEM} API at this URL (HTTP {exc.status_code} on /organizations)",
                    status_code=exc.status_code,
                ) from exc
            raise
        organizations = body.get("organizations") if isinstance(body, Mapping) else None
        if not isinstance(organizations, list) or not all(
            isinstance(o, Mapping) for o in organizations
        ):
            raise ConnectorError(
                FailureKind.INVALID_CONFIGURATION,
                f"No {SYSTEM} API at this URL (no organizations list)",
            )
        if not organizations:
            raise ConnectorError(
                FailureKind.PERMISSION_DENIED, "This API key belongs to no organization"
            )
        return organizations

    async def check_health(self) -> None:
        body = await self._request(
            "GET", "/organizations", params=[("limit", 1)], organization=False
        )
        if not isinstance(body, Mapping) or not isinstance(body.get("organizations"), list):
            raise ConnectorError(
                FailureKind.PROVIDER_ERROR, f"{SYSTEM} answered /organizations without a list"
            )

    async def list_records(
        self, entity: str, *, modified_since: datetime | None = None, cursor: str | None = None
    ) -> AsyncIterator[Page]:
        """Pages newest change first, down to `modified_since` (see the module docstring).

        `cursor` resumes a listing: it already holds the stop mark of the listing it came
        from, so `modified_since` only applies to a fresh start.
        """
        segment, envelope, _, expand = self._resource(entity)
        limit = max(1, min(int(self.settings.get("page_size", DEFAULT_PAGE_SIZE)), MAX_PAGE_SIZE))
        if cursor:
            listing = _Listing.decode(entity, cursor)
        else:
            since = parse_datetime(modified_since)
            listing = _Listing(entity, since=since.isoformat() if since else None)
        while True:
            params: list[tuple[str, Any]] = [("limit", limit), ("sort", "-updatedAt")]
            params += [("expand", name) for name in expand]
            if listing.remote:
                params.append(("cursor", listing.remote))
            body = await self._request("GET", f"/{segment}", params=params)
            items = body.get(envelope) if isinstance(body, Mapping) else None
            if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
                raise ConnectorError(
                    FailureKind.PROVIDER_ERROR,
                    f"{SYSTEM} answered a page without a {envelope} list",
                )
            next_remote = body.get("nextCursor")
            if next_remote is not None and (
                not isinstance(next_remote, str) or next_remote == listing.remote
            ):
                # A cursor that does not move would loop forever.
                raise ConnectorError(
                    FailureKind.PROVIDER_ERROR, f"{SYSTEM} answered an unusable nextCursor"
                )
            listing, records, done = listing.take([dict(i) for i in items])
            if entity == "assets":
                await self._load_criticalities(records)
            following = (
                replace(listing, remote=next_remote)
                if next_remote and not done
                else listing.catch_up()
            )
            yield Page(records=records, next_cursor=following.encode() if following else None)
            if following is None:
                return
            listing = following

    async def _load_criticalities(self, records: list[dict[str, Any]]) -> None:
        """Asset criticalities are ids of a per-organization list; read it once, when needed."""
        if self._criticalities is not None:
            return
        if not any(r.get("criticalityId") is not None for r in records):
            return
        table: dict[str, str] = {}
        remote: str | None = None
        try:
            for _ in range(50):  # a handful of levels; the bound only guards a looping cursor
                params: list[tuple[str, Any]] = [("limit", MAX_PAGE_SIZE)]
                if remote:
                    params.append(("cursor", remote))
                body = await self._request("GET", "/assetcriticalities", params=params)
                for item in _list(_mapping(body).get("assetCriticalities")):
                    if isinstance(item, Mapping) and item.get("id") is not None:
                        table[str(item["id"])] = str(item.get("label") or item["id"])
                remote = _mapping(body).get("nextCursor")
                if not isinstance(remote, str) or not remote:
                    break
        except ConnectorError as exc:
            if exc.kind not in (FailureKind.PERMISSION_DENIED, FailureKind.PROVIDER_ERROR):
                raise
            # Without the list, criticalities stay ids; the assets still sync.
        self._criticalities = table

    def map_record(self, entity: str, raw: Mapping[str, Any]) -> dict[str, Any]:
        if entity == "assets":
            fields = _map_asset(raw, self._criticalities or {})
        elif entity in MAPPERS:
            fields = MAPPERS[entity](raw)
        else:
            raise ValueError(f"{SYSTEM} has no entity {entity!r}")
        return {**_common(raw), **fields}

    # -- writes ------------------------------------------------------------------------------

    async def create(self, entity: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Create a work order or a purchase order; returns MaintainX's record.

        MaintainX takes a new work order's status and comments through their own endpoints,
        so `status` and `notes` are follow-up requests after the create.
        """
        if entity == "work_orders":
            _check_fields(fields, _WORK_ORDER_CREATE, "create work orders with")
            body = _work_order_body(fields, creating=True)
            created = await self._request("POST", "/workorders", json=body)
            record_id = _created_id(created, "workOrder")
            await self._after_work_order_write(record_id, fields)
            return await self._get("work_orders", record_id)
        if entity == "purchase_orders":
            _check_fields(fields, _PURCHASE_ORDER_CREATE, "create purchase orders with")
            body = _purchase_order_body(fields)
            created = await self._request("POST", "/purchaseorders", json=body)
            return await self._get("purchase_orders", _created_id(created, "purchaseOrder"))
        raise ValueError(f"{SYSTEM} cannot create {entity}")

    async def update(
        self, entity: str, remote_id: str, fields: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Update a work order (fields, then status, then a comment for `notes`)."""
        if entity != "work_orders":
            raise ValueError(f"{SYSTEM} cannot update {entity}")
        _check_fields(fields, _WORK_ORDER_UPDATE, "update work orders with")
        record_id = _int_id(remote_id, "remote_id")
        body = _work_order_body(fields, creating=False)
        if ("assignees" in body) and not ({"assignee_user_ids", "team_ids"} <= set(fields)):
            # MaintainX replaces the whole assignee list: keep the kind not being changed.
            current = await self._get("work_orders", record_id)
            keep = "TEAM" if "assignee_user_ids" in fields else "USER"
            body["assignees"] = [
                *body["assignees"],
                *({"type": keep, "id": int(i)} for i in _assignees(current, keep)),
            ]
        if body:
            await self._request("PATCH", f"/workorders/{record_id}", json=body)
        await self._after_work_order_write(record_id, fields)
        return await self._get("work_orders", record_id)

    async def _after_work_order_write(self, record_id: int, fields: Mapping[str, Any]) -> None:
        status = fields.get("status")
        if status is not None:
            await self._request(
                "PATCH",
                f"/workorders/{record_id}/status",
                json={"status": _enum(WORK_ORDER_STATUS_OUT, "status")(status)},
            )
        notes = fields.get("notes")
        if notes:
            await self._request(
                "POST", f"/workorders/{record_id}/comments", json={"content": str(notes)}
            )

    async def _get(self, entity: str, record_id: int) -> dict[str, Any]:
        segment, _, single, expand = self._resource(entity)
        params = [("expand", name) for name in expand]
        body = await self._request("GET", f"/{segment}/{record_id}", params=params)
        record = _mapping(body).get(single)
        if not isinstance(record, Mapping):
            raise ConnectorError(
                FailureKind.PROVIDER_ERROR, f"{SYSTEM} answered without a {single}"
            )
        return dict(record)


MAPPERS = {
    "work_orders": _map_work_order,
    "locations": _map_location,
    "parts": _map_part,
    "purchase_orders": _map_purchase_order,
    "vendors": _map_vendor,
    "users": _map_user,
}


# -- errors ----------------------------------------------------------------------------------


def _message(response: httpx.Response) -> str:
    """MaintainX's reasons: `{"errors": [{"error", "fieldPath"}]}` or `{"error": "..."}`."""
    try:
        body = response.json()
    except ValueError:
        body = None
    errors = body.get("errors") if isinstance(body, Mapping) else None
    if isinstance(errors, list) and errors:
        parts = []
        for item in errors:
            if isinstance(item, Mapping) and item.get("error"):
                path = item.get("fieldPath")
                parts.append(f"{path}: {item['error']}" if path else str(item["error"]))
        if parts:
            return "; ".join(parts)[:MAX_ERROR_MESSAGE]
    return error_message(response)


def _classify(response: httpx.Response) -> ConnectorError:
    error = classify_response(response, system=SYSTEM)
    message = _message(response)
    if error.kind is FailureKind.UNAVAILABLE:
        message = f"{SYSTEM} answered {response.status_code}: {message}"
    kind = error.kind
    if response.status_code == 400 and "x-organization-id" in message.lower():
        # A multi-organization key used without (or with a bad) Organization ID.
        kind = FailureKind.INVALID_CONFIGURATION
        message = f"{message} Set the connection's Organization ID."
    return ConnectorError(
        kind, message, status_code=response.status_code, retry_after=error.retry_after
    )


def _created_id(body: Any, single: str) -> int:
    """POST answers `{"id": n}` (or the record, bare or enveloped)."""
    body = _mapping(body)
    value = body.get("id", _mapping(body.get(single)).get("id"))
    try:
        return _int_id(value, "id")
    except ValueError as exc:
        raise ConnectorError(
            FailureKind.PROVIDER_ERROR, f"{SYSTEM} answered a create without an id"
        ) from exc


# -- unified fields -> MaintainX bodies ------------------------------------------------------

_WORK_ORDER_CREATE = frozenset(
    {
        "title",
        "description",
        "status",
        "priority",
        "type",
        "asset_ids",
        "location_id",
        "assignee_user_ids",
        "team_ids",
        "due_at",
        "notes",
    }
)
_WORK_ORDER_UPDATE = frozenset(
    {
        "title",
        "description",
        "status",
        "priority",
        "assignee_user_ids",
        "team_ids",
        "due_at",
        "notes",
    }
)
_PURCHASE_ORDER_CREATE = frozenset({"vendor_id", "status", "due_at", "lines"})


def _check_fields(fields: Mapping[str, Any], allowed: frozenset[str], action: str) -> None:
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise ValueError(f"{SYSTEM} cannot {action}: {', '.join(unknown)}")


def _enum(mapping: Mapping[str, str], label: str) -> Any:
    def convert(value: Any) -> str:
        if value not in mapping:
            raise ValueError(f"{label} {value!r} is not one of {sorted(mapping)}")
        return mapping[value]

    return convert


def _ids(value: Any, label: str) -> list[int]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"{label} must be a list of ids")
    return [_int_id(v, label) for v in value]


def _work_order_body(fields: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if "title" in fields:
        if not isinstance(fields["title"], str) or not fields["title"].strip():
            raise ValueError("title must be a non-empty string")
        body["title"] = fields["title"]
    if "description" in fields:
        body["description"] = fields["description"]
    if fields.get("priority") is not None:
        body["priority"] = _enum(PRIORITY_OUT, "priority")(fields["priority"])
    elif "priority" in fields:
        raise ValueError("priority cannot be null")
    if fields.get("type") is not None:
        kind, categories = _enum(WORK_ORDER_TYPE_OUT, "type")(fields["type"])
        body["type"] = kind
        if categories:
            body["categories"] = categories
    if fields.get("asset_ids"):
        asset_ids = _ids(fields["asset_ids"], "asset_ids")
        if len(asset_ids) > 1:
            raise ValueError(f"{SYSTEM} work orders hold one asset, got {len(asset_ids)}")
        body["assetId"] = asset_ids[0]
    if fields.get("location_id") is not None:
        body["locationId"] = _int_id(fields["location_id"], "location_id")
    if "assignee_user_ids" in fields or "team_ids" in fields:
        users = _ids(fields.get("assignee_user_ids") or [], "assignee_user_ids")
        teams = _ids(fields.get("team_ids") or [], "team_ids")
        body["assignees"] = [
            *({"type": "USER", "id": i} for i in users),
            *({"type": "TEAM", "id": i} for i in teams),
        ]
    if "due_at" in fields and (creating is False or fields["due_at"] is not None):
        body["dueDate"] = _iso(fields["due_at"])
    if creating and "title" not in body:
        raise ValueError("title is required")
    if fields.get("status") is not None:
        _enum(WORK_ORDER_STATUS_OUT, "status")(fields["status"])  # refuse before writing
    elif "status" in fields:
        raise ValueError("status cannot be null")
    return body


def _purchase_order_body(fields: Mapping[str, Any]) -> dict[str, Any]:
    status = fields.get("status")
    if status not in (None, "DRAFT"):
        # MaintainX creates purchase orders as REQUESTED; approval happens in MaintainX.
        raise ValueError(f"{SYSTEM} creates purchase orders as DRAFT (REQUESTED), not {status}")
    if fields.get("vendor_id") is None:
        raise ValueError("vendor_id is required")
    lines = fields.get("lines")
    if not isinstance(lines, list) or not lines:
        raise ValueError("lines must be a non-empty list")
    items = []
    for line in lines:
        if not isinstance(line, Mapping):
            raise ValueError("each line must be an object")
        quantity = parse_decimal(line.get("qty_ordered"))
        if quantity is None or quantity <= 0:
            raise ValueError("each line needs a positive qty_ordered")
        item: dict[str, Any] = {"quantityOrdered": float(quantity)}
        price = parse_decimal(line.get("unit_price"))
        if price is not None:
            if price < 0:
                raise ValueError("unit_price cannot be negative")
            cents = (price * CENTS).quantize(Decimal(1), rounding=ROUND_HALF_UP)
            item["unitCost"] = int(cents)
        if line.get("part_id") is not None:
            item["partId"] = _int_id(line["part_id"], "part_id")
        if line.get("description") is not None:
            item["name"] = str(line["description"])
        if "partId" not in item and "name" not in item:
            raise ValueError("each line needs a part_id or a description")
        items.append(item)
    body: dict[str, Any] = {
        "vendorId": _int_id(fields["vendor_id"], "vendor_id"),
        "items": items,
    }
    if fields.get("due_at") is not None:
        body["dueDate"] = _iso(fields["due_at"])
    return body
