"""An IBM Maximo simulator over the shared sandbox state (the OSLC / REST JSON API).

It presents `SandboxState`'s data the way Maximo's object structure API does:

* routes under `/maximo/api`, `/maximo/oslc`, `/api` and `/oslc` (the first two as on a real
  server; `/api` answers lean JSON by default, `/oslc` namespaced JSON unless `lean=1`):
  `GET whoami`, `GET|POST os/<object structure>`, `GET|POST os/<object structure>/<rest id>`;
* object structures `mxapiwodetail`, `mxapiasset`, `mxapilocations`, `mxapiinventory`,
  `mxapipo` (with `poline`), `mxapivendor` (also as `mxapicompany`), `mxapiperson`;
* auth by an `apikey` header (or query parameter): a missing key answers 401 BMXAA0021E, an
  unknown or revoked one 400 BMXAA9549E, as Maximo does;
* `oslc.select` (`*`, field lists, `child{...}`, `status_maxvalue`), `oslc.where` (`=`, `!=`,
  `<`, `<=`, `>`, `>=`, `in [...]`, `%` patterns, `"*"` null checks, joined by `and`),
  `oslc.orderBy` (`+attr,-attr`; an unencoded `+` arrives as a space and is refused),
  `oslc.pageSize` + `pageno` with `responseInfo.nextPage` / `totalPages`, `collectioncount`,
  `_dropnulls` (nulls are dropped by default) and `relativeuri`;
* composite keys: sites and the organization derive from the sandbox's SITE locations, rest ids
  are `_` + base64 of the key values, timestamps carry the server's offset (-05:00);
* creates (`POST` + `properties` header: 201 with the record, or an empty 201 with `Location`)
  of work orders and purchase orders, and work order updates (`POST` on the member with
  `x-method-override: PATCH`: 204, or 200 with the record when `properties` is sent);
* no deletion flag: deleted sandbox records simply stop being listed;
* throttling as an API gateway does it (429 + `Retry-After`), and an outage as the router
  answers it (503 HTML page), or a dropped connection.

Credentials, fault switches and the `/_sandbox/*` control routes are the sandbox's own (the
route handlers are imported), so the same tools drive every simulated system.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from maintlink.sandbox import app as sandbox_app
from maintlink.sandbox.data import ID_BASE, Record, format_ts, parse_ts
from maintlink.sandbox.state import Credential, Faults, SandboxError, SandboxState

PREFIXES = ("/maximo/api", "/maximo/oslc", "/api", "/oslc")  # longest first
ORG = "SANDBOX"
ITEMSET = "SET1"
SERVER_TZ = timezone(timedelta(hours=-5))
INTEGRATION_USER = "MXINTADM"
AUTO_PAGE_SIZE = 1000  # the object structures' auto-paging threshold
MAX_PAGE_SIZE = 1000  # mxe.oslc.maxpagesize
CREDENTIAL_KEY = "maximo.credential"
HIDDEN = "__"  # prefix of the precise values behind shown attributes
MAX_BODY_BYTES = 1_000_000

# object structure -> sandbox entity
OBJECT_STRUCTURES: dict[str, str] = {
    "mxapiwodetail": "work_orders",
    "mxapiasset": "assets",
    "mxapilocations": "locations",
    "mxapiinventory": "parts",
    "mxapipo": "purchase_orders",
    "mxapivendor": "vendors",
    "mxapicompany": "vendors",
    "mxapiperson": "users",
}
# entity -> the Maximo object (MBO) behind it, for messages
MBO = {
    "work_orders": "WORKORDER",
    "assets": "ASSET",
    "locations": "LOCATIONS",
    "parts": "INVENTORY",
    "purchase_orders": "PO",
    "vendors": "COMPANIES",
    "users": "PERSON",
}

# -- vocabularies: sandbox values <-> Maximo values -------------------------------------------

WO_STATUS_TO_SANDBOX = {
    "WAPPR": "OPEN",
    "APPR": "OPEN",
    "WSCH": "OPEN",
    "WMATL": "ON_HOLD",
    "WPCOND": "ON_HOLD",
    "INPRG": "IN_PROGRESS",
    "COMP": "DONE",
    "CLOSE": "DONE",
    "CAN": "CANCELED",
}
PRIORITY_TO_SANDBOX = {1: "HIGH", 2: "HIGH", 3: "MEDIUM", 4: "LOW"}  # 5 and up: LOW
PRIORITY_FROM_SANDBOX = {"HIGH": 2, "MEDIUM": 3, "LOW": 4}  # NONE: no priority
WORKTYPE_FROM_SANDBOX = {
    "CORRECTIVE": "CM",
    "PREVENTIVE": "PM",
    "INSPECTION": "INSP",
    "SAFETY": "SAF",
}
WORKTYPE_TO_SANDBOX = {v: k for k, v in WORKTYPE_FROM_SANDBOX.items()}
ASSET_STATUS = {"ONLINE": "OPERATING", "OFFLINE": "NOT READY", "DECOMMISSIONED": "DECOMMISSIONED"}
ASSET_PRIORITY = {"HIGH": 1, "MEDIUM": 2, "LOW": 3}
# Maximo has no draft or rejected purchase order: both read as waiting / cancelled.
PO_STATUS = {
    "PENDING": "WAPPR",
    "REQUESTED": "WAPPR",
    "APPROVED": "APPR",
    "DECLINED": "CAN",
    "PARTIALLY_FULFILLED": "INPRG",
    "COMPLETED": "CLOSE",
    "CANCELED": "CAN",
}
PO_RECEIPTS = {"PARTIALLY_FULFILLED": "PARTIAL", "COMPLETED": "COMPLETE"}
PO_STATUS_TO_SANDBOX = {"WAPPR": "REQUESTED", "APPR": "APPROVED"}  # what a create may ask


class MaximoError(Exception):
    """A refusal in Maximo's shape: `{"Error": {"reasonCode", "message", "statusCode"}}`."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message

    def response(
        self, api_base: str = "", headers: Mapping[str, str] | None = None
    ) -> JSONResponse:
        body = {
            "Error": {
                "extendedError": {"moreInfo": {"href": f"{api_base}/error/messages/{self.reason}"}},
                "reasonCode": self.reason,
                "message": f"{self.reason} - {self.message}",
                "statusCode": str(self.status),
            }
        }
        return JSONResponse(body, self.status, headers=dict(headers or {}))


def _bad_request(message: str) -> MaximoError:
    return MaximoError(400, "BMXAA4129E", message)


def _not_found(os_name: str, rest_id: str) -> MaximoError:
    return MaximoError(
        404,
        "BMXAA8727E",
        f"The OSLC resource {os_name.upper()} with the ID {rest_id} was not found as it does "
        "not exist in the system. In the database, verify whether the resource for the ID "
        "exists.",
    )


def _query_error(detail: str) -> MaximoError:
    return MaximoError(
        400,
        "BMXAA8744E",
        "The OSLC query was not parsed. Ensure that the query in the HTTP request follows the "
        f"correct syntax of the OSLC query specification. {detail}",
    )


# -- values -----------------------------------------------------------------------------------


def server_time(value: str | None) -> str | None:
    """A sandbox timestamp as Maximo writes it: seconds, with the server's UTC offset."""
    if not value:
        return None
    return parse_ts(value).astimezone(SERVER_TZ).isoformat(timespec="seconds")


def rest_id(*key: str) -> str:
    raw = "/".join(key).encode()
    return "_" + base64.urlsafe_b64encode(raw).decode().replace("=", "-")


def _custom_attribute(label: str) -> str:
    """A sandbox custom field label as a customer's custom Maximo attribute (`cx` prefix)."""
    return "cx" + re.sub(r"[^a-z0-9]", "", label.lower())


def _seq(record: Record, entity: str) -> int:
    return int(record["id"]) - ID_BASE[entity]


def _tail(name: str, fallback: str) -> str:
    parts = name.split()
    return parts[-1] if parts else fallback


# -- one consistent read of the state ---------------------------------------------------------


@dataclass
class Extras:
    """Maximo values the sandbox data cannot hold, per work order written through the API.

    Each remembers the sandbox value it stood for: once the sandbox record moves on (the
    simulated changes), the default presentation takes over again.
    """

    values: dict[tuple[str, str], dict[str, tuple[Any, Any]]]

    def get(self, entity: str, record_id: str, name: str, sandbox_value: Any) -> Any:
        value, stood_for = self.values.get((entity, record_id), {}).get(name, (None, None))
        return value if value is not None and stood_for == sandbox_value else None

    def put(self, entity: str, record_id: str, name: str, value: Any, sandbox_value: Any) -> None:
        self.values.setdefault((entity, record_id), {})[name] = (value, sandbox_value)


class View:
    """Sites, keys and presenters over the current state (build one per request)."""

    def __init__(self, state: SandboxState, extras: Extras) -> None:
        self.records = state.data.records
        self.extras = extras
        self.site_ids: dict[str, str] = {}
        taken: dict[str, int] = {}
        locations = self.records["locations"]
        for record_id in sorted(locations, key=int):
            record = locations[record_id]
            if record["type"] != "SITE":
                continue
            # Site ids hold 8 characters: the city, numbered when a city has several sites.
            city = re.sub(r"[^A-Z]", "", record["name"].split(" ")[0].upper()) or "SITE"
            taken[city] = taken.get(city, 0) + 1
            count = taken[city]
            self.site_ids[record_id] = city[:8] if count == 1 else f"{city[:6]}{count}"
        self.default_site = next(iter(self.site_ids.values()), "MAIN")

    # -- keys and sites ------------------------------------------------------------------------

    def live(self, entity: str, record_id: Any) -> Record | None:
        record = self.records[entity].get(str(record_id)) if record_id else None
        return None if record is None or record.get("deleted") else record

    def any(self, entity: str, record_id: Any) -> Record | None:
        """A record even if deleted: references keep pointing at it, as in the sandbox."""
        return self.records[entity].get(str(record_id)) if record_id else None

    def site_of_location(self, location_id: Any) -> str:
        record = self.any("locations", location_id)
        for _ in range(50):  # parents only point backwards, but never loop forever
            if record is None:
                break
            if record["type"] == "SITE":
                return self.site_ids.get(record["id"], self.default_site)
            record = self.any("locations", record.get("parentId"))
        return self.default_site

    def site_of_asset(self, asset: Record) -> str:
        return self.site_of_location(asset.get("locationId"))

    def site_of_work_order(self, record: Record) -> str:
        site = self.extras.get("work_orders", record["id"], "siteid", "any")
        if site:
            return str(site)
        asset = self.any("assets", record.get("assetId"))
        if asset is not None:
            return self.site_of_asset(asset)
        return self.site_of_location(record.get("locationId"))

    def site_of_part(self, part: Record) -> str:
        return self.site_of_location(part.get("locationId"))

    def site_of_purchase_order(self, record: Record) -> str:
        for item in record.get("items") or []:
            part = self.any("parts", item.get("partId"))
            if part is not None:
                return self.site_of_part(part)
        return self.default_site

    @staticmethod
    def wonum(record: Record) -> str:
        return str(1000 + _seq(record, "work_orders"))

    @staticmethod
    def ponum(record: Record) -> str:
        return str(1000 + _seq(record, "purchase_orders"))

    @staticmethod
    def assetnum(record: Record) -> str:
        return _tail(record.get("name") or "", str(10_000 + _seq(record, "assets")))

    @staticmethod
    def personid(record: Record) -> str:
        last = re.sub(r"[^A-Za-z]", "", record.get("lastName") or "") or "PERSON"
        return f"{last}{_seq(record, 'users')}".upper()

    def _code(self, entity: str, record_id: Any, key: str) -> str | None:
        record = self.any(entity, record_id)
        return None if record is None else record.get(key)

    def _person(self, user_id: Any) -> str | None:
        record = self.any("users", user_id)
        return None if record is None else self.personid(record)

    # -- presenters: (key values, Maximo record) -----------------------------------------------

    def present(self, entity: str, record: Record) -> tuple[tuple[str, ...], dict[str, Any]]:
        key, body = PRESENTERS[entity](self, record)
        if "changedate" in body:
            # The database keeps milliseconds the JSON does not show; filters and sorting use
            # them, as Maximo's SQL does. Hidden (`__`) attributes are never sent.
            when = parse_ts(record["updatedAt"]).astimezone(SERVER_TZ)
            body[f"{HIDDEN}changedate"] = when.isoformat(timespec="milliseconds")
        return key, body

    def work_order(self, record: Record) -> tuple[tuple[str, ...], dict[str, Any]]:
        rid = record["id"]
        seq = _seq(record, "work_orders")
        site = self.site_of_work_order(record)
        sandbox_status = record["status"]
        status = self.extras.get("work_orders", rid, "status", sandbox_status) or {
            "OPEN": "WAPPR" if seq % 2 else "APPR",
            "IN_PROGRESS": "INPRG",
            "ON_HOLD": "WMATL",
            "DONE": "CLOSE" if seq % 3 == 0 else "COMP",
            "CANCELED": "CAN",
        }.get(sandbox_status, sandbox_status)
        priority = self.extras.get("work_orders", rid, "wopriority", record.get("priority"))
        if priority is None:
            priority = PRIORITY_FROM_SANDBOX.get(record.get("priority") or "")
        category = (record.get("categories") or [None])[0]
        asset = self.any("assets", record.get("assetId"))
        assignees = [self._person(uid) for uid in record.get("assigneeIds") or []]
        wonum = self.wonum(record)
        body: dict[str, Any] = {
            "workorderid": int(rid),
            "wonum": wonum,
            "siteid": site,
            "orgid": ORG,
            "description": record.get("title"),
            "description_longdescription": record.get("description"),
            "status": status,
            "status_maxvalue": status,  # no synonyms defined in the simulator
            "statusdate": server_time(record["updatedAt"]),
            "wopriority": priority,
            "worktype": WORKTYPE_FROM_SANDBOX.get(category, category) if category else None,
            "woclass": "WORKORDER",
            "istask": False,
            "assetnum": self.assetnum(asset) if asset else None,
            "location": self._code("locations", record.get("locationId"), "code"),
            "lead": assignees[0] if assignees else None,
            "owner": assignees[1] if len(assignees) > 1 else None,
            "persongroup": None,
            "parent": None,
            "reportdate": server_time(record["createdAt"]),
            "targcompdate": server_time(record.get("dueDate")),
            "actstart": server_time(record.get("startedAt")),
            "actfinish": server_time(record.get("completedAt")),
            "changedate": server_time(record["updatedAt"]),
            "changeby": INTEGRATION_USER,
            "worklog": [
                {
                    "worklogid": int(rid) * 10 + 1,
                    "logtype": "WORK",
                    "description": (record["notes"].strip().splitlines() or [""])[0][:100],
                    "description_longdescription": record["notes"],
                    "createby": INTEGRATION_USER,
                }
            ]
            if record.get("notes")
            else [],
        }
        for label, value in (record.get("customFields") or {}).items():
            body[_custom_attribute(label)] = value
        return (wonum, site), body

    def asset(self, record: Record) -> tuple[tuple[str, ...], dict[str, Any]]:
        site = self.site_of_asset(record)
        parent = self.any("assets", record.get("parentId"))
        if parent is not None and self.site_of_asset(parent) != site:
            parent = None  # Maximo hierarchies stay within a site
        vendors = record.get("vendorIds") or []
        manufacturer = re.sub(r"[^A-Z0-9]", "", (record.get("manufacturer") or "").upper())
        assetnum = self.assetnum(record)
        body: dict[str, Any] = {
            "assetid": int(record["id"]),
            "assetnum": assetnum,
            "siteid": site,
            "orgid": ORG,
            "description": record.get("name"),
            "description_longdescription": record.get("description"),
            "status": ASSET_STATUS.get(record.get("status", ""), "NOT READY"),
            "status_maxvalue": ASSET_STATUS.get(record.get("status", ""), "NOT READY"),
            "serialnum": record.get("serialNumber"),
            "assettag": record.get("barcode"),
            "manufacturer": manufacturer or None,
            "vendor": self._code("vendors", vendors[0], "code") if vendors else None,
            "parent": self.assetnum(parent) if parent else None,
            "location": self._code("locations", record.get("locationId"), "code"),
            "priority": ASSET_PRIORITY.get(record.get("criticality") or ""),
            "isrunning": record.get("status") == "ONLINE",
            "changedate": server_time(record["updatedAt"]),
            "changeby": INTEGRATION_USER,
        }
        for label, value in (record.get("customFields") or {}).items():
            body[_custom_attribute(label)] = value
        return (assetnum, site), body

    def location(self, record: Record) -> tuple[tuple[str, ...], dict[str, Any]]:
        site = self.site_of_location(record["id"])
        parent = self.any("locations", record.get("parentId"))
        address = record.get("address")
        street, _, city = (address or "").partition(", ")
        body: dict[str, Any] = {
            "locationsid": int(record["id"]),
            "location": record["code"],
            "siteid": site,
            "orgid": ORG,
            "description": record.get("name"),
            "type": "STOREROOM" if record.get("type") == "STOREROOM" else "OPERATING",
            "status": "OPERATING",
            "changedate": server_time(record["updatedAt"]),
            "changeby": INTEGRATION_USER,
            "lochierarchy": [
                {
                    "systemid": "PRIMARY",
                    "parent": parent["code"] if parent else None,
                    "siteid": site,
                }
            ],
            "serviceaddress": [
                {"formattedaddress": address, "streetaddress": street, "city": city or None}
            ]
            if address
            else [],
        }
        return (record["code"], site), body

    def part(self, record: Record) -> tuple[tuple[str, ...], dict[str, Any]]:
        site = self.site_of_part(record)
        storeroom = self._code("locations", record.get("locationId"), "code")
        seq = _seq(record, "parts")
        vendors = record.get("vendorIds") or []
        binnum = f"B-{seq % 20 + 1:02d}"
        body: dict[str, Any] = {
            "inventoryid": int(record["id"]),
            "itemnum": record["partNumber"],
            "itemsetid": ITEMSET,
            "location": storeroom,
            "siteid": site,
            "orgid": ORG,
            "description": record.get("name"),
            "issueunit": (record.get("unit") or "").upper() or None,
            "orderunit": (record.get("unit") or "").upper() or None,
            "curbal": record.get("availableQuantity"),
            "minlevel": record.get("minimumQuantity"),
            "orderqty": (record.get("minimumQuantity") or 0) + 5,
            "reservedqty": record.get("reservedQuantity"),
            "avgcost": record.get("unitCost"),
            "lastcost": record.get("unitCost"),
            "vendor": self._code("vendors", vendors[0], "code") if vendors else None,
            "binnum": binnum,
            "status": "ACTIVE",
            "statusdate": server_time(record["createdAt"]),
            "invbalances": [
                {
                    "invbalancesid": int(record["id"]) * 10 + 1,
                    "binnum": binnum,
                    "curbal": record.get("availableQuantity"),
                    "location": storeroom,
                    "siteid": site,
                }
            ],
        }
        return (record["partNumber"], ITEMSET, storeroom or "", site), body

    def purchase_order(self, record: Record) -> tuple[tuple[str, ...], dict[str, Any]]:
        site = self.site_of_purchase_order(record)
        lines = []
        for number, item in enumerate(record.get("items") or [], start=1):
            part = self.any("parts", item.get("partId"))
            quantity, unit = item.get("quantity") or 0, item.get("unitCost") or 0
            lines.append(
                {
                    "polineid": int(record["id"]) * 1000 + number,
                    "polinenum": number,
                    "linetype": "ITEM" if part else "MATERIAL",
                    "itemnum": part["partNumber"] if part else None,
                    "itemsetid": ITEMSET if part else None,
                    "storeloc": self._code("locations", part.get("locationId"), "code")
                    if part
                    else None,
                    "tositeid": self.site_of_part(part) if part else site,
                    "description": item.get("description"),
                    "orderqty": quantity,
                    "receivedqty": item.get("quantityReceived") or 0,
                    "unitcost": unit,
                    "linecost": round(float(quantity) * float(unit), 2),
                    "orderunit": ((part.get("unit") or "").upper() or None) if part else "EACH",
                }
            )
        ponum = self.ponum(record)
        body: dict[str, Any] = {
            "poid": int(record["id"]),
            "ponum": ponum,
            "revisionnum": 0,
            "siteid": site,
            "orgid": ORG,
            "description": f"Order {record.get('number')}",
            "status": PO_STATUS.get(record["status"], record["status"]),
            "status_maxvalue": PO_STATUS.get(record["status"], record["status"]),
            "statusdate": server_time(record["updatedAt"]),
            "receipts": PO_RECEIPTS.get(record["status"], "NONE"),
            "vendor": self._code("vendors", record.get("vendorId"), "code"),
            "orderdate": server_time(record["createdAt"]),
            "requireddate": server_time(record.get("dueDate")),
            "currencycode": record.get("currency"),
            "pretaxtotal": record.get("totalCost"),
            "totalcost": record.get("totalCost"),
            "changedate": server_time(record["updatedAt"]),
            "changeby": INTEGRATION_USER,
            "poline": lines,
        }
        return (ponum, "0", site), body

    def vendor(self, record: Record) -> tuple[tuple[str, ...], dict[str, Any]]:
        street, _, city = (record.get("address") or "").partition(", ")
        contacts = [c for c in record.get("contacts") or [] if isinstance(c, Mapping)]
        body: dict[str, Any] = {
            "companiesid": int(record["id"]),
            "company": record["code"],
            "orgid": ORG,
            "name": record.get("name"),
            "type": "V",
            "disabled": False,
            "address1": street or None,
            "address2": city or None,
            "phone": record.get("phone"),
            "contact": contacts[0].get("name") if contacts else None,
            "currencycode": "USD",
            "changedate": server_time(record["updatedAt"]),
            "changeby": INTEGRATION_USER,
            "compcontact": [
                {
                    "contact": c.get("name"),
                    "position": None,
                    "voicephone": c.get("phone"),
                    "email": c.get("email"),
                }
                for c in contacts
            ],
        }
        return (record["code"], ORG), body

    def user(self, record: Record) -> tuple[tuple[str, ...], dict[str, Any]]:
        personid = self.personid(record)
        first, last = record.get("firstName"), record.get("lastName")
        body: dict[str, Any] = {
            "personuid": int(record["id"]),
            "personid": personid,
            "firstname": first,
            "lastname": last,
            "displayname": " ".join(p for p in (first, last) if p) or personid,
            "primaryemail": record.get("email"),
            "primaryphone": record.get("phoneNumber"),
            "title": record.get("jobTitle"),
            "status": "ACTIVE" if record.get("isActive", True) else "INACTIVE",
            "statusdate": server_time(record["createdAt"]),
        }
        return (personid,), body


PRESENTERS: dict[str, Callable[[View, Record], tuple[tuple[str, ...], dict[str, Any]]]] = {
    "work_orders": View.work_order,
    "assets": View.asset,
    "locations": View.location,
    "parts": View.part,
    "purchase_orders": View.purchase_order,
    "vendors": View.vendor,
    "users": View.user,
}


# -- oslc.where -------------------------------------------------------------------------------

_CLAUSE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(>=|<=|!=|=|>|<|\s+in\s+)\s*(.+?)\s*$", re.I | re.S)


def _split(text: str, separator: str) -> list[str]:
    """Split at `separator` outside quotes, brackets and braces."""
    parts: list[str] = []
    depth, quoted, start, i = 0, False, 0, 0
    lowered = text.lower()
    while i < len(text):
        char = text[i]
        if char == '"':
            quoted = not quoted
        elif not quoted and char in "[{":
            depth += 1
        elif not quoted and char in "]}":
            depth -= 1
        elif not quoted and depth == 0 and lowered.startswith(separator, i):
            parts.append(text[start:i])
            i += len(separator)
            start = i
            continue
        i += 1
    if quoted or depth:
        raise _query_error("Unbalanced quotes or brackets.")
    parts.append(text[start:])
    return parts


def _literal(text: str) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise _query_error(f"Encountered {text!r}: a value must be quoted or numeric.") from None


Condition = tuple[str, str, Any]


def parse_where(text: str | None) -> list[Condition]:
    if not text or not text.strip():
        return []
    conditions = []
    for clause in _split(text, " and "):
        match = _CLAUSE.match(clause)
        if not match:
            raise _query_error(f"Encountered {clause.strip()!r}.")
        name, op, raw = match.group(1).lower(), match.group(2).strip().lower(), match.group(3)
        if op == "in":
            if not (raw.startswith("[") and raw.endswith("]")):
                raise _query_error("in takes a list: in [...].")
            value: Any = [_literal(v) for v in _split(raw[1:-1], ",") if v.strip()]
        else:
            value = _literal(raw)
        conditions.append((name, op, value))
    return conditions


def _as_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) < 10 or value[4:5] != "-":
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=SERVER_TZ)


def _compare(actual: Any, op: str, expected: Any) -> bool:
    if op == "in":
        return any(_compare(actual, "=", item) for item in expected)
    if expected == "*" and op in ("=", "!="):
        return (actual is not None) == (op == "=")
    if actual is None:
        return op == "!="
    left: Any = actual
    right: Any = expected
    when = _as_time(actual)
    if when is not None:
        right = _as_time(expected)
        if right is None:
            raise _query_error(f"{expected!r} is not an ISO 8601 date and time.")
        left = when
    elif isinstance(actual, bool):
        right = bool(expected)
    elif isinstance(actual, int | float):
        try:
            right = float(expected)
        except (TypeError, ValueError):
            raise _query_error(f"{expected!r} is not a number.") from None
    else:
        left, right = str(actual), str(expected)
        if op in ("=", "!=") and "%" in right:
            pattern = ".*".join(re.escape(p) for p in right.split("%"))
            found = re.fullmatch(pattern, left, re.I | re.S) is not None
            return found == (op == "=")
    return {
        "=": left == right,
        "!=": left != right,
        ">": left > right,
        ">=": left >= right,
        "<": left < right,
        "<=": left <= right,
    }[op]


def matches(record: Mapping[str, Any], conditions: list[Condition]) -> bool:
    for name, op, value in conditions:
        if name not in record:
            raise _query_error(f"The attribute {name.upper()} is not part of the resource.")
        if not _compare(record.get(f"{HIDDEN}{name}", record[name]), op, value):
            return False
    return True


# -- oslc.select and oslc.orderBy -------------------------------------------------------------

Selection = dict[str, "Selection | None"]  # attribute -> child selection (None: the value)
ALL: Selection = {"*": None}


def parse_select(text: str | None) -> Selection | None:
    """None when nothing is selected (members are then only links)."""
    if text is None or not text.strip():
        return None
    selection: Selection = {}
    for part in _split(text, ","):
        part = part.strip()
        if not part:
            continue
        if "{" in part and part.endswith("}"):
            name, _, inner = part[:-1].partition("{")
            selection[name.strip().lower()] = parse_select(inner) or ALL
        else:
            selection[part.lower()] = None
    return selection


def project(record: Mapping[str, Any], selection: Selection) -> dict[str, Any]:
    everything = "*" in selection
    out: dict[str, Any] = {}
    for name, value in record.items():
        if name.startswith(HIDDEN):
            continue
        if name == "status_maxvalue" and "status_maxvalue" not in selection:
            continue  # a virtual attribute: only when asked for by name
        if not everything and name not in selection:
            continue
        child = selection.get(name)
        if isinstance(value, list):
            out[name] = [project(v, child or ALL) for v in value if isinstance(v, Mapping)]
        else:
            out[name] = value
    return out


def parse_order(text: str | None) -> list[tuple[str, bool]]:
    if not text:
        return []
    order = []
    for part in text.split(","):
        if not part or part[0] not in "+-":
            # An unencoded `+` reaches the server as a space: a classic client mistake.
            raise _query_error(
                f"Encountered {part.strip()!r}: every oslc.orderBy attribute needs a + or - "
                "sign (URL-encode the + as %2B)."
            )
        order.append((part[1:].strip().lower(), part[0] == "-"))
    return order


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, 0)
    when = _as_time(value)
    if when is not None:
        return (1, when.timestamp())
    if isinstance(value, int | float):
        return (1, float(value))
    return (2, str(value))


def sort_records(
    rows: list[tuple[str, dict[str, Any]]], order: list[tuple[str, bool]]
) -> list[tuple[str, dict[str, Any]]]:
    for name, descending in reversed(order):  # stable sorts, last key first
        if rows and name not in rows[0][1]:
            raise _query_error(f"The attribute {name.upper()} cannot be used for sorting.")
        rows.sort(
            key=lambda row, n=name: _sort_key(row[1].get(f"{HIDDEN}{n}", row[1].get(n))),
            reverse=descending,
        )
    return rows


def drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


def namespaced(value: Any) -> Any:
    """The default (non-lean) OSLC JSON: `spi:` attributes, `rdf:about` links."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = "rdf:about" if key == "href" else f"spi:{key}"
            out[name] = namespaced(item)
        return out
    if isinstance(value, list):
        return [namespaced(v) for v in value]
    return value


# -- request plumbing -------------------------------------------------------------------------


def route_path(scope: Scope) -> str:
    """The path below where the app is mounted (e.g. `/maximo/api/whoami` under `/maximo`)."""
    path: str = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :] or "/"
    return path


def _prefix(path: str) -> str | None:
    return next((p for p in PREFIXES if path == p or path.startswith(f"{p}/")), None)


@dataclass
class Call:
    """What every API handler needs: the state, one view of it, and how to answer."""

    request: Request
    state: SandboxState
    credential: Credential
    prefix: str

    @property
    def api_base(self) -> str:
        return _mount_base(self.request) + self.prefix

    @property
    def lean(self) -> bool:
        raw = self.request.query_params.get("lean")
        if raw is None:
            return self.prefix.endswith("/api")  # the /api route answers lean JSON by default
        return raw.strip().lower() in ("1", "true")

    def href(self, os_name: str, key: tuple[str, ...] | None = None) -> str:
        path = f"os/{os_name}" + (f"/{rest_id(*key)}" if key else "")
        if self.request.query_params.get("relativeuri") in ("1", "true"):
            return f"{self.prefix.rsplit('/', 1)[-1]}/{path}"
        return f"{self.api_base}/{path}"

    def shape(self, body: Any) -> Any:
        if self.request.query_params.get("_dropnulls", "1") not in ("0", "false"):
            body = drop_nulls(body)
        return body if self.lean else namespaced(body)

    def json(
        self, body: Any, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> Response:
        return Response(
            orjson.dumps(body), status, headers=dict(headers or {}), media_type="application/json"
        )


def _mount_base(request: Request) -> str:
    """Scheme, host and the path the app is mounted at (`request.base_url` is the host app's)."""
    url = request.url
    return f"{url.scheme}://{url.netloc}{request.scope.get('root_path', '')}".rstrip("/")


def _call(request: Request) -> Call:
    prefix = _prefix(route_path(request.scope)) or "/oslc"
    return Call(request, request.app.state.sandbox, request.scope[CREDENTIAL_KEY], prefix)


def _entity(call: Call, write: str | None = None) -> tuple[str, str]:
    os_name = call.request.path_params["os"].lower()
    entity = OBJECT_STRUCTURES.get(os_name)
    if entity is None:
        raise MaximoError(
            404, "BMXAA8721E", f"The object structure {os_name.upper()} does not exist."
        )
    credential = call.credential
    if credential.entities is not None and entity not in credential.entities:
        raise MaximoError(
            403,
            "BMXAA0024E",
            f"The action READ is not allowed on object {MBO[entity]}. Verify the business "
            "rules for the object and define the appropriate action for the object.",
        )
    if write and credential.read_only:
        raise MaximoError(
            403,
            "BMXAA0024E",
            f"The action {write} is not allowed on object {MBO[entity]}. Verify the business "
            "rules for the object and define the appropriate action for the object.",
        )
    return os_name, entity


def _present_all(call: Call, entity: str) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    extras: Extras = call.request.app.state.maximo_extras
    with call.state._lock:  # another thread's changes must not resize the dict mid-scan
        view = View(call.state, extras)
        return [
            view.present(entity, record)
            for record_id, record in sorted(call.state.data.records[entity].items())
            if not record.get("deleted")
        ]


def _find(call: Call, os_name: str, entity: str, rid: str) -> tuple[tuple[str, ...], dict]:
    for key, body in _present_all(call, entity):
        if rest_id(*key) == rid:
            return key, body
    raise _not_found(os_name, rid)


def _int_param(call: Call, name: str, low: int) -> int | None:
    raw = call.request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if value < low:
        raise MaximoError(400, "BMXAA8747E", f"The value {raw} of {name} is not valid.")
    return value


# -- API routes -------------------------------------------------------------------------------


async def whoami(request: Request) -> Response:
    call = _call(request)
    with call.state._lock:
        site = View(call.state, request.app.state.maximo_extras).default_site
    body = {
        "personid": INTEGRATION_USER,
        "userName": INTEGRATION_USER,
        "loginID": INTEGRATION_USER.lower(),
        "displayName": "Integration Administrator",
        "insertSite": site,
        "insertOrg": ORG,
        "defaultSite": site,
        "baseCurrency": "USD",
        "langcode": "EN",
        "timezone": "America/New_York",
        "apikeyName": call.credential.name,
    }
    return call.json(body)


async def collection(request: Request) -> Response:
    call = _call(request)
    if request.method == "POST":
        return await create(call)
    os_name, entity = _entity(call)
    params = request.query_params
    conditions = parse_where(params.get("oslc.where"))
    order = parse_order(params.get("oslc.orderBy"))
    selection = parse_select(params.get("oslc.select"))
    size = _int_param(call, "oslc.pageSize", 1)
    pageno = _int_param(call, "pageno", 1) or 1
    rows = [
        (rest_id(*key), body)
        for key, body in _present_all(call, entity)
        if matches(body, conditions)
    ]
    rows = sort_records(rows, order)
    total = len(rows)
    if size is None and total > AUTO_PAGE_SIZE:
        size = AUTO_PAGE_SIZE  # auto-paging kicks in for big sets
    size = min(size, MAX_PAGE_SIZE) if size is not None else None
    start = (pageno - 1) * size if size else 0
    chosen = rows[start : start + size] if size else rows
    members = []
    for rid, body in chosen:
        member = project(body, selection) if selection is not None else {}
        member["href"] = f"{call.href(os_name)}/{rid}"
        member["_rowstamp"] = _rowstamp(body)
        members.append(member)
    query = [(k, v) for k, v in params.multi_items() if k != "pageno"]

    def page_href(number: int) -> str:
        return f"{call.href(os_name)}?{urlencode([*query, ('pageno', number)])}"

    info: dict[str, Any] = {"href": page_href(pageno)}
    if size:
        info["pagenum"] = pageno
        info["totalPages"] = max(1, math.ceil(total / size))
        if start + size < total:
            info["nextPage"] = {"href": page_href(pageno + 1)}
        if pageno > 1:
            info["previousPage"] = {"href": page_href(pageno - 1)}
    if params.get("collectioncount") in ("1", "true"):
        info["totalCount"] = total
    body = {"member": members, "href": call.href(os_name), "responseInfo": info}
    shaped = call.shape(body)
    if not call.lean:
        shaped = {
            "rdfs:member": shaped.pop("spi:member"),
            "rdf:about": shaped.pop("rdf:about"),
            "oslc:responseInfo": shaped.pop("spi:responseInfo"),
        }
    return call.json(shaped)


async def member(request: Request) -> Response:
    call = _call(request)
    override = request.headers.get("x-method-override", "").upper()
    if request.method == "POST":
        if override == "PATCH":
            return await update(call)
        raise MaximoError(
            400,
            "BMXAA9371E",
            "A POST on a resource needs the x-method-override header (PATCH, MERGE or "
            "DELETE); the simulator supports PATCH on work orders.",
        )
    os_name, entity = _entity(call)
    key, body = _find(call, os_name, entity, request.path_params["rid"])
    params = request.query_params
    selection = parse_select(params.get("oslc.properties") or params.get("oslc.select")) or ALL
    return call.json(call.shape(_with_links(call, os_name, key, body, selection)))


def _rowstamp(body: Mapping[str, Any]) -> str:
    """Maximo's row version; the simulator derives it from the change time."""
    when = _as_time(body.get("changedate") or body.get("statusdate"))
    return str(int(when.timestamp() * 1000)) if when else "1"


def _with_links(
    call: Call, os_name: str, key: tuple[str, ...], body: dict[str, Any], selection: Selection
) -> dict[str, Any]:
    out = project(body, selection)
    out["href"] = call.href(os_name, key)
    out["_rowstamp"] = _rowstamp(body)
    return out


# -- writes -----------------------------------------------------------------------------------


async def _json_body(call: Call) -> dict[str, Any]:
    raw = await call.request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise _bad_request("The request body is too large.")
    try:
        body = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError:
        raise MaximoError(400, "BMXAA9368E", "The JSON in the request body is not valid.") from None
    if not isinstance(body, dict):
        raise MaximoError(400, "BMXAA9368E", "The request body must be a JSON object.")
    # Namespaced bodies (no lean=1) carry `spi:` prefixes; accept both spellings.
    return {str(k).removeprefix("spi:").lower(): v for k, v in body.items()}


def _check_attributes(body: Mapping[str, Any], allowed: set[str], mbo: str) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise MaximoError(
            400,
            "BMXAA7893E",
            f"The attribute {unknown[0].upper()} is not part of object {mbo} in the simulator.",
        )


def _text(body: Mapping[str, Any], name: str, max_length: int) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad_request(f"{name.upper()}: a text value is expected.")
    if len(value) > max_length:
        raise MaximoError(
            400,
            "BMXAA4049E",
            f"The value specified {value[:20]!r}... exceeds the maximum field length of "
            f"{max_length} for {name.upper()}.",
        )
    return value


def _time(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    when = _as_time(value)
    if when is None:
        raise _bad_request(f"{name.upper()}: {value!r} is not an ISO 8601 date and time.")
    return format_ts(when.astimezone(UTC))


def _lookup(view: View, entity: str, attribute: str, value: Any, site: str | None) -> Record:
    """The live sandbox record a Maximo key value names (within `site` when given)."""
    for record in view.records[entity].values():
        if record.get("deleted"):
            continue
        _, body = view.present(entity, record)
        if body.get(attribute) == value and (site is None or body.get("siteid") in (site, None)):
            return record
    where = f" in site {site}" if site else ""
    raise MaximoError(400, "BMXAA4153E", f"{attribute.upper()} {value} is not valid{where}.")


WO_ATTRIBUTES = {
    "siteid", "orgid", "description", "description_longdescription", "status", "wopriority",
    "worktype", "assetnum", "location", "lead", "owner", "targcompdate", "memo", "worklog",
}  # fmt: skip
WORKLOG_ATTRIBUTES = {"logtype", "description", "description_longdescription", "clientviewable"}


def _work_order_fields(
    view: View, body: Mapping[str, Any], site: str, *, creating: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Maximo attributes -> (sandbox fields, Maximo-only values to remember)."""
    _check_attributes(body, WO_ATTRIBUTES, "WORKORDER")
    fields: dict[str, Any] = {}
    remember: dict[str, Any] = {}
    if "description" in body or creating:
        fields["title"] = _text(body, "description", 100) or ""
    if "description_longdescription" in body:
        fields["description"] = _text(body, "description_longdescription", 32_000)
    if "status" in body:
        status = body["status"]
        if status not in WO_STATUS_TO_SANDBOX:
            raise MaximoError(
                400, "BMXAA4590E", f"{status!r} is not a valid status for a work order."
            )
        fields["status"] = WO_STATUS_TO_SANDBOX[status]
        remember["status"] = status
    elif creating:
        fields["status"], remember["status"] = "OPEN", "WAPPR"
    if "wopriority" in body:
        priority = body["wopriority"]
        if priority is not None and (not isinstance(priority, int) or isinstance(priority, bool)):
            raise _bad_request("WOPRIORITY: an integer is expected.")
        fields["priority"] = (
            "NONE" if priority is None else PRIORITY_TO_SANDBOX.get(priority, "LOW")
        )
        remember["wopriority"] = priority
    if "worktype" in body:
        worktype = _text(body, "worktype", 5)
        fields["categories"] = [WORKTYPE_TO_SANDBOX.get(worktype, worktype)] if worktype else []
    if body.get("assetnum") is not None:
        asset = _lookup(view, "assets", "assetnum", body["assetnum"], site)
        fields["assetId"] = asset["id"]
        if body.get("location") is None:
            fields["locationId"] = asset.get("locationId")  # Maximo copies the asset's location
    if body.get("location") is not None:
        fields["locationId"] = _lookup(view, "locations", "location", body["location"], site)["id"]
    assignees = []
    for name in ("lead", "owner"):
        if body.get(name) is not None:
            assignees.append(_lookup(view, "users", "personid", body[name], None)["id"])
    if creating or "lead" in body or "owner" in body:
        fields["assigneeIds"] = assignees
    if "targcompdate" in body:
        fields["dueDate"] = _time(body, "targcompdate")
    entries = body.get("worklog")
    if entries is not None:
        if not isinstance(entries, list) or not all(isinstance(e, Mapping) for e in entries):
            raise _bad_request("WORKLOG: a list of objects is expected.")
        for entry in entries:
            entry = {str(k).removeprefix("spi:").lower(): v for k, v in entry.items()}
            _check_attributes(entry, WORKLOG_ATTRIBUTES, "WORKLOG")
            # The sandbox keeps one note per work order: the latest entry wins.
            fields["notes"] = _text(entry, "description_longdescription", 32_000) or _text(
                entry, "description", 100
            )
    return fields, remember


def _site(view: View, body: Mapping[str, Any]) -> str:
    site = body.get("siteid")
    if site is None:
        return view.default_site  # Maximo uses the user's default insert site
    if site not in view.site_ids.values():
        raise MaximoError(400, "BMXAA2661E", f"Site {site} is not a valid site.")
    if body.get("orgid") not in (None, ORG):
        raise MaximoError(400, "BMXAA2662E", f"Organization {body['orgid']} is not valid.")
    return str(site)


async def create(call: Call) -> Response:
    os_name, entity = _entity(call, write="INSERT")
    body = await _json_body(call)
    extras: Extras = call.request.app.state.maximo_extras
    state = call.state
    with state._lock:
        view = View(state, extras)
        site = _site(view, body)
        if entity == "work_orders":
            fields, remember = _work_order_fields(view, body, site, creating=True)
            record = state.create_work_order(fields)
            extras.put("work_orders", record["id"], "siteid", site, "any")
            for name, value in remember.items():
                stood_for = record["status"] if name == "status" else record["priority"]
                extras.put("work_orders", record["id"], name, value, stood_for)
        elif entity == "purchase_orders":
            record = state.create_purchase_order(_purchase_order_fields(view, body, site))
        else:
            raise MaximoError(
                400, "BMXAA9372E", f"The simulator does not create {os_name.upper()} records."
            )
        key, presented = View(state, extras).present(entity, record)
    location = call.href(os_name, key)
    properties = call.request.headers.get("properties")
    if properties is None:
        return Response(b"", 201, headers={"Location": location})
    selection = parse_select(properties) or ALL
    out = call.shape(_with_links(call, os_name, key, presented, selection))
    return call.json(out, 201, headers={"Location": location})


PO_ATTRIBUTES = {
    "siteid", "orgid", "description", "vendor", "status", "requireddate", "currencycode",
    "poline",
}  # fmt: skip
POLINE_ATTRIBUTES = {
    "polinenum", "linetype", "itemnum", "itemsetid", "storeloc", "tositeid", "description",
    "orderqty", "unitcost", "orderunit",
}  # fmt: skip


def _purchase_order_fields(view: View, body: Mapping[str, Any], site: str) -> dict[str, Any]:
    _check_attributes(body, PO_ATTRIBUTES, "PO")
    if not body.get("vendor"):
        raise MaximoError(400, "BMXAA4195E", "VENDOR is a required field.")
    vendor = _lookup(view, "vendors", "company", body["vendor"], None)
    status = body.get("status", "WAPPR")
    if status not in PO_STATUS_TO_SANDBOX:
        raise MaximoError(
            400, "BMXAA4590E", f"A new purchase order cannot have the status {status!r}."
        )
    lines = body.get("poline")
    if not isinstance(lines, list) or not lines:
        raise MaximoError(400, "BMXAA4195E", "A purchase order needs at least one POLINE.")
    items = []
    for line in lines:
        if not isinstance(line, Mapping):
            raise _bad_request("POLINE: objects are expected.")
        line = {str(k).removeprefix("spi:").lower(): v for k, v in line.items()}
        _check_attributes(line, POLINE_ATTRIBUTES, "POLINE")
        quantity, unit = line.get("orderqty"), line.get("unitcost", 0)
        if not isinstance(quantity, int | float) or isinstance(quantity, bool) or quantity <= 0:
            raise _bad_request("ORDERQTY must be a number greater than zero.")
        if not isinstance(unit, int | float) or isinstance(unit, bool) or unit < 0:
            raise _bad_request("UNITCOST must be a number of zero or more.")
        part_id = None
        if line.get("itemnum") is not None:
            tosite = line.get("tositeid") or site
            part = _lookup(view, "parts", "itemnum", line["itemnum"], tosite)
            if line.get("storeloc") not in (None, view.present("parts", part)[1]["location"]):
                raise MaximoError(
                    400, "BMXAA4153E", f"STORELOC {line['storeloc']} does not stock this item."
                )
            part_id = part["id"]
        description = _text(line, "description", 100)
        if part_id is None and not description:
            raise MaximoError(400, "BMXAA4195E", "A MATERIAL line needs a DESCRIPTION.")
        items.append(
            {
                "partId": part_id,
                "description": description,
                "quantity": quantity,
                "unitCost": float(unit),
            }
        )
    currency = body.get("currencycode") or "USD"
    if not isinstance(currency, str) or not re.fullmatch(r"[A-Z]{3}", currency):
        raise _bad_request(f"CURRENCYCODE {currency!r} is not valid.")
    return {
        "vendorId": vendor["id"],
        "items": items,
        "status": PO_STATUS_TO_SANDBOX[status],
        "currency": currency,
        "dueDate": _time(body, "requireddate"),
    }


async def update(call: Call) -> Response:
    os_name, entity = _entity(call, write="SAVE")
    if entity != "work_orders":
        raise MaximoError(
            400, "BMXAA9372E", f"The simulator does not update {os_name.upper()} records."
        )
    body = await _json_body(call)
    rid = call.request.path_params["rid"]
    extras: Extras = call.request.app.state.maximo_extras
    state = call.state
    with state._lock:
        key, current = _find(call, os_name, entity, rid)
        view = View(state, extras)
        if "siteid" in body and body["siteid"] != current["siteid"]:
            raise _bad_request("SITEID cannot be changed on an existing work order.")
        if current["status"] in ("CLOSE", "CAN"):
            raise MaximoError(
                400,
                "BMXAA4600E",
                f"Work order {current['wonum']} is in status {current['status']} and cannot be "
                "changed.",
            )
        fields, remember = _work_order_fields(view, body, current["siteid"], creating=False)
        record_id = str(current["workorderid"])
        if fields:
            record = state.update_work_order(record_id, fields)
        else:
            record = state.get_record("work_orders", record_id)
        for name, value in remember.items():
            stood_for = record["status"] if name == "status" else record["priority"]
            extras.put("work_orders", record_id, name, value, stood_for)
        key, presented = View(state, extras).present(entity, record)
    properties = call.request.headers.get("properties")
    if properties is None:
        return Response(status_code=204)
    selection = parse_select(properties) or ALL
    return call.json(call.shape(_with_links(call, os_name, key, presented, selection)))


async def index(request: Request) -> Response:
    state: SandboxState = request.app.state.sandbox
    return JSONResponse(
        {
            "name": "maintlink IBM Maximo simulator",
            "api": "/maximo/api",
            "object_structures": sorted(OBJECT_STRUCTURES),
            "control": "/_sandbox",
            "seed": state.seed,
            "size": state.size,
        }
    )


async def reset(request: Request) -> Response:
    """The sandbox's reset, which also forgets the Maximo-only values written so far."""
    request.app.state.maximo_extras.values.clear()
    return await sandbox_app.reset(request)


# -- the gate: faults, auth, rate limit -------------------------------------------------------


class Gate:
    """ASGI middleware in front of the API routes, in the order a real deployment checks."""

    def __init__(self, app: ASGIApp, state: SandboxState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = route_path(scope)
        prefix = _prefix(path) if scope["type"] == "http" else None
        if prefix is None:
            await self.app(scope, receive, send)
            return
        state = self.state
        if await _faults(state.faults, scope, receive, send):
            return
        credential, refusal = self._authenticate(scope)
        if refusal is not None:
            await refusal.response()(scope, receive, send)
            return
        assert credential is not None
        if await _faults(credential.faults, scope, receive, send):
            return
        decision = state.check_rate_limit(credential)
        if not decision.allowed:
            # IBM API Connect (in front of MAS) throttles with its own body shape.
            body = {
                "httpCode": "429",
                "httpMessage": "Too Many Requests",
                "moreInformation": "Rate Limit exceeded",
            }
            headers = {"Retry-After": str(decision.reset_seconds)}
            await JSONResponse(body, 429, headers=headers)(scope, receive, send)
            return
        scope[CREDENTIAL_KEY] = credential
        await self.app(scope, receive, send)

    def _authenticate(self, scope: Scope) -> tuple[Credential | None, MaximoError | None]:
        key = ""
        for name, value in scope.get("headers", []):
            if name == b"apikey":
                key = value.decode("latin-1").strip()
                break
        if not key:
            query = scope.get("query_string", b"").decode("latin-1")
            match = re.search(r"(?:^|&)apikey=([^&]*)", query)
            key = match.group(1) if match else ""
        if not key:
            return None, MaximoError(
                401, "BMXAA0021E", "User name and password combination are not valid. Try again."
            )
        credential = self.state.credentials.get(key)
        if credential is None or credential.revoked:
            return None, MaximoError(
                400,
                "BMXAA9549E",
                "The API key token is invalid. Either the token may have expired or the token "
                "has been revoked by the administrator.",
            )
        return credential, None


OUTAGE_PAGE = (
    "<html><head><title>Application is not available</title></head><body><h1>Application is "
    "not available</h1><p>The application is currently not serving requests at this "
    "endpoint.</p></body></html>"
)


async def _faults(faults: Faults, scope: Scope, receive: Receive, send: Send) -> bool:
    if faults.offline:
        if faults.offline_mode == "refuse":
            await sandbox_app.drop_connection(receive, send)
        else:
            await HTMLResponse(OUTAGE_PAGE, 503)(scope, receive, send)
        return True
    if faults.latency_ms > 0:
        await asyncio.sleep(faults.latency_ms / 1000)
    return False


# -- errors and the app -----------------------------------------------------------------------


def _api_base(request: Request) -> str:
    prefix = _prefix(route_path(request.scope)) or "/maximo/api"
    return _mount_base(request) + prefix


async def _maximo_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MaximoError)
    return exc.response(_api_base(request))


async def _sandbox_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SandboxError)
    if CREDENTIAL_KEY not in request.scope:  # a control route
        return sandbox_app.error_response(exc.status, exc.code, exc.message)
    reason = "BMXAA8727E" if exc.status == 404 else "BMXAA4153E"
    return MaximoError(exc.status, reason, exc.message).response(_api_base(request))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if _prefix(route_path(request.scope)) is None:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return sandbox_app.error_response(exc.status_code, code, str(exc.detail))
    reason = "BMXAA8721E" if exc.status_code == 404 else "BMXAA9371E"
    return MaximoError(exc.status_code, reason, str(exc.detail)).response(_api_base(request))


async def _internal_error(request: Request, exc: Exception) -> Response:
    return MaximoError(500, "BMXAA9999E", "An unexpected error occurred.").response()


def create_maximo_app(state: SandboxState) -> Starlette:
    """The Maximo simulator as an ASGI app; mount it (e.g. at `/maximo`) or serve it.

    Mounted at `/maximo`, the instance URL is `http://host:port/maximo` and the API answers at
    `http://host:port/maximo/api/...` (and `/maximo/maximo/api/...`, as a server whose context
    root is `/maximo`). Its lifespan runs the sandbox's simulated changes when served on its
    own; mounted apps get no lifespan, so the host app's simulator is the only one running.
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
    routes = [Route("/", index)]
    for prefix in PREFIXES:
        routes += [
            Route(f"{prefix}/whoami", whoami, methods=["GET"]),
            Route(f"{prefix}/os/{{os}}", collection, methods=["GET", "POST"]),
            Route(f"{prefix}/os/{{os}}/{{rid}}", member, methods=["GET", "POST"]),
        ]
    routes += [
        Route("/_sandbox/credentials", control.create_credential, methods=["POST"]),
        Route("/_sandbox/credentials", control.list_credentials, methods=["GET"]),
        Route(
            "/_sandbox/credentials/{api_key}/revoke", control.revoke_credential, methods=["POST"]
        ),
        Route(
            "/_sandbox/credentials/{api_key}/restore", control.restore_credential, methods=["POST"]
        ),
        Route(
            "/_sandbox/credentials/{api_key}/faults",
            control.credential_faults,
            methods=["GET", "POST"],
        ),
        Route("/_sandbox/faults", control.global_faults, methods=["GET", "POST"]),
        Route("/_sandbox/stats", control.stats),
        Route("/_sandbox/reset", reset, methods=["POST"]),
        Route("/_sandbox/changes", control.changes, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(Gate, state=state)],
        exception_handlers={
            MaximoError: _maximo_error,
            SandboxError: _sandbox_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
        lifespan=lifespan,
    )
    app.state.sandbox = state
    app.state.maximo_extras = Extras({})
    return app


__all__ = ["MaximoError", "View", "create_maximo_app", "rest_id", "server_time"]
