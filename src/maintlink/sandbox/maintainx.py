"""A MaintainX simulator over the shared sandbox state.

It presents `SandboxState`'s data the way MaintainX's public REST API does: `/v1/<entity>`
paths (`workorders`, `purchaseorders`, ...), `Authorization: Bearer <key>`, integer ids,
cursor pages `{"workOrders": [...], "nextCursor", "nextPageUrl"}` with `limit` up to 200 and
a `sort` parameter (`-updatedAt`, ...), no updated-since filter and no deletion flag (deleted
records simply stop being listed), `expand=` for the fields MaintainX only sends on request,
amounts in cents, `x-organization-id` for multi-organization keys, `X-Rate-Limit-*` headers
with 429, and MaintainX's error shapes (`{"error": "..."}`, `{"errors": [{"error",
"fieldPath", "fieldValue"}]}`, 401 "Invalid token").

Credentials, fault switches and the `/_sandbox/*` control routes are the sandbox's own (the
route handlers are imported), so the same tools drive every simulated system. A key whose
name starts with `multi-org` acts as a multi-organization key: it sees a second, empty
organization and must send `x-organization-id`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import contextlib
import copy
import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlencode

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from maintlink.sandbox import app as sandbox_app
from maintlink.sandbox.data import Record, format_ts, parse_ts
from maintlink.sandbox.state import Credential, Faults, SandboxError, SandboxState

API_PREFIX = "/v1"
DEFAULT_LIMIT = 100
MAX_LIMIT = 200
ORG_ID_BASE = 10_000
MULTI_ORG_PREFIX = "multi-org"
CREDENTIAL_KEY = "maintainx.credential"
ORG_KEY = "maintainx.organization"

# entity -> (URL segment, list envelope, single-record envelope, label in 404 messages)
RESOURCES: dict[str, tuple[str, str, str, str]] = {
    "work_orders": ("workorders", "workOrders", "workOrder", "Work Order"),
    "assets": ("assets", "assets", "asset", "Asset"),
    "locations": ("locations", "locations", "location", "Location"),
    "parts": ("parts", "parts", "part", "Part"),
    "purchase_orders": ("purchaseorders", "purchaseOrders", "purchaseOrder", "Purchase Order"),
    "vendors": ("vendors", "vendors", "vendor", "Vendor"),
    "users": ("users", "users", "user", "User"),
}
BY_SEGMENT = {segment: entity for entity, (segment, *_) in RESOURCES.items()}

# Fields MaintainX only sends when asked with `expand=<name>` (name -> response fields).
EXPANDABLE: dict[str, dict[str, tuple[str, ...]]] = {
    "work_orders": {
        "assignees": ("assignees",),
        "categories": ("categories",),
        "extra_fields": ("extraFields",),
    },
    "assets": {
        "barcode": ("barcode",),
        "vendor_ids": ("vendorIds",),
        "extra_fields": ("extraFields",),
        "status": ("status",),
        "manufacturer": ("manufacturer",),
        "model": ("model",),
    },
    "locations": {"barcode": ("barcode",), "extra_fields": ("extraFields",)},
    "parts": {"vendors": ("vendors",), "extra_fields": ("extraFields",)},
    "purchase_orders": {},
    "vendors": {"extra_fields": ("extraFields",)},
    "users": {"role": ("role", "customRole"), "extra_fields": ("extraFields",)},
}
SORTS = ("id", "createdAt", "updatedAt")

# The sandbox's categories -> MaintainX work order types.
WORK_ORDER_TYPE = {"CORRECTIVE": "REACTIVE", "PREVENTIVE": "PREVENTIVE"}
CATEGORY_FOR_TYPE = {"REACTIVE": "CORRECTIVE", "PREVENTIVE": "PREVENTIVE"}
# MaintainX calls a new purchase order REQUESTED and one awaiting approval PENDING; the
# sandbox's vocabulary is the other way round (PENDING = draft, REQUESTED = awaiting).
PURCHASE_ORDER_STATUS = {"PENDING": "REQUESTED", "REQUESTED": "PENDING"}
# The sandbox's roles -> MaintainX's role and custom role.
USER_ROLE = {
    "ADMIN": ("ADMIN", None),
    "TECHNICIAN": ("MEMBER", "Technician"),
    "REQUESTER": ("REQUESTER", None),
    "VIEW_ONLY": ("MEMBER", "View Only"),
}
CRITICALITIES = (("LOW", "Low", 1), ("MEDIUM", "Medium", 2), ("HIGH", "High", 3))
CRITICALITY_ID_BASE = 900


class MaintainXError(Exception):
    """A refusal in MaintainX's shape: `{"error": msg}` or `{"errors": [...]}`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        field_path: str | None = None,
        field_value: Any = None,
        errors_list: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field_path = field_path
        self.field_value = field_value
        self.errors_list = errors_list or field_path is not None

    def response(self, headers: Mapping[str, str] | None = None) -> JSONResponse:
        if self.errors_list:
            item: dict[str, Any] = {"error": self.message}
            if self.field_path is not None:
                item["fieldPath"] = self.field_path
                item["fieldValue"] = self.field_value
            return JSONResponse({"errors": [item]}, self.status, headers=headers)
        return JSONResponse({"error": self.message}, self.status, headers=headers)


# -- organizations --------------------------------------------------------------------------------


def organization_id(state: SandboxState) -> int:
    return ORG_ID_BASE + abs(int(state.seed)) % 1_000_000


def organizations_for(state: SandboxState, credential: Credential) -> list[dict[str, Any]]:
    """The organizations a key can reach: one, or two for a multi-organization key."""
    main = {
        "id": organization_id(state),
        "name": state.organization["name"],
        "timeZone": "Etc/UTC",
        "currency": "USD",
        "imageUrl": None,
    }
    if not credential.name.lower().startswith(MULTI_ORG_PREFIX):
        return [main]
    second = {**main, "id": main["id"] + 1, "name": f"{main['name']} (Second Site)"}
    return [main, second]


# -- presenting sandbox records as MaintainX records ----------------------------------------------


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _ints(values: Any) -> list[int]:
    return [int(v) for v in values or []]


def _cents(amount: Any) -> int | None:
    return None if amount is None else round(float(amount) * 100)


def _decimal_text(amount: Any) -> str | None:
    return None if amount is None else f"{float(amount):.6f}"


def _address(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    street, _, city = text.partition(", ")
    return {
        "label": text,
        "street": street,
        "city": city,
        "state": "",
        "postalCode": "",
        "country": "",
    }


def _base(record: Record) -> dict[str, Any]:
    return {
        "id": int(record["id"]),
        "createdAt": record["createdAt"],
        "updatedAt": record["updatedAt"],
    }


def _work_order(record: Record, org_id: int) -> dict[str, Any]:
    categories = [str(c) for c in record.get("categories") or []]
    kind = next((WORK_ORDER_TYPE[c] for c in categories if c in WORK_ORDER_TYPE), None)
    return {
        **_base(record),
        "sequentialId": record["sequentialId"],
        "title": record["title"],
        "description": record.get("description"),
        "status": record["status"],
        "priority": record["priority"],
        "type": kind or ("OTHER" if categories else None),
        "categories": [c.title() for c in categories],
        "assetId": _int(record.get("assetId")),
        "locationId": _int(record.get("locationId")),
        "assignees": [{"type": "USER", "id": uid} for uid in _ints(record.get("assigneeIds"))],
        "dueDate": record.get("dueDate"),
        "startDate": None,
        "startedAt": record.get("startedAt"),
        "completedAt": record.get("completedAt"),
        "deletedAt": None,
        "organizationId": org_id,
        "extraFields": {k: str(v) for k, v in (record.get("customFields") or {}).items()},
    }


def _asset(record: Record, org_id: int) -> dict[str, Any]:
    status = record.get("status")
    criticality = next(
        (
            CRITICALITY_ID_BASE + level
            for code, _, level in CRITICALITIES
            if code == record.get("criticality")
        ),
        None,
    )
    return {
        **_base(record),
        "name": record["name"],
        "description": record.get("description"),
        "parentId": _int(record.get("parentId")),
        "criticalityId": criticality,
        "locationId": _int(record.get("locationId")),
        "serialNumber": record.get("serialNumber"),
        "creatorId": None,
        "organizationId": org_id,
        "barcode": record.get("barcode"),
        "vendorIds": _ints(record.get("vendorIds")),
        "extraFields": {k: str(v) for k, v in (record.get("customFields") or {}).items()},
        # MaintainX has ONLINE/OFFLINE (+ IGNORE); "decommissioned" is a custom status.
        "status": {
            "status": "ONLINE" if status == "ONLINE" else "OFFLINE",
            "customStatus": {"label": "Decommissioned"} if status == "DECOMMISSIONED" else None,
            "startedAt": record["updatedAt"],
        },
        "manufacturer": record.get("manufacturer"),
        "model": record.get("model"),
    }


def _location(record: Record, org_id: int) -> dict[str, Any]:
    return {
        **_base(record),
        "name": record["name"],
        "description": None,
        "address": record.get("address"),
        "parentId": _int(record.get("parentId")),
        "organizationId": org_id,
        "barcode": record.get("code"),
        # MaintainX locations have no type: customers keep such things in custom fields.
        "extraFields": {"Location Type": str(record.get("type", "")).title()},
    }


def _part(record: Record, org_id: int) -> dict[str, Any]:
    location_id = _int(record.get("locationId"))
    return {
        **_base(record),
        "name": record["name"],
        "description": None,
        "partNumber": record.get("partNumber"),
        "barcode": record.get("barcode"),
        "unitCost": _cents(record.get("unitCost")),  # cents, as MaintainX sends amounts
        "availableQuantity": record.get("availableQuantity"),
        "minimumQuantity": record.get("minimumQuantity"),
        "reservedQuantity": record.get("reservedQuantity"),
        "orderedQuantity": record.get("orderedQuantity"),
        "area": None,
        "locationId": location_id,
        "locations": [
            {
                "locationId": location_id,
                "availableQuantity": record.get("availableQuantity"),
                "minimumQuantity": record.get("minimumQuantity"),
                "area": None,
            }
        ]
        if location_id is not None
        else [],
        "organizationId": org_id,
        "vendors": [
            {"vendorId": vid, "partNumber": None} for vid in _ints(record.get("vendorIds"))
        ],
        "extraFields": {"Unit": str(record.get("unit") or "")},
    }


def _purchase_order(record: Record, org_id: int) -> dict[str, Any]:
    items = []
    for line, item in enumerate(record.get("items") or [], start=1):
        quantity, unit = item.get("quantity"), item.get("unitCost")
        price = None if quantity is None or unit is None else float(quantity) * float(unit)
        items.append(
            {
                "id": int(record["id"]) * 1000 + line,
                "partId": _int(item.get("partId")),
                "name": item.get("description"),
                "partNumber": None,
                "quantityOrdered": quantity,
                "quantityReceived": item.get("quantityReceived"),
                "unitCost": _cents(unit),
                "unitCostDecimal": _decimal_text(unit),
                "price": _cents(price),
                "priceDecimal": _decimal_text(price),
            }
        )
    number = str(record.get("number") or "")
    digits = "".join(ch for ch in number if ch.isdigit())
    return {
        **_base(record),
        "autoGeneratedNumber": int(digits) if digits else None,
        "overrideNumber": None,
        "status": PURCHASE_ORDER_STATUS.get(record["status"], record["status"]),
        "vendorId": _int(record.get("vendorId")),
        "dueDate": record.get("dueDate"),
        "approvalDate": record.get("orderedAt"),
        "approverId": None,
        "items": items,
        "costs": [],
        "note": None,
        "shippingAddress": _address(record.get("shippingAddress")),
        "billingAddress": None,
        "deletedAt": None,
        "organizationId": org_id,
        "extraFields": {},
    }


def _vendor(record: Record, org_id: int) -> dict[str, Any]:
    contacts = [
        {
            "id": int(record["id"]) * 100 + index,
            "name": contact.get("name"),
            "email": contact.get("email"),
            "phoneNumber": contact.get("phone"),
            "role": None,
        }
        for index, contact in enumerate(record.get("contacts") or [], start=1)
    ]
    return {
        **_base(record),
        "name": record["name"],
        "description": record.get("description"),
        "emails": [record["email"]] if record.get("email") else [],
        "phoneNumbers": [record["phone"]] if record.get("phone") else [],
        "contacts": contacts,
        "organizationId": org_id,
        # No vendor code or address in MaintainX: custom fields hold them.
        "extraFields": {
            "Vendor Code": str(record.get("code") or ""),
            "Address": str(record.get("address") or ""),
        },
    }


def _user(record: Record, org_id: int) -> dict[str, Any]:
    role, custom_role = USER_ROLE.get(record.get("role", ""), ("MEMBER", None))
    return {
        **_base(record),
        "firstName": record.get("firstName"),
        "lastName": record.get("lastName"),
        "email": record.get("email"),
        "phoneNumber": record.get("phoneNumber"),
        "hourlyRate": _cents(record.get("hourlyRate")),
        "role": role,
        "customRole": custom_role,
        "extraFields": {"Job Title": str(record.get("jobTitle") or "")},
    }


PRESENTERS: dict[str, Callable[[Record, int], dict[str, Any]]] = {
    "work_orders": _work_order,
    "assets": _asset,
    "locations": _location,
    "parts": _part,
    "purchase_orders": _purchase_order,
    "vendors": _vendor,
    "users": _user,
}


def present(entity: str, record: Record, org_id: int, expand: set[str] | None) -> dict[str, Any]:
    """A sandbox record in MaintainX's shape; `expand=None` sends every optional field."""
    body = PRESENTERS[entity](record, org_id)
    if expand is not None:
        for name, fields in EXPANDABLE[entity].items():
            if name not in expand:
                for field_name in fields:
                    body.pop(field_name, None)
    return body


def visible(entity: str, record: Record) -> bool:
    """Deleted records are gone from MaintainX; removed (inactive) users are too."""
    if record.get("deleted"):
        return False
    return not (entity == "users" and record.get("isActive") is False)


# -- listing --------------------------------------------------------------------------------------


def _encode_cursor(body: dict[str, Any]) -> str:
    raw = json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> dict[str, Any]:
    try:
        body = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, UnicodeError, binascii.Error) as exc:
        raise MaintainXError(400, "Invalid cursor") from exc
    if not isinstance(body, dict):
        raise MaintainXError(400, "Invalid cursor")
    return body


def _sort_key(sort_field: str, record: Record) -> tuple[str, int]:
    rid = int(record["id"])
    if sort_field == "id":
        return (f"{rid:020d}", rid)
    return (str(record[sort_field]), rid)


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise MaintainXError(400, f"limit must be an integer between 1 and {MAX_LIMIT}")
    return limit


def _sort(request: Request) -> tuple[str, bool]:
    raw = request.query_params.get("sort", "id")
    descending = raw.startswith("-")
    name = raw[1:] if descending else raw
    if name not in SORTS:
        allowed = ", ".join(f"{s}, -{s}" for s in SORTS)
        raise MaintainXError(400, f"sort must be one of {allowed}")
    return name, descending


def list_page(
    state: SandboxState, entity: str, request: Request, org_id: int
) -> tuple[list[Record], str | None]:
    """One page in the requested order, keyset-paged, so a record changed mid-listing moves
    (it may be skipped or seen twice) exactly as with a real cursor over a live table."""
    limit = _limit(request)
    sort_field, descending = _sort(request)
    cursor = request.query_params.get("cursor") or None
    after: tuple[str, int] | None = None
    if cursor:
        body = _decode_cursor(cursor)
        key = body.get("k")
        if (
            body.get("e") != entity
            or body.get("o") != org_id
            or body.get("s") != [sort_field, descending]
            or not (isinstance(key, list) and len(key) == 2 and isinstance(key[1], int))
        ):
            raise MaintainXError(400, "Invalid cursor")
        after = (str(key[0]), key[1])
    if org_id != organization_id(state):
        return [], None  # the second organization of a multi-organization key holds nothing
    # The state's lock keeps another thread's changes from resizing the dict mid-scan.
    with state._lock:
        rows = sorted(
            (_sort_key(sort_field, record), record["id"])
            for record in state.data.records[entity].values()
            if visible(entity, record)
        )
        keys = [key for key, _ in rows]
        if descending:
            end = bisect.bisect_left(keys, after) if after else len(rows)
            start = max(0, end - limit)
            chosen = rows[start:end][::-1]
            more = start > 0
        else:
            start = bisect.bisect_right(keys, after) if after else 0
            chosen = rows[start : start + limit]
            more = start + len(chosen) < len(rows)
        page = [copy.deepcopy(state.data.records[entity][rid]) for _, rid in chosen]
    next_cursor = None
    if more and chosen:
        last_key = chosen[-1][0]
        next_cursor = _encode_cursor(
            {"e": entity, "o": org_id, "s": [sort_field, descending], "k": list(last_key)}
        )
    return page, next_cursor


# -- request bodies -------------------------------------------------------------------------------


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


Priority = Literal["NONE", "LOW", "MEDIUM", "HIGH"]
Status = Literal["OPEN", "IN_PROGRESS", "ON_HOLD", "DONE", "CANCELED"]


def _timestamp(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return format_ts(parse_ts(value))
    except ValueError as exc:
        raise ValueError("must be an ISO 8601 date-time") from exc


class Assignee(Body):
    type: Literal["USER", "TEAM"]
    id: int | str


class WorkOrderCreate(Body):
    title: str = Field(min_length=1, max_length=500)
    description: str | None = Field(None, max_length=20_000)
    priority: Priority = "NONE"
    type: Literal["REACTIVE", "PREVENTIVE", "OTHER"] | None = None
    categories: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list)
    assetId: int | None = None
    locationId: int | None = None
    assignees: list[Assignee] = Field(default_factory=list, max_length=50)
    dueDate: str | None = None

    _due = field_validator("dueDate")(_timestamp)

    @field_validator("title")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


class WorkOrderPatch(Body):
    title: str | None = Field(None, min_length=1, max_length=500)
    description: str | None = Field(None, max_length=20_000)
    priority: Priority | None = None
    assetId: int | None = None
    locationId: int | None = None
    assignees: list[Assignee] | None = Field(None, max_length=50)
    dueDate: str | None = None

    _due = field_validator("dueDate")(_timestamp)


class StatusPatch(Body):
    status: Status


class CommentCreate(Body):
    content: str = Field(min_length=1, max_length=20_000)


class PurchaseOrderItem(Body):
    partId: int | None = None
    name: str | None = Field(None, max_length=500)
    partNumber: str | None = None
    quantityOrdered: float = Field(gt=0, le=1_000_000)
    unitCost: float | None = Field(None, ge=0)  # cents
    price: float | None = Field(None, ge=0)  # cents, quantity x unit cost


class PurchaseOrderCreate(Body):
    vendorId: int | None = None
    items: list[PurchaseOrderItem] = Field(min_length=1, max_length=200)
    dueDate: str | None = None
    note: str | None = None
    overrideNumber: str | None = None

    _due = field_validator("dueDate")(_timestamp)


M = TypeVar("M", bound=Body)


def parse_body(model: type[M], raw: bytes) -> tuple[M, set[str]]:
    try:
        parsed = model.model_validate_json(raw.strip() or b"{}")
    except ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(str(part) for part in first["loc"]) or None
        if first["type"] == "json_invalid":
            raise MaintainXError(400, "Body is not valid JSON", errors_list=True) from exc
        value = first.get("input")
        value = value if isinstance(value, str | int | float | bool) else None
        raise MaintainXError(400, first["msg"], field_path=path, field_value=value) from exc
    return parsed, set(parsed.model_fields_set)


# -- the gate: faults, auth, organization, rate limit ---------------------------------------------


class Gate:
    """ASGI middleware in front of `/v1`, in the order a real gateway checks things."""

    def __init__(self, app: ASGIApp, state: SandboxState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = route_path(scope)
        if scope["type"] != "http" or not path.startswith(f"{API_PREFIX}/"):
            await self.app(scope, receive, send)
            return
        state = self.state
        if await _faults(state.faults, scope, receive, send):
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        scheme, _, token = headers.get("authorization", "").partition(" ")
        credential = state.credentials.get(token.strip())
        if scheme.lower() != "bearer" or credential is None or credential.revoked:
            await MaintainXError(401, "Invalid token").response()(scope, receive, send)
            return
        if await _faults(credential.faults, scope, receive, send):
            return
        decision = state.check_rate_limit(credential)
        extra = decision.headers()
        if not decision.allowed:
            refusal = MaintainXError(429, "Too many requests, please retry later.")
            await refusal.response(extra)(scope, receive, send)
            return
        try:
            scope[ORG_KEY] = _organization(state, credential, headers, path)
        except MaintainXError as exc:
            await exc.response(extra)(scope, receive, send)
            return
        scope[CREDENTIAL_KEY] = credential

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and extra:
                message = dict(message)
                message["headers"] = [
                    *message.get("headers", []),
                    *((k.lower().encode(), v.encode()) for k, v in extra.items()),
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _faults(faults: Faults, scope: Scope, receive: Receive, send: Send) -> bool:
    if faults.offline:
        if faults.offline_mode == "refuse":
            await sandbox_app.drop_connection(receive, send)
        else:
            response = JSONResponse({"error": "Service Unavailable"}, 503)
            await response(scope, receive, send)
        return True
    if faults.latency_ms > 0:
        await asyncio.sleep(faults.latency_ms / 1000)
    return False


def _organization(
    state: SandboxState, credential: Credential, headers: Mapping[str, str], path: str
) -> int:
    """The organization a request works on; a multi-organization key must name it."""
    organizations = [org["id"] for org in organizations_for(state, credential)]
    raw = headers.get("x-organization-id")
    if path == f"{API_PREFIX}/organizations":
        return organizations[0]  # listing a key's organizations needs no organization
    if raw is None:
        if len(organizations) > 1:
            raise MaintainXError(400, "Missing x-organization-id header.", errors_list=True)
        return organizations[0]
    try:
        chosen = int(raw)
    except ValueError:
        raise MaintainXError(400, "x-organization-id must be an integer") from None
    if chosen not in organizations:
        raise MaintainXError(403, "You do not have access to this organization")
    return chosen


# -- API routes -----------------------------------------------------------------------------------


def route_path(scope: Scope) -> str:
    """The path below where the app is mounted (e.g. `/v1/assets` under `/maintainx`)."""
    path: str = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :] or "/"
    return path


def _state(request: Request) -> SandboxState:
    state: SandboxState = request.app.state.sandbox
    return state


def _entity(request: Request, write: bool = False, segment: str | None = None) -> str:
    entity = BY_SEGMENT.get(segment or request.path_params["collection"])
    if entity is None:
        raise MaintainXError(404, "Not Found")
    credential: Credential = request.scope[CREDENTIAL_KEY]
    if credential.entities is not None and entity not in credential.entities:
        label = RESOURCES[entity][3].lower()
        raise MaintainXError(403, f"You do not have the permission to access {label}s")
    if write and credential.read_only:
        raise MaintainXError(403, "Your role does not allow this action")
    return entity


def _expand(request: Request) -> set[str]:
    values: set[str] = set()
    for value in request.query_params.getlist("expand"):
        values.update(part.strip() for part in value.split(",") if part.strip())
    return values


def _record(state: SandboxState, entity: str, record_id: str, org_id: int) -> Record:
    label = RESOURCES[entity][3]
    if not record_id.isdigit() or org_id != organization_id(state):
        raise MaintainXError(404, f"{label} Not Found")
    try:
        record = state.get_record(entity, record_id)
    except SandboxError:
        raise MaintainXError(404, f"{label} Not Found") from None
    if not visible(entity, record):
        raise MaintainXError(404, f"{label} Not Found")
    return record


async def organizations(request: Request) -> Response:
    credential: Credential = request.scope[CREDENTIAL_KEY]
    limit = _limit(request)
    orgs = organizations_for(_state(request), credential)[:limit]
    return JSONResponse({"organizations": orgs, "nextCursor": None, "nextPageUrl": None})


async def asset_criticalities(request: Request) -> Response:
    _limit(request)
    items = [
        {"id": CRITICALITY_ID_BASE + level, "label": label, "level": level}
        for _, label, level in CRITICALITIES
    ]
    return JSONResponse({"assetCriticalities": items, "nextCursor": None, "nextPageUrl": None})


async def collection(request: Request) -> Response:
    if request.method == "POST":
        return await create(request)
    entity = _entity(request)
    state = _state(request)
    org_id: int = request.scope[ORG_KEY]
    page, next_cursor = list_page(state, entity, request, org_id)
    expand = _expand(request)
    segment, envelope, _, _ = RESOURCES[entity]
    next_url = None
    if next_cursor:
        query = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
        next_url = f"{API_PREFIX}/{segment}?{urlencode([*query, ('cursor', next_cursor)])}"
    return JSONResponse(
        {
            envelope: [present(entity, r, org_id, expand) for r in page],
            "nextCursor": next_cursor,
            "nextPageUrl": next_url,
        }
    )


async def item(request: Request) -> Response:
    entity = _entity(request, write=request.method == "PATCH")
    state = _state(request)
    org_id: int = request.scope[ORG_KEY]
    record_id = request.path_params["record_id"]
    if request.method == "PATCH":
        if entity != "work_orders":
            raise MaintainXError(405, "Method Not Allowed")
        return await _patch_work_order(request, state, record_id, org_id)
    record = _record(state, entity, record_id, org_id)
    single = RESOURCES[entity][2]
    return JSONResponse({single: present(entity, record, org_id, _expand(request))})


def _assignee_ids(state: SandboxState, assignees: list[Assignee], org_id: int) -> list[str]:
    """USER assignees by id or e-mail; the sandbox has no teams, so TEAM ids do not exist."""
    ids: list[str] = []
    for index, assignee in enumerate(assignees):
        where = f"assignees.{index}.id"
        if assignee.type == "TEAM":
            raise MaintainXError(400, "Team not found", field_path=where, field_value=assignee.id)
        value = str(assignee.id)
        if not value.isdigit():
            match = next(
                (
                    rid
                    for rid, rec in state.data.records["users"].items()
                    if visible("users", rec) and rec.get("email", "").lower() == value.lower()
                ),
                None,
            )
            if match is None:
                raise MaintainXError(400, "User not found", field_path=where, field_value=value)
            value = match
        try:
            _record(state, "users", value, org_id)
        except MaintainXError:
            raise MaintainXError(
                400, "User not found", field_path=where, field_value=assignee.id
            ) from None
        ids.append(value)
    return ids


def _reference(state: SandboxState, entity: str, value: int | None, org_id: int, path: str) -> str:
    try:
        return _record(state, entity, str(value), org_id)["id"]
    except MaintainXError:
        label = RESOURCES[entity][3]
        raise MaintainXError(
            400, f"{label} not found", field_path=path, field_value=value
        ) from None


def _categories(kind: str | None, labels: list[str]) -> list[str]:
    """MaintainX type + category labels -> the sandbox's category list."""
    categories: list[str] = []
    if kind in CATEGORY_FOR_TYPE:
        categories.append(CATEGORY_FOR_TYPE[kind])
    for label in labels:
        value = label.strip().upper()
        if value and value not in categories:
            categories.append(value)
    return categories


async def create(request: Request) -> Response:
    entity = _entity(request, write=True)
    state = _state(request)
    org_id: int = request.scope[ORG_KEY]
    if org_id != organization_id(state):
        raise MaintainXError(403, "This organization is read-only in the simulator")
    raw = await request.body()
    if entity == "work_orders":
        body, _ = parse_body(WorkOrderCreate, raw)
        fields: dict[str, Any] = {
            "title": body.title,
            "description": body.description,
            "priority": body.priority,
            "categories": _categories(body.type, body.categories),
            "assigneeIds": _assignee_ids(state, body.assignees, org_id),
            "dueDate": body.dueDate,
        }
        if body.assetId is not None:
            fields["assetId"] = _reference(state, "assets", body.assetId, org_id, "assetId")
        if body.locationId is not None:
            fields["locationId"] = _reference(
                state, "locations", body.locationId, org_id, "locationId"
            )
        record = state.create_work_order(fields)
        return JSONResponse({"id": int(record["id"])}, 201)
    if entity == "purchase_orders":
        po, _ = parse_body(PurchaseOrderCreate, raw)
        if po.vendorId is None:
            # MaintainX allows it; the sandbox's purchase orders always have a vendor.
            raise MaintainXError(400, "vendorId is required", field_path="vendorId")
        items = []
        for index, line in enumerate(po.items):
            part_id = None
            if line.partId is not None:
                where = f"items.{index}.partId"
                part_id = _reference(state, "parts", line.partId, org_id, where)
            if part_id is None and not line.name:
                raise MaintainXError(
                    400, "An item needs a partId or a name", field_path=f"items.{index}.name"
                )
            cents = line.unitCost
            if cents is None and line.price is not None:
                cents = line.price / line.quantityOrdered
            items.append(
                {
                    "partId": part_id,
                    "description": line.name,
                    "quantity": line.quantityOrdered,
                    "unitCost": round((cents or 0) / 100, 6),
                }
            )
        fields = {
            "vendorId": _reference(state, "vendors", po.vendorId, org_id, "vendorId"),
            "items": items,
            "status": "PENDING",  # the sandbox's draft, MaintainX's REQUESTED
            "dueDate": po.dueDate,
        }
        record = state.create_purchase_order(fields)
        return JSONResponse({"id": int(record["id"])}, 201)
    raise MaintainXError(405, "Method Not Allowed")


async def _patch_work_order(
    request: Request, state: SandboxState, record_id: str, org_id: int
) -> Response:
    _record(state, "work_orders", record_id, org_id)
    body, sent = parse_body(WorkOrderPatch, await request.body())
    if not sent:
        raise MaintainXError(400, "Nothing to update", errors_list=True)
    for name in ("title", "priority", "assignees"):
        if name in sent and getattr(body, name) is None:
            raise MaintainXError(400, "must not be null", field_path=name, field_value=None)
    fields: dict[str, Any] = {}
    for name in ("title", "description", "priority", "dueDate"):
        if name in sent:
            fields[name] = getattr(body, name)
    if "assignees" in sent:
        fields["assigneeIds"] = _assignee_ids(state, body.assignees or [], org_id)
    if "assetId" in sent:
        fields["assetId"] = (
            None
            if body.assetId is None
            else _reference(state, "assets", body.assetId, org_id, "assetId")
        )
    if "locationId" in sent:
        fields["locationId"] = (
            None
            if body.locationId is None
            else _reference(state, "locations", body.locationId, org_id, "locationId")
        )
    record = state.update_work_order(record_id, fields)
    return JSONResponse({"workOrder": present("work_orders", record, org_id, None)})


async def work_order_status(request: Request) -> Response:
    _entity(request, write=True, segment="workorders")
    state = _state(request)
    org_id: int = request.scope[ORG_KEY]
    record_id = request.path_params["record_id"]
    _record(state, "work_orders", record_id, org_id)
    body, _ = parse_body(StatusPatch, await request.body())
    record = state.update_work_order(record_id, {"status": body.status})
    return JSONResponse({"workOrder": present("work_orders", record, org_id, None)})


async def work_order_comment(request: Request) -> Response:
    """Comments live beside the work order: like MaintainX, adding one leaves updatedAt alone."""
    _entity(request, write=True, segment="workorders")
    state = _state(request)
    org_id: int = request.scope[ORG_KEY]
    record_id = request.path_params["record_id"]
    _record(state, "work_orders", record_id, org_id)
    body, _ = parse_body(CommentCreate, await request.body())
    comments: dict[str, list[dict[str, Any]]] = request.app.state.maintainx_comments
    thread = comments.setdefault(record_id, [])
    comment = {"id": len(thread) + 1, "content": body.content, "createdAt": state.stamp()}
    thread.append(comment)
    return JSONResponse(comment, 201)


async def index(request: Request) -> Response:
    state = _state(request)
    return JSONResponse(
        {
            "name": "maintlink MaintainX simulator",
            "api": API_PREFIX,
            "control": "/_sandbox",
            "organizationId": organization_id(state),
            "seed": state.seed,
            "size": state.size,
        }
    )


# -- errors and the app ---------------------------------------------------------------------------


async def _maintainx_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MaintainXError)
    return exc.response()


async def _sandbox_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SandboxError)
    if route_path(request.scope).startswith("/_sandbox") or CREDENTIAL_KEY not in request.scope:
        return sandbox_app.error_response(exc.status, exc.code, exc.message)
    if exc.status == 400:  # the state refused a reference: MaintainX's field error shape
        path, _, message = exc.message.partition(": ")
        return MaintainXError(400, message or exc.message, field_path=path or None).response()
    return MaintainXError(exc.status, exc.message).response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if route_path(request.scope).startswith("/_sandbox"):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return sandbox_app.error_response(exc.status_code, code, str(exc.detail))
    return JSONResponse({"error": str(exc.detail)}, exc.status_code)


async def _internal_error(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": "Internal Server Error"}, 500)


def create_maintainx_app(state: SandboxState) -> Starlette:
    """The MaintainX simulator as an ASGI app; mount it (e.g. at `/maintainx`) or serve it.

    Its lifespan runs the sandbox's simulated changes (`change_rate_per_minute`) when served on
    its own; mounted apps get no lifespan, so the host app's simulator is the only one running.
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
    routes = [
        Route("/", index),
        Route(f"{API_PREFIX}/organizations", organizations, methods=["GET"]),
        Route(f"{API_PREFIX}/assetcriticalities", asset_criticalities, methods=["GET"]),
        Route(
            f"{API_PREFIX}/workorders/{{record_id}}/status", work_order_status, methods=["PATCH"]
        ),
        Route(
            f"{API_PREFIX}/workorders/{{record_id}}/comments", work_order_comment, methods=["POST"]
        ),
        Route(f"{API_PREFIX}/{{collection}}", collection, methods=["GET", "POST"]),
        Route(f"{API_PREFIX}/{{collection}}/{{record_id}}", item, methods=["GET", "PATCH"]),
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
        Route("/_sandbox/reset", control.reset, methods=["POST"]),
        Route("/_sandbox/changes", control.changes, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(Gate, state=state)],
        exception_handlers={
            MaintainXError: _maintainx_error,
            SandboxError: _sandbox_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
        lifespan=lifespan,
    )
    app.state.sandbox = state
    app.state.maintainx_comments = {}
    return app


__all__ = ["MaintainXError", "create_maintainx_app", "organization_id", "present"]
