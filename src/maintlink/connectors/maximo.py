"""Connector for IBM Maximo (Maximo Asset Management 7.6, MAS Manage 8/9), through its REST
JSON API (the "OSLC" / object structure API).

An API key in the `apikey` header; object structures under `/maximo/api/os/` (or
`/maximo/oslc/os/`): `mxapiwodetail`, `mxapiasset`, `mxapilocations`, `mxapiinventory`,
`mxapipo`, `mxapivendor`, `mxapiperson`; `lean=1` JSON, an explicit `oslc.select`,
`oslc.pageSize`, `responseInfo.nextPage`. Records have composite keys (site + number), so
`remote_id` joins them with `:` (`BEDFORD:1001`), and references are built the same way.

Listings are keyset-paged rather than walked by `pageno` (offset paging over a live table
skips a record whenever an earlier one changes): each request asks for page 1 of
`changedate>="T"` ordered `+changedate,+<numeric id>`, where T is the second of the last record
returned, and drops the records of that second it already returned (their ids travel in the
cursor). A record changed while the listing runs moves to the end and comes again. Maximo shows
whole seconds but sorts by the fractions it keeps, so within a second the order is not the id
order; when a whole page belongs to one second the listing walks that second by id
(`changedate>="T" and changedate<"T+1s" and <id>>N`) and goes on from T+1s. Entities without a
change date in Maximo (inventory, persons) are listed in full, keyset-paged by id. Maximo has
no deletion flag: `reports_deletions = False`, deletions are found by full reconciliation.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any, ClassVar

import httpx

from maintlink.connectors.base import (
    ENTITIES,
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
    classify_response,
    classify_transport_error,
    error_message,
    parse_base_url,
    parse_retry_after,
)
from maintlink.connectors.values import parse_datetime, parse_decimal

SYSTEM = "IBM Maximo"
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
CURSOR_VERSION = 1
MAX_TITLE = 100  # WORKORDER.DESCRIPTION holds 100 characters
# Reason codes of refused credentials: BMXAA9549E (API key invalid, expired or revoked, sent
# with HTTP 400), BMXAA0021E (user name and password not valid), BMXAA7901E (cannot log in).
AUTH_REASONS = frozenset({"BMXAA9549E", "BMXAA0021E", "BMXAA7901E"})
# "The action READ/INSERT/SAVE is not allowed on object ...": the user's security groups.
PERMISSION_REASONS = frozenset({"BMXAA0024E"})
_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")


@dataclass(frozen=True)
class Spec:
    """How one entity is read: object structure, numeric id, change date, fields."""

    object_structure: str
    id_attr: str
    change_attr: str | None  # None: Maximo keeps no change date for it
    created_attr: str | None
    select: tuple[str, ...]


SPECS: dict[str, Spec] = {
    "work_orders": Spec(
        "mxapiwodetail", "workorderid", "changedate", "reportdate",
        ("workorderid", "wonum", "siteid", "orgid", "description",
         "description_longdescription", "status", "status_maxvalue", "wopriority", "worktype",
         "assetnum", "location", "lead", "owner", "persongroup", "ownergroup", "parent",
         "reportdate", "targcompdate", "actstart", "actfinish", "changedate"),
    ),
    "assets": Spec(
        "mxapiasset", "assetid", "changedate", None,
        ("assetid", "assetnum", "siteid", "orgid", "description", "description_longdescription",
         "status", "status_maxvalue", "serialnum", "assettag", "manufacturer", "vendor", "parent",
         "location", "priority", "changedate"),
    ),
    "locations": Spec(
        "mxapilocations", "locationsid", "changedate", None,
        ("locationsid", "location", "siteid", "orgid", "description", "type", "status",
         "changedate", "lochierarchy{parent,systemid}",
         "serviceaddress{formattedaddress,streetaddress,city,stateprovince,postalcode,country}"),
    ),
    "parts": Spec(
        "mxapiinventory", "inventoryid", None, None,
        ("inventoryid", "itemnum", "itemsetid", "location", "siteid", "orgid", "description",
         "issueunit", "curbal", "minlevel", "reservedqty", "avgcost", "lastcost", "stdcost",
         "vendor", "binnum", "status"),
    ),
    "purchase_orders": Spec(
        "mxapipo", "poid", "changedate", "orderdate",
        ("poid", "ponum", "revisionnum", "siteid", "orgid", "description", "status",
         "status_maxvalue", "receipts", "vendor", "orderdate", "requireddate", "currencycode",
         "totalcost", "changedate",
         "poline{polineid,polinenum,linetype,itemnum,storeloc,tositeid,description,orderqty,"
         "receivedqty,unitcost,linecost}"),
    ),
    "vendors": Spec(
        "mxapivendor", "companiesid", "changedate", None,
        ("companiesid", "company", "orgid", "name", "type", "address1", "address2", "address3",
         "address4", "phone", "currencycode", "disabled", "changedate",
         "compcontact{contact,position,voicephone,email}"),
    ),
    "users": Spec(
        "mxapiperson", "personuid", None, None,
        ("personuid", "personid", "firstname", "lastname", "displayname", "primaryemail",
         "primaryphone", "title", "status", "status_maxvalue"),
    ),
}  # fmt: skip

# -- vocabularies ---------------------------------------------------------------------------

WORK_ORDER_STATUS = {
    "WAPPR": "OPEN",  # waiting on approval
    "APPR": "OPEN",
    "WSCH": "OPEN",  # waiting to be scheduled
    "WMATL": "ON_HOLD",  # waiting on material
    "WPCOND": "ON_HOLD",  # waiting on plant conditions
    "INPRG": "IN_PROGRESS",
    "COMP": "COMPLETED",
    "CLOSE": "COMPLETED",
    "CAN": "CANCELLED",
}
# A new work order without a status is WAPPR, as Maximo creates it.
WORK_ORDER_STATUS_OUT = {
    "OPEN": "APPR",
    "IN_PROGRESS": "INPRG",
    "ON_HOLD": "WMATL",
    "COMPLETED": "COMP",
    "CANCELLED": "CAN",
}
# wopriority is an integer each customer defines; 1 is the most urgent by convention.
PRIORITY_OUT = {"CRITICAL": 1, "HIGH": 2, "MEDIUM": 3, "LOW": 4, "NONE": None}
WORK_TYPE = {
    "CM": "CORRECTIVE",
    "EM": "CORRECTIVE",
    "PM": "PREVENTIVE",
    "CAL": "PREVENTIVE",
    "PDM": "PREVENTIVE",
    "INSP": "INSPECTION",
    "INS": "INSPECTION",
}
WORK_TYPE_OUT = {"CORRECTIVE": "CM", "PREVENTIVE": "PM", "INSPECTION": "INSP", "OTHER": None}
ASSET_STATUS = {
    "OPERATING": "ACTIVE",
    "ACTIVE": "ACTIVE",
    "LIMITEDUSE": "ACTIVE",
    "NOT READY": "INACTIVE",
    "BROKEN": "INACTIVE",
    "INACTIVE": "INACTIVE",
    "MISSING": "INACTIVE",
    "SEALED": "INACTIVE",
    "DECOMMISSIONED": "DECOMMISSIONED",
}
PO_STATUS = {
    "WAPPR": "PENDING_APPROVAL",
    "APPR": "APPROVED",
    "INPRG": "APPROVED",  # sent to the vendor; receipts say how far it got
    "CLOSE": "RECEIVED",
    "CAN": "CANCELLED",
    "REVISE": "DRAFT",  # a revision being prepared
    "PNDREV": "DRAFT",
}
PO_RECEIPTS = {"PARTIAL": "PARTIALLY_RECEIVED", "COMPLETE": "RECEIVED"}
# Maximo has no draft purchase order: a new one waits for approval (WAPPR).
PO_STATUS_OUT = {"DRAFT": None, "PENDING_APPROVAL": None, "APPROVED": "APPR"}


# -- value helpers --------------------------------------------------------------------------


def _iso(value: Any) -> str | None:
    """A datetime as Maximo takes it: seconds precision with an offset."""
    parsed = parse_datetime(value)
    if value is not None and parsed is None:
        raise ValueError(f"not a date/time: {value!r}")
    return parsed.replace(microsecond=0).isoformat() if parsed else None


def _number(value: Any) -> int | float:
    """A unified decimal as a JSON number (Maximo's decimals are plain JSON numbers)."""
    amount = Decimal(str(value))
    return int(amount) if amount == amount.to_integral_value() else float(amount)


def _str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _key(*parts: Any) -> str | None:
    """A composite key as a remote id (`BEDFORD:1001`); None when a part is missing."""
    if any(p is None or p == "" for p in parts):
        return None
    return ":".join(str(p) for p in parts)


def _internal(raw: Mapping[str, Any], name: str) -> str | None:
    """A domain value's internal value: customers rename statuses with synonyms."""
    value = raw.get(f"{name}_maxvalue") or raw.get(name)
    return None if value is None else str(value).upper()


def _children(raw: Mapping[str, Any], name: str) -> list[Mapping[str, Any]]:
    value = raw.get(name)
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _unique(values: Sequence[Any]) -> list[str]:
    out: list[str] = []
    for value in values:
        if value not in (None, "") and str(value) not in out:
            out.append(str(value))
    return out


# -- mapping --------------------------------------------------------------------------------


def _priority(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return "NONE"
    try:
        number = int(value)
    except (TypeError, ValueError):
        return "NONE"
    if number <= 0:
        return "NONE"
    return {1: "CRITICAL", 2: "HIGH", 3: "MEDIUM"}.get(number, "LOW")


def _map_work_order(raw: Mapping[str, Any]) -> dict[str, Any]:
    site = raw.get("siteid")
    status = _internal(raw, "status")
    worktype = _str(raw.get("worktype"))
    priority = raw.get("wopriority")
    return {
        "remote_number": _str(raw.get("wonum")),
        "title": raw.get("description"),
        "description": raw.get("description_longdescription"),
        "status": WORK_ORDER_STATUS.get(status or "", "UNKNOWN"),
        "remote_status": _str(raw.get("status")),
        "priority": _priority(priority),
        "remote_priority": _str(priority),
        "type": WORK_TYPE.get(worktype.upper(), "OTHER") if worktype else None,
        "asset_ids": [k for k in (_key(site, raw.get("assetnum")),) if k],
        "location_id": _key(site, raw.get("location")),
        "assignee_user_ids": _unique([raw.get("lead"), raw.get("owner")]),
        "team_ids": _unique([raw.get("persongroup"), raw.get("ownergroup")]),
        "due_at": parse_datetime(raw.get("targcompdate")),
        "started_at": parse_datetime(raw.get("actstart")),
        "completed_at": parse_datetime(raw.get("actfinish")),
        "parent_work_order_id": _key(site, raw.get("parent")),
    }


def _map_asset(raw: Mapping[str, Any]) -> dict[str, Any]:
    site = raw.get("siteid")
    return {
        "remote_number": _str(raw.get("assetnum")),
        "name": raw.get("description"),
        "description": raw.get("description_longdescription"),
        "serial_number": raw.get("serialnum"),
        "model": None,  # Maximo assets have no model attribute
        "manufacturer": raw.get("manufacturer"),
        "barcode": raw.get("assettag"),
        "parent_asset_id": _key(site, raw.get("parent")),
        "location_id": _key(site, raw.get("location")),
        "status": ASSET_STATUS.get(_internal(raw, "status") or "", "UNKNOWN"),
        "criticality": raw.get("priority"),
    }


def _address(raw: Mapping[str, Any]) -> str | None:
    for address in _children(raw, "serviceaddress"):
        if address.get("formattedaddress"):
            return str(address["formattedaddress"])
        parts = [address.get(n) for n in ("streetaddress", "city", "stateprovince", "postalcode")]
        text = ", ".join(str(p) for p in parts if p)
        if text:
            return text
    return None


def _map_location(raw: Mapping[str, Any]) -> dict[str, Any]:
    site = raw.get("siteid")
    hierarchy = _children(raw, "lochierarchy")
    primary = next((h for h in hierarchy if h.get("systemid") == "PRIMARY"), None)
    parent = (primary or (hierarchy[0] if hierarchy else {})).get("parent", raw.get("parent"))
    kind = _internal(raw, "type")
    if kind == "STOREROOM":
        unified = "STOREROOM"
    elif kind == "OPERATING":
        # A top-level operating location stands for the plant; below it, functional locations.
        unified = "FUNCTIONAL_LOCATION" if parent else "SITE"
    else:
        unified = "OTHER"
    return {
        "remote_number": _str(raw.get("location")),
        "name": raw.get("description"),
        "code": _str(raw.get("location")),
        "address": _address(raw),
        "parent_location_id": _key(site, parent),
        "type": unified,
    }


def _map_part(raw: Mapping[str, Any]) -> dict[str, Any]:
    cost = next(
        (c for c in (raw.get(n) for n in ("avgcost", "lastcost", "stdcost")) if c is not None),
        None,
    )
    return {
        "remote_number": _str(raw.get("itemnum")),
        "name": raw.get("description"),
        "part_number": _str(raw.get("itemnum")),
        "uom": raw.get("issueunit"),
        "unit_cost": parse_decimal(cost),
        "currency": None,  # costs are in the organization's base currency (see validate)
        "qty_on_hand": parse_decimal(raw.get("curbal")),
        "qty_min": parse_decimal(raw.get("minlevel")),
        "qty_reserved": parse_decimal(raw.get("reservedqty")),
        "qty_on_order": None,
        "stock_location_id": _key(raw.get("siteid"), raw.get("location")),
        "vendor_ids": [k for k in (_key(raw.get("orgid"), raw.get("vendor")),) if k],
    }


def _map_purchase_order(raw: Mapping[str, Any]) -> dict[str, Any]:
    site = raw.get("siteid")
    status = _internal(raw, "status") or ""
    unified = PO_STATUS.get(status, "UNKNOWN")
    if status in ("APPR", "INPRG"):
        unified = PO_RECEIPTS.get(str(raw.get("receipts") or "").upper(), unified)
    lines = [
        {
            "remote_id": _str(line.get("polineid") or line.get("polinenum")),
            "part_id": _key(
                line.get("tositeid") or site, line.get("storeloc"), line.get("itemnum")
            ),
            "description": line.get("description"),
            "qty_ordered": parse_decimal(line.get("orderqty")),
            "qty_received": parse_decimal(line.get("receivedqty")),
            "unit_price": parse_decimal(line.get("unitcost")),
        }
        for line in _children(raw, "poline")
    ]
    return {
        "remote_number": _str(raw.get("ponum")),
        "number": _str(raw.get("ponum")),
        "status": unified,
        "remote_status": _str(raw.get("status")),
        "vendor_id": _key(raw.get("orgid"), raw.get("vendor")),
        "currency": raw.get("currencycode"),
        "total_amount": parse_decimal(raw.get("totalcost")),
        "ordered_at": parse_datetime(raw.get("orderdate")),
        "due_at": parse_datetime(raw.get("requireddate")),
        "lines": lines,
    }


def _map_vendor(raw: Mapping[str, Any]) -> dict[str, Any]:
    contacts = [
        {
            "name": c.get("contact"),
            "email": c.get("email"),
            "phone": c.get("voicephone"),
            "role": c.get("position"),
        }
        for c in _children(raw, "compcontact")
    ]
    # ADDRESS1..4 are street, city, state/province and postal code.
    parts = [raw.get(f"address{n}") for n in range(1, 5)]
    return {
        "remote_number": _str(raw.get("company")),
        "name": raw.get("name"),
        "code": _str(raw.get("company")),
        "email": next((c["email"] for c in contacts if c["email"]), None),
        "phone": raw.get("phone") or next((c["phone"] for c in contacts if c["phone"]), None),
        "address": ", ".join(str(p) for p in parts if p) or None,
        "contacts": contacts,
    }


def _map_user(raw: Mapping[str, Any]) -> dict[str, Any]:
    first, last = raw.get("firstname"), raw.get("lastname")
    return {
        "remote_number": _str(raw.get("personid")),
        "first_name": first,
        "last_name": last,
        "display_name": raw.get("displayname")
        or " ".join(p for p in (first, last) if p)
        or raw.get("personid"),
        "email": raw.get("primaryemail"),
        "phone": raw.get("primaryphone"),
        "role": None,  # access comes from security groups, not one role
        "job_title": raw.get("title"),
        "is_active": _internal(raw, "status") == "ACTIVE",
    }


MAPPERS = {
    "work_orders": _map_work_order,
    "assets": _map_asset,
    "locations": _map_location,
    "parts": _map_part,
    "purchase_orders": _map_purchase_order,
    "vendors": _map_vendor,
    "users": _map_user,
}


def record_key(entity: str, raw: Mapping[str, Any]) -> str:
    """The composite key of a record, as its `remote_id`."""
    keys: dict[str, tuple[str, ...]] = {
        "work_orders": ("siteid", "wonum"),
        "assets": ("siteid", "assetnum"),
        "locations": ("siteid", "location"),
        "parts": ("siteid", "location", "itemnum"),
        "purchase_orders": ("siteid", "ponum"),
        "vendors": ("orgid", "company"),
        "users": ("personid",),
    }
    value = _key(*(raw.get(name) for name in keys[entity]))
    if value is None:
        raise ValueError(f"{SYSTEM} record without its key ({', '.join(keys[entity])})")
    return value


# -- listing position (the cursor) ----------------------------------------------------------


def _second(value: datetime) -> datetime:
    return value.replace(microsecond=0)


@dataclass(frozen=True)
class _Position:
    """Where a keyset listing stands (see the module docstring).

    Main phase: records changed at or after the second `since`, except the `seen` ids that
    already came with that second. Tie phase: the records of the second `since`, by id after
    `last_id`. Without a change date: records by id after `last_id`.
    """

    entity: str
    since: str | None = None  # ISO 8601, whole seconds, UTC
    seen: tuple[int, ...] = ()
    ties: bool = False
    last_id: int | None = None

    def encode(self) -> str:
        body = {"v": CURSOR_VERSION, **asdict(self), "seen": list(self.seen)}
        raw = json.dumps(body, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, entity: str, cursor: str) -> _Position:
        invalid = ConnectorError(FailureKind.PROVIDER_ERROR, f"Invalid {SYSTEM} listing cursor")
        try:
            body = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        except (ValueError, UnicodeError, binascii.Error) as exc:
            raise invalid from exc
        if not isinstance(body, dict) or body.pop("v", None) != CURSOR_VERSION:
            raise invalid
        seen = body.get("seen")
        if not isinstance(seen, list) or not all(type(i) is int for i in seen):
            raise invalid
        try:
            position = cls(**{**body, "seen": tuple(seen)})
        except TypeError as exc:
            raise invalid from exc
        valid = (
            position.entity == entity
            and (position.since is None or parse_datetime(position.since) is not None)
            and (position.last_id is None or type(position.last_id) is int)
            and isinstance(position.ties, bool)
            and (not position.ties or position.since is not None)
        )
        if not valid:
            raise invalid
        return position

    @property
    def since_time(self) -> datetime | None:
        return parse_datetime(self.since)

    def where(self, spec: Spec) -> list[str]:
        change, clauses = spec.change_attr, []
        since = self.since_time
        if change is not None and since is not None:
            clauses.append(f'{change}>="{self.since}"')
            if self.ties:
                # A range rather than `=`: Maximo may keep fractions of a second it does not
                # show, and `=` on the shown second would miss those records.
                clauses.append(f'{change}<"{_iso(since + timedelta(seconds=1))}"')
        if (change is None or self.ties) and self.last_id is not None:
            clauses.append(f"{spec.id_attr}>{self.last_id}")
        return clauses

    def order(self, spec: Spec) -> str:
        if spec.change_attr is None or self.ties:
            return f"+{spec.id_attr}"
        return f"+{spec.change_attr},+{spec.id_attr}"

    def check_order(self, spec: Spec, keys: list[tuple[datetime | None, int]]) -> None:
        """Keyset paging relies on the order; a server ignoring it would lose records."""
        if spec.change_attr is None or self.ties:
            ordered = all(a[1] < b[1] for a, b in pairwise(keys))
        else:
            # Within one shown second the server orders by the time it keeps, not by id.
            times = [k[0] for k in keys if k[0] is not None]
            ordered = all(a <= b for a, b in pairwise(times))
        if not ordered:
            raise ConnectorError(
                FailureKind.PROVIDER_ERROR,
                f"{SYSTEM} answered {spec.object_structure} out of the requested order",
            )

    def is_new(self, spec: Spec, key: tuple[datetime | None, int]) -> bool:
        changed, record_id = key
        since = self.since_time
        if spec.change_attr is None or self.ties:
            return self.last_id is None or record_id > self.last_id
        if since is None or changed is None:
            return True
        second = _second(changed)
        return second > since or (second == since and record_id not in self.seen)

    def advance(
        self, spec: Spec, fresh: list[tuple[datetime | None, int]], has_next: bool
    ) -> _Position | None:
        """The position after a page of new records' keys, or None when the listing is done."""
        stuck = ConnectorError(
            FailureKind.PROVIDER_ERROR,
            f"{SYSTEM} announced a next page but the listing did not move forward",
        )
        since = self.since_time
        if spec.change_attr is None or self.ties:
            if has_next:
                if not fresh:
                    raise stuck
                return replace(self, last_id=fresh[-1][1])
            if spec.change_attr is None or since is None:
                return None
            # The second is walked: go on after it.
            return _Position(self.entity, since=_iso(since + timedelta(seconds=1)))
        if fresh:
            if not has_next:
                return None
            last = _second(fresh[-1][0] or datetime.min.replace(tzinfo=UTC))
            seen = [i for t, i in fresh if t is not None and _second(t) == last]
            if since is not None and last == since:
                seen = [*self.seen, *seen]
            return replace(self, since=_iso(last), seen=tuple(seen))
        if has_next and since is not None:
            # A full page of one second, all seen: walk that second by id, then go on.
            return replace(self, ties=True, seen=(), last_id=None)
        if has_next:
            raise stuck
        return None


# -- the connector --------------------------------------------------------------------------


class MaximoConnector(Connector):
    slug: ClassVar[str] = "maximo"
    name: ClassVar[str] = SYSTEM
    auth_type = "api_key"
    credential_fields: ClassVar[tuple[CredentialField, ...]] = (
        CredentialField(
            name="base_url",
            label="Instance URL",
            type="url",
            placeholder="https://manage.example.com/maximo",
            help="The address you open Maximo at, e.g. https://manage.example.com/maximo "
            "(an API URL ending in /maximo/api or /maximo/oslc works too).",
        ),
        CredentialField(
            name="api_key",
            label="API key",
            type="password",
            secret=True,
            help="An API key of an integration user (Administration > API Keys, or the API "
            "Keys subtab of the Integration tab in the Administration Work Center).",
        ),
    )
    writable_entities: ClassVar[tuple[str, ...]] = ("work_orders", "purchase_orders")
    setting_fields: ClassVar[tuple[SettingField, ...]] = (
        page_size_setting(MAX_PAGE_SIZE, DEFAULT_PAGE_SIZE), TIMEOUT_SETTING,
        SettingField(
            "object_structures", "Object structures", "object", keys=ENTITIES, values="string",
            help="{entity: object structure} for cloned object structures",
        ),
        SettingField(
            "custom_attributes", "Custom attributes", "object", keys=ENTITIES, values="strings",
            help="{entity: [attribute, ...]} read into custom_fields",
        ),
    )
    docs_url: ClassVar[str | None] = (
        "https://ibm-maximo-dev.github.io/maximo-restapi-documentation/"
    )
    reports_deletions: ClassVar[bool] = False

    # -- plumbing --------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        """`<context root>/api` (or `/oslc` when that is what the customer pasted)."""
        url = parse_base_url(self.credentials.get("base_url"))
        path = url.path.rstrip("/")
        flavor = "api"
        for suffix in ("/api", "/oslc"):
            if path.lower().endswith(suffix):
                flavor, path = suffix[1:], path[: -len(suffix)]
                break
        if not path.lower().endswith("/maximo"):
            path = f"{path}/maximo"  # the context root every Maximo server uses
        return str(url.copy_with(path=f"{path}/{flavor}")).rstrip("/")

    @property
    def timeout(self) -> float:
        return float(self.settings.get("timeout", DEFAULT_TIMEOUT_SECONDS))

    @property
    def page_size(self) -> int:
        size = int(self.settings.get("page_size", DEFAULT_PAGE_SIZE))
        return max(1, min(size, MAX_PAGE_SIZE))

    def _headers(self) -> dict[str, str]:
        key = self.credentials.get("api_key")
        if not isinstance(key, str) or not key.strip():
            raise ConnectorError(FailureKind.INVALID_CONFIGURATION, "API key is missing")
        return {"apikey": key.strip(), "Accept": "application/json"}

    def _spec(self, entity: str) -> Spec:
        spec = SPECS.get(entity)
        if spec is None:
            raise ValueError(f"{SYSTEM} has no entity {entity!r}")
        # Customers often clone object structures (e.g. MXAPIWODETAIL_CUSTOM).
        override = self._setting("object_structures").get(entity)
        extra = self._setting("custom_attributes").get(entity) or ()
        if isinstance(extra, str) or not isinstance(extra, list | tuple):
            extra = (extra,)
        for name in (override, *extra):
            if name is not None and not (isinstance(name, str) and _NAME.fullmatch(name)):
                raise ConnectorError(
                    FailureKind.INVALID_CONFIGURATION,
                    f"Not a Maximo object structure or attribute name: {name!r}",
                )
        return replace(
            spec,
            object_structure=(override or spec.object_structure).lower(),
            select=spec.select + tuple(n.lower() for n in extra),
        )

    def _setting(self, name: str) -> Mapping[str, Any]:
        value = self.settings.get(name) or {}
        if not isinstance(value, Mapping):
            raise ConnectorError(
                FailureKind.INVALID_CONFIGURATION, f"Setting {name} must map entities to names"
            )
        return value

    def _collection(self, spec: Spec) -> str:
        return f"{self.api_url}/os/{spec.object_structure}"

    async def _send(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        try:
            response = await self.http.request(
                method,
                url,
                params=params,
                json=body,
                headers={**self._headers(), **(headers or {})},
                timeout=self.timeout,
            )
        except httpx.HTTPError as exc:
            raise classify_transport_error(exc, system=SYSTEM) from exc
        if not response.is_success:
            raise _classify(response)
        return response

    async def _json(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        return _decode(await self._send(method, url, **kwargs))

    # -- the contract ----------------------------------------------------------------------

    async def validate(self) -> AccountInfo:
        """`GET whoami`: the API key's user, its default site and organization."""
        try:
            body = await self._json("GET", f"{self.api_url}/whoami")
        except ConnectorError as exc:
            code = exc.status_code
            not_json = exc.kind is FailureKind.PROVIDER_ERROR and "not JSON" in exc.message
            if not_json or (code is not None and (code == 404 or code < 400)):
                # A redirect to a login page, a web page, a 404: not Maximo's REST API.
                raise ConnectorError(
                    FailureKind.INVALID_CONFIGURATION,
                    f"No {SYSTEM} REST API at this URL (HTTP {code} on {self.api_url}/whoami)",
                    status_code=code,
                ) from exc
            raise
        person = body.get("personid") or body.get("userName") or body.get("loginID")
        if not person:
            raise ConnectorError(
                FailureKind.INVALID_CONFIGURATION,
                f"{self.api_url}/whoami did not answer with a {SYSTEM} user",
            )
        host = httpx.URL(self.api_url).netloc.decode("ascii", "replace")
        organization = _str(body.get("insertOrg"))
        extra = {
            "personid": _str(person),
            "display_name": _str(body.get("displayName") or body.get("displayname")),
            "default_site": _str(body.get("insertSite") or body.get("defaultSite")),
            "organization": organization,
            "base_currency": _str(body.get("baseCurrency")),
            "api_url": self.api_url,
        }
        return AccountInfo(
            remote_account_id=host,
            remote_account_name=f"{organization} ({host})" if organization else host,
            extra={k: v for k, v in extra.items() if v is not None},
        )

    async def check_health(self) -> None:
        await self._json("GET", f"{self.api_url}/whoami")

    async def list_records(
        self, entity: str, *, modified_since: datetime | None = None, cursor: str | None = None
    ) -> AsyncIterator[Page]:
        """Pages oldest change first (see the module docstring for the keyset paging).

        `cursor` resumes a listing and already holds its change filter, so `modified_since`
        only applies to a fresh start; entities without a change date ignore it.
        """
        spec = self._spec(entity)
        if cursor:
            position = _Position.decode(entity, cursor)
        elif modified_since is not None and spec.change_attr is not None:
            since = parse_datetime(modified_since)
            position = _Position(entity, since=_iso(_second(since)) if since else None)
        else:
            position = _Position(entity)
        select = ",".join(spec.select)
        while True:
            params = {
                "lean": "1",
                "oslc.select": select,
                "oslc.orderBy": position.order(spec),
                "oslc.pageSize": str(self.page_size),
                "pageno": "1",
            }
            clauses = position.where(spec)
            if clauses:
                params["oslc.where"] = " and ".join(clauses)
            body = await self._json("GET", self._collection(spec), params=params)
            members, has_next = _members(body)
            keys = [_full_key(spec, m) for m in members]
            position.check_order(spec, keys)
            fresh = [
                (dict(m), k) for m, k in zip(members, keys, strict=True) if position.is_new(spec, k)
            ]
            following = position.advance(spec, [k for _, k in fresh], has_next)
            if fresh or following is None:
                yield Page([m for m, _ in fresh], following.encode() if following else None)
            if following is None:
                return
            position = following

    def map_record(self, entity: str, raw: Mapping[str, Any]) -> dict[str, Any]:
        spec = self._spec(entity)
        mapped = MAPPERS[entity](raw)
        chosen = spec.select[len(SPECS[entity].select) :]  # the custom attributes asked for
        custom = {name: raw[name] for name in chosen if name in raw}
        return {
            "remote_id": record_key(entity, raw),
            "created_at": parse_datetime(raw.get(spec.created_attr)) if spec.created_attr else None,
            "updated_at": parse_datetime(raw.get(spec.change_attr)) if spec.change_attr else None,
            "remote_deleted_at": None,  # Maximo lists no deleted records
            **mapped,
            "custom_fields": custom,
        }

    # -- writes ----------------------------------------------------------------------------

    async def create(self, entity: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Create a work order or a purchase order; returns Maximo's record (lean JSON)."""
        if entity == "work_orders":
            body = _work_order_body(fields, creating=True)
        elif entity == "purchase_orders":
            body = _purchase_order_body(fields)
        else:
            raise ValueError(f"{SYSTEM} cannot create {entity}")
        spec = self._spec(entity)
        select = ",".join(spec.select)
        response = await self._send(
            "POST",
            self._collection(spec),
            params={"lean": "1"},
            body=body,
            headers={"properties": select},  # answer with the new record
        )
        record = _decode(response)
        location = response.headers.get("location")
        if not record and location:  # 201 with only a Location: read the new record
            rest_id = location.rstrip("/").rsplit("/", 1)[-1]
            record = await self._json(
                "GET",
                f"{self._collection(spec)}/{rest_id}",
                params={"lean": "1", "oslc.select": select},
            )
        if not record:
            raise ConnectorError(
                FailureKind.PROVIDER_ERROR, f"{SYSTEM} did not say which record it created"
            )
        return record

    async def update(
        self, entity: str, remote_id: str, fields: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Update a work order (`siteid:wonum`); returns Maximo's record (lean JSON)."""
        if entity != "work_orders":
            raise ValueError(f"{SYSTEM} cannot update {entity}")
        body = _work_order_body(fields, creating=False)
        site, _, wonum = str(remote_id).partition(":")
        if not site or not wonum:
            raise ValueError(f"A {SYSTEM} work order id is siteid:wonum, got {remote_id!r}")
        spec = self._spec(entity)
        href = await self._href(spec, {"siteid": site, "wonum": wonum}, remote_id)
        headers = {
            "x-method-override": "PATCH",
            "patchtype": "MERGE",  # add the work log entry, keep the others
            "properties": ",".join(spec.select),
        }
        record = await self._json("POST", href, params={"lean": "1"}, body=body, headers=headers)
        if not record:  # 204: the server ignored `properties`
            record = await self._json(
                "GET", href, params={"lean": "1", "oslc.select": ",".join(spec.select)}
            )
        return record

    async def _href(self, spec: Spec, key: Mapping[str, str], label: str) -> str:
        """The resource URL of the record with this key (Maximo addresses records by rest id)."""
        where = " and ".join(f'{name}="{_quote(value)}"' for name, value in key.items())
        body = await self._json(
            "GET",
            self._collection(spec),
            params={
                "lean": "1",
                "oslc.select": ",".join(key),
                "oslc.where": where,
                "oslc.pageSize": "20",
            },
        )
        members, _ = _members(body)
        # `=` may match as LIKE on some servers: take the exact key only.
        exact = [m for m in members if all(str(m.get(k)) == v for k, v in key.items())]
        href = exact[0].get("href") if exact else None
        if not isinstance(href, str) or "/" not in href:
            raise ConnectorError(
                FailureKind.PROVIDER_ERROR,
                f"No {spec.object_structure} record {label} in {SYSTEM}",
                status_code=404,
            )
        # The rest id is the last segment; keep our own URL (proxies may rewrite hosts).
        return f"{self._collection(spec)}/{href.rstrip('/').rsplit('/', 1)[-1]}"


# -- helpers for listing and writing --------------------------------------------------------


def _classify(response: httpx.Response) -> ConnectorError:
    """Maximo's `{"Error": {"reasonCode", "message", "statusCode"}}`, gateways' 429/503."""
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("Error") if isinstance(body, Mapping) else None
    reason = str(error.get("reasonCode") or "") if isinstance(error, Mapping) else ""
    status = response.status_code
    if isinstance(error, Mapping) and response.is_success:
        try:
            status = int(str(error.get("statusCode")))
        except ValueError:
            status = 400
    message = error_message(response)
    if reason in AUTH_REASONS or status == 401:
        # A revoked or expired key answers 400 BMXAA9549E: not a bad request, a bad key.
        return ConnectorError(FailureKind.AUTH, message, status_code=status)
    if reason in PERMISSION_REASONS or status == 403:
        return ConnectorError(FailureKind.PERMISSION_DENIED, message, status_code=status)
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if status == 429 or (status == 503 and retry_after is not None):
        return ConnectorError(
            FailureKind.RATE_LIMITED,
            f"{SYSTEM} is throttling requests: {message}",
            status_code=status,
            retry_after=retry_after,
        )
    if response.is_success:
        return ConnectorError(FailureKind.PROVIDER_ERROR, message, status_code=status)
    return classify_response(response, system=SYSTEM)


def _decode(response: httpx.Response) -> dict[str, Any]:
    """The JSON object of a 2xx answer ({} when empty); an `Error` inside it raises."""
    if not response.content.strip():
        return {}
    try:
        body = response.json()
    except ValueError as exc:
        raise ConnectorError(
            FailureKind.PROVIDER_ERROR,
            f"{SYSTEM} answered {response.status_code} with a body that is not JSON",
            status_code=response.status_code,
        ) from exc
    if not isinstance(body, dict):
        raise ConnectorError(FailureKind.PROVIDER_ERROR, f"{SYSTEM} answered with unexpected JSON")
    if isinstance(body.get("Error"), Mapping):  # an error inside a 2xx answer
        raise _classify(response)
    return body


def _members(body: Mapping[str, Any]) -> tuple[list[Mapping[str, Any]], bool]:
    members = body.get("member")
    info = body.get("responseInfo")
    if not isinstance(members, list) or not all(isinstance(m, Mapping) for m in members):
        raise ConnectorError(
            FailureKind.PROVIDER_ERROR, f"{SYSTEM} answered a collection without a member list"
        )
    next_page = info.get("nextPage") if isinstance(info, Mapping) else None
    return members, bool(next_page)


def _record_id(spec: Spec, member: Mapping[str, Any]) -> int:
    value = member.get(spec.id_attr)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConnectorError(
            FailureKind.PROVIDER_ERROR, f"{SYSTEM} answered a record without {spec.id_attr}"
        )
    try:
        return int(value)
    except ValueError as exc:
        raise ConnectorError(
            FailureKind.PROVIDER_ERROR, f"{SYSTEM} answered a non-numeric {spec.id_attr}"
        ) from exc


def _full_key(spec: Spec, member: Mapping[str, Any]) -> tuple[datetime | None, int]:
    changed = None
    if spec.change_attr is not None:
        changed = parse_datetime(member.get(spec.change_attr))
        if changed is None:
            raise ConnectorError(
                FailureKind.PROVIDER_ERROR,
                f"{SYSTEM} answered a record without a readable {spec.change_attr}",
            )
    return changed, _record_id(spec, member)


def _quote(value: str) -> str:
    if '"' in value:
        raise ValueError(f"{SYSTEM} keys cannot contain double quotes: {value!r}")
    return value


def _split_key(value: Any, parts: int, label: str) -> list[str]:
    pieces = str(value).split(":", parts - 1)
    if len(pieces) != parts or not all(pieces):
        shape = {2: "siteid:number", 3: "siteid:storeroom:itemnum"}.get(parts, "key")
        raise ValueError(f"{label} must be a {SYSTEM} key {shape}, got {value!r}")
    return pieces


def _check_fields(fields: Mapping[str, Any], allowed: frozenset[str], action: str) -> None:
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise ValueError(f"{SYSTEM} cannot {action} these fields: {', '.join(unknown)}")


def _enum(mapping: Mapping[str, Any], value: Any, label: str) -> Any:
    if value not in mapping:
        raise ValueError(f"{label} {value!r} is not one of {sorted(mapping)}")
    return mapping[value]


_WORK_ORDER_CREATE = frozenset({
    "title", "description", "status", "priority", "type", "asset_ids", "location_id",
    "assignee_user_ids", "due_at", "notes",
})  # fmt: skip
_WORK_ORDER_UPDATE = frozenset({
    "title", "description", "status", "priority", "assignee_user_ids", "due_at", "notes",
})  # fmt: skip


def _work_order_body(fields: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
    """Unified work order fields -> MXAPIWODETAIL attributes."""
    _check_fields(fields, _WORK_ORDER_CREATE if creating else _WORK_ORDER_UPDATE, "write")
    body: dict[str, Any] = {}
    sites: set[str] = set()
    if "title" in fields:
        title = fields["title"]
        if not isinstance(title, str) or not title.strip():
            raise ValueError("title must be a non-empty string")
        if len(title) > MAX_TITLE:
            raise ValueError(f"{SYSTEM} work order titles hold at most {MAX_TITLE} characters")
        body["description"] = title
    if "description" in fields:
        body["description_longdescription"] = fields["description"]
    if fields.get("status") is not None:
        status = fields["status"]
        if not (creating and status == "OPEN"):  # a new work order starts as WAPPR
            body["status"] = _enum(WORK_ORDER_STATUS_OUT, status, "status")
    if "priority" in fields:
        body["wopriority"] = _enum(PRIORITY_OUT, fields["priority"] or "NONE", "priority")
    if fields.get("type") is not None:
        worktype = _enum(WORK_TYPE_OUT, fields["type"], "type")
        if worktype:
            body["worktype"] = worktype
    if fields.get("asset_ids"):
        assets = list(fields["asset_ids"])
        if len(assets) > 1:
            raise ValueError(f"{SYSTEM} work orders hold one asset, got {len(assets)}")
        site, assetnum = _split_key(assets[0], 2, "asset_ids")
        body["assetnum"] = assetnum
        sites.add(site)
    if fields.get("location_id") is not None:
        site, location = _split_key(fields["location_id"], 2, "location_id")
        body["location"] = location
        sites.add(site)
    if len(sites) > 1:
        raise ValueError("the asset and the location are in different Maximo sites")
    if sites:
        body["siteid"] = sites.pop()  # else Maximo uses the user's default insert site
    if "assignee_user_ids" in fields:
        people = [str(p) for p in fields["assignee_user_ids"] or []]
        if len(people) > 2:
            raise ValueError(f"{SYSTEM} work orders take a lead and an owner: at most 2 people")
        body["lead"] = people[0] if people else None
        body["owner"] = people[1] if len(people) > 1 else None
    if "due_at" in fields:
        body["targcompdate"] = _iso(fields["due_at"])
    if fields.get("notes"):
        notes = str(fields["notes"])
        first_line = notes.strip().splitlines()[0] if notes.strip() else notes
        body["worklog"] = [
            {
                "logtype": "WORK",
                "description": first_line[:MAX_TITLE],
                "description_longdescription": notes,
            }
        ]
    return body


_PURCHASE_ORDER_CREATE = frozenset({"vendor_id", "status", "currency", "due_at", "lines"})


def _purchase_order_body(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Unified purchase order fields -> MXAPIPO attributes with `poline` children."""
    _check_fields(fields, _PURCHASE_ORDER_CREATE, "write")
    if not fields.get("vendor_id"):
        raise ValueError("vendor_id is required")
    _, company = _split_key(fields["vendor_id"], 2, "vendor_id")
    body: dict[str, Any] = {"vendor": company}
    status = _enum(PO_STATUS_OUT, fields.get("status") or "PENDING_APPROVAL", "status")
    if status:
        body["status"] = status
    if fields.get("currency"):
        body["currencycode"] = str(fields["currency"]).upper()
    if fields.get("due_at") is not None:
        body["requireddate"] = _iso(fields["due_at"])
    lines = fields.get("lines")
    if not isinstance(lines, list) or not lines:
        raise ValueError("lines must be a non-empty list")
    polines = []
    sites: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not isinstance(line, Mapping) or line.get("qty_ordered") is None:
            raise ValueError("each line needs a qty_ordered")
        poline: dict[str, Any] = {"polinenum": number, "orderqty": _number(line["qty_ordered"])}
        if line.get("unit_price") is not None:
            poline["unitcost"] = _number(line["unit_price"])
        if line.get("part_id") is not None:
            site, storeroom, itemnum = _split_key(line["part_id"], 3, "part_id")
            poline.update(
                {"linetype": "ITEM", "itemnum": itemnum, "storeloc": storeroom, "tositeid": site}
            )
            sites.append(site)
        elif line.get("description"):
            poline["linetype"] = "MATERIAL"  # a non-stock line described in words
        else:
            raise ValueError("each line needs a part_id or a description")
        if line.get("description") is not None:
            poline["description"] = str(line["description"])[:MAX_TITLE]
        polines.append(poline)
    if sites:
        body["siteid"] = sites[0]  # the purchasing site: where the stock goes
    body["poline"] = polines
    return body


__all__ = ["MaximoConnector", "record_key"]
