"""Connector for the built-in sandbox CMMS (`maintlink.sandbox`), a MaintainX-style API.

API key in `Authorization: Bearer`, cursor pages `{data, next_cursor}`, an `updated_since`
change filter that also returns deletions (`deletedAt`), camelCase fields, ISO 8601 timestamps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import quote

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
    json_body,
    parse_base_url,
    send,
)
from maintlink.connectors.values import parse_datetime, parse_decimal

SYSTEM = "Sandbox CMMS"
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 500

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
# The sandbox has no CRITICAL; its highest priority is the closest.
PRIORITY_OUT = {**PRIORITY, "CRITICAL": "HIGH"}
WORK_ORDER_TYPE = {
    "CORRECTIVE": "CORRECTIVE",
    "PREVENTIVE": "PREVENTIVE",
    "INSPECTION": "INSPECTION",
}
ASSET_STATUS = {"ONLINE": "ACTIVE", "OFFLINE": "INACTIVE", "DECOMMISSIONED": "DECOMMISSIONED"}
LOCATION_TYPE = {"SITE": "SITE", "BUILDING": "BUILDING", "AREA": "AREA", "STOREROOM": "STOREROOM"}
# PENDING is the sandbox's draft state, REQUESTED waits for approval.
PURCHASE_ORDER_STATUS = {
    "PENDING": "DRAFT",
    "REQUESTED": "PENDING_APPROVAL",
    "APPROVED": "APPROVED",
    "DECLINED": "REJECTED",
    "PARTIALLY_FULFILLED": "PARTIALLY_RECEIVED",
    "COMPLETED": "RECEIVED",
    "CANCELED": "CANCELLED",
}
PURCHASE_ORDER_STATUS_OUT = {v: k for k, v in PURCHASE_ORDER_STATUS.items()}


def _iso(value: Any) -> str | None:
    """A unified datetime (or ISO string) as the sandbox's wire format."""
    parsed = parse_datetime(value)
    if value is not None and parsed is None:
        raise ValueError(f"not a date/time: {value!r}")
    return parsed.isoformat().replace("+00:00", "Z") if parsed else None


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _ids(values: Any) -> list[str]:
    return [str(v) for v in values] if isinstance(values, list) else []


def _common(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "remote_id": str(raw["id"]),
        "created_at": parse_datetime(raw.get("createdAt")),
        "updated_at": parse_datetime(raw.get("updatedAt")),
        "remote_deleted_at": parse_datetime(raw.get("deletedAt")),
    }


def _custom(raw: Mapping[str, Any]) -> dict[str, Any]:
    fields = raw.get("customFields")
    return dict(fields) if isinstance(fields, Mapping) else {}


def _map_work_order(raw: Mapping[str, Any]) -> dict[str, Any]:
    status, priority = raw.get("status"), raw.get("priority")
    categories = raw.get("categories") or []
    category = categories[0] if categories else None
    return {
        "remote_number": _str(raw.get("sequentialId")),
        "title": raw.get("title"),
        "description": raw.get("description"),
        "status": WORK_ORDER_STATUS.get(status, "UNKNOWN"),
        "remote_status": status,
        "priority": PRIORITY.get(priority),
        "remote_priority": priority,
        "type": WORK_ORDER_TYPE.get(category, "OTHER") if category else None,
        "asset_ids": [str(raw["assetId"])] if raw.get("assetId") else [],
        "location_id": _str(raw.get("locationId")),
        "assignee_user_ids": _ids(raw.get("assigneeIds")),
        "team_ids": [],
        "due_at": parse_datetime(raw.get("dueDate")),
        "started_at": parse_datetime(raw.get("startedAt")),
        "completed_at": parse_datetime(raw.get("completedAt")),
        "parent_work_order_id": _str(raw.get("parentId")),
        "custom_fields": _custom(raw),
    }


def _map_asset(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "remote_number": raw.get("barcode"),
        "name": raw.get("name"),
        "description": raw.get("description"),
        "serial_number": raw.get("serialNumber"),
        "model": raw.get("model"),
        "manufacturer": raw.get("manufacturer"),
        "barcode": raw.get("barcode"),
        "parent_asset_id": _str(raw.get("parentId")),
        "location_id": _str(raw.get("locationId")),
        "status": ASSET_STATUS.get(raw.get("status"), "UNKNOWN"),
        "criticality": raw.get("criticality"),
        "custom_fields": _custom(raw),
    }


def _map_location(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "remote_number": raw.get("code"),
        "name": raw.get("name"),
        "code": raw.get("code"),
        "address": raw.get("address"),
        "parent_location_id": _str(raw.get("parentId")),
        "type": LOCATION_TYPE.get(raw.get("type"), "OTHER"),
        "custom_fields": {},
    }


def _map_part(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "remote_number": raw.get("partNumber"),
        "name": raw.get("name"),
        "part_number": raw.get("partNumber"),
        "uom": raw.get("unit"),
        "unit_cost": parse_decimal(raw.get("unitCost")),
        "currency": raw.get("currency"),
        "qty_on_hand": parse_decimal(raw.get("availableQuantity")),
        "qty_min": parse_decimal(raw.get("minimumQuantity")),
        "qty_reserved": parse_decimal(raw.get("reservedQuantity")),
        "qty_on_order": parse_decimal(raw.get("orderedQuantity")),
        "stock_location_id": _str(raw.get("locationId")),
        "vendor_ids": _ids(raw.get("vendorIds")),
        "custom_fields": {},
    }


def _map_purchase_order(raw: Mapping[str, Any]) -> dict[str, Any]:
    lines = [
        {
            "remote_id": _str(item.get("id")),
            "part_id": _str(item.get("partId")),
            "description": item.get("description"),
            "qty_ordered": parse_decimal(item.get("quantity")),
            "qty_received": parse_decimal(item.get("quantityReceived")),
            "unit_price": parse_decimal(item.get("unitCost")),
        }
        for item in raw.get("items") or []
        if isinstance(item, Mapping)
    ]
    status = raw.get("status")
    return {
        "remote_number": raw.get("number"),
        "number": raw.get("number"),
        "status": PURCHASE_ORDER_STATUS.get(status, "UNKNOWN"),
        "remote_status": status,
        "vendor_id": _str(raw.get("vendorId")),
        "currency": raw.get("currency"),
        "total_amount": parse_decimal(raw.get("totalCost")),
        "ordered_at": parse_datetime(raw.get("orderedAt")),
        "due_at": parse_datetime(raw.get("dueDate")),
        "lines": lines,
        "custom_fields": {},
    }


def _map_vendor(raw: Mapping[str, Any]) -> dict[str, Any]:
    contacts = [dict(c) for c in raw.get("contacts") or [] if isinstance(c, Mapping)]
    return {
        "remote_number": raw.get("code"),
        "name": raw.get("name"),
        "code": raw.get("code"),
        "email": raw.get("email"),
        "phone": raw.get("phone"),
        "address": raw.get("address"),
        "contacts": contacts,
        "custom_fields": {},
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
        "role": raw.get("role"),
        "job_title": raw.get("jobTitle"),
        "is_active": bool(raw.get("isActive", True)),
        "custom_fields": {},
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


def _translate(fields: Mapping[str, Any], table: Mapping[str, tuple[str, Any]]) -> dict[str, Any]:
    """Unified field names/values -> the sandbox's; ValueError names what cannot be written."""
    unknown = sorted(set(fields) - set(table))
    if unknown:
        raise ValueError(f"{SYSTEM} cannot write these fields: {', '.join(unknown)}")
    body: dict[str, Any] = {}
    for name, value in fields.items():
        remote_name, convert = table[name]
        body[remote_name] = convert(value) if convert is not None else value
    return body


def _enum(mapping: Mapping[str, str], label: str) -> Any:
    def convert(value: Any) -> str:
        if value not in mapping:
            raise ValueError(f"{label} {value!r} is not one of {sorted(mapping)}")
        return mapping[value]

    return convert


def _first_asset(value: Any) -> str | None:
    ids = _ids(value) if value is not None else []
    if len(ids) > 1:
        raise ValueError(f"{SYSTEM} work orders hold one asset, got {len(ids)}")
    return ids[0] if ids else None


def _type(value: Any) -> list[str]:
    return [] if value in (None, "OTHER") else [_enum(WORK_ORDER_TYPE, "type")(value)]


def _lines(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise ValueError("lines must be a non-empty list")
    items = []
    for line in value:
        try:
            item: dict[str, Any] = {
                "quantity": int(line["qty_ordered"]),
                "unitCost": float(line.get("unit_price") or 0),
            }
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"each line needs a numeric qty_ordered: {exc}") from exc
        if line.get("part_id") is not None:
            item["partId"] = str(line["part_id"])
        if line.get("description") is not None:
            item["description"] = line["description"]
        items.append(item)
    return items


_WORK_ORDER_CREATE: dict[str, tuple[str, Any]] = {
    "title": ("title", None),
    "description": ("description", None),
    "status": ("status", _enum(WORK_ORDER_STATUS_OUT, "status")),
    "priority": ("priority", _enum(PRIORITY_OUT, "priority")),
    "type": ("categories", _type),
    "asset_ids": ("assetId", _first_asset),
    "location_id": ("locationId", _str),
    "assignee_user_ids": ("assigneeIds", _ids),
    "due_at": ("dueDate", _iso),
    "notes": ("notes", None),
}
_WORK_ORDER_UPDATE = {
    name: _WORK_ORDER_CREATE[name]
    for name in (
        "title",
        "description",
        "status",
        "priority",
        "assignee_user_ids",
        "due_at",
        "notes",
    )
}
_PURCHASE_ORDER_CREATE: dict[str, tuple[str, Any]] = {
    "vendor_id": ("vendorId", _str),
    "status": ("status", _enum(PURCHASE_ORDER_STATUS_OUT, "status")),
    "currency": ("currency", None),
    "due_at": ("dueDate", _iso),
    "lines": ("items", _lines),
}
_PATHS = {entity: entity.replace("_", "-") for entity in MAPPERS}


class SandboxConnector(Connector):
    slug: ClassVar[str] = "sandbox"
    name: ClassVar[str] = SYSTEM
    auth_type = "api_key"
    credential_fields: ClassVar[tuple[CredentialField, ...]] = (
        CredentialField(
            name="base_url",
            label="Instance URL",
            type="url",
            placeholder="http://127.0.0.1:8090",
            help="Where the sandbox runs (`maintlink sandbox` prints it).",
        ),
        CredentialField(
            name="api_key",
            label="API key",
            type="password",
            secret=True,
            placeholder="sbx_...",
            help="`sbx_demo_key` on the embedded sandbox, or one from `maintlink sandbox "
            "create-credential`.",
        ),
    )
    writable_entities: ClassVar[tuple[str, ...]] = ("work_orders", "purchase_orders")
    setting_fields: ClassVar[tuple[SettingField, ...]] = (
        page_size_setting(MAX_PAGE_SIZE, DEFAULT_PAGE_SIZE), TIMEOUT_SETTING,
    )

    # -- plumbing --------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        url = str(parse_base_url(self.credentials.get("base_url"))).rstrip("/")
        # Accept the API root too, as people paste whichever URL they have.
        return url if url.endswith("/api/v1") else f"{url}/api/v1"

    @property
    def timeout(self) -> float:
        return float(self.settings.get("timeout", DEFAULT_TIMEOUT_SECONDS))

    def _headers(self) -> dict[str, str]:
        key = self.credentials.get("api_key")
        if not isinstance(key, str) or not key.strip():
            raise ConnectorError(FailureKind.INVALID_CONFIGURATION, "API key is missing")
        return {"Authorization": f"Bearer {key.strip()}", "Accept": "application/json"}

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> Any:
        response = await send(
            self.http,
            method,
            f"{self.api_url}{path}",
            system=SYSTEM,
            request_timeout=self.timeout,
            headers=self._headers(),
            params=params,
            json=json,
        )
        return json_body(response, system=SYSTEM)

    def _path(self, entity: str) -> str:
        if entity not in _PATHS:
            raise ValueError(f"{SYSTEM} has no entity {entity!r}")
        return f"/{_PATHS[entity]}"

    # -- the contract ----------------------------------------------------------------------

    async def validate(self) -> AccountInfo:
        try:
            body = await self._request("GET", "/me")
        except ConnectorError as exc:
            # 404, a redirect or a non-JSON page on /me: the URL is not a sandbox API.
            if exc.status_code is not None and (exc.status_code == 404 or exc.status_code < 400):
                raise ConnectorError(
                    FailureKind.INVALID_CONFIGURATION,
                    f"No {SYSTEM} API at this URL (HTTP {exc.status_code} on /me)",
                    status_code=exc.status_code,
                ) from exc
            raise
        organization = body.get("organization") if isinstance(body, Mapping) else None
        if not isinstance(organization, Mapping):
            raise ConnectorError(
                FailureKind.PROVIDER_ERROR, f"{SYSTEM} answered /me without an organization"
            )
        api_key = body.get("api_key")
        return AccountInfo(
            remote_account_id=_str(organization.get("id")),
            remote_account_name=_str(organization.get("name")),
            extra={"api_key": dict(api_key)} if isinstance(api_key, Mapping) else {},
        )

    async def check_health(self) -> None:
        await self._request("GET", "/me")

    async def list_records(
        self, entity: str, *, modified_since: datetime | None = None, cursor: str | None = None
    ) -> AsyncIterator[Page]:
        """Pages in change order (updatedAt, id). With `modified_since`, deletions come too.

        `cursor` resumes a listing: it already holds the change filter of the listing it
        came from, so `modified_since` only applies to a fresh start.
        """
        path = self._path(entity)
        limit = max(1, min(int(self.settings.get("page_size", DEFAULT_PAGE_SIZE)), MAX_PAGE_SIZE))
        while True:
            params: dict[str, Any] = {"limit": limit}
            if cursor:
                params["cursor"] = cursor
            elif modified_since is not None:
                params["updated_since"] = _iso(modified_since)
            body = await self._request("GET", path, params=params)
            data = body.get("data") if isinstance(body, Mapping) else None
            if not isinstance(data, list):
                raise ConnectorError(
                    FailureKind.PROVIDER_ERROR, f"{SYSTEM} answered a page without a data list"
                )
            next_cursor = body.get("next_cursor")
            if next_cursor is not None and (
                not isinstance(next_cursor, str) or next_cursor == cursor
            ):
                # A cursor that does not move would loop forever.
                raise ConnectorError(
                    FailureKind.PROVIDER_ERROR, f"{SYSTEM} answered an unusable next_cursor"
                )
            yield Page(records=[dict(r) for r in data], next_cursor=next_cursor)
            if not next_cursor:
                return
            cursor = next_cursor

    def map_record(self, entity: str, raw: Mapping[str, Any]) -> dict[str, Any]:
        if entity not in MAPPERS:
            raise ValueError(f"{SYSTEM} has no entity {entity!r}")
        return {**_common(raw), **MAPPERS[entity](raw)}

    # -- writes (work orders: create/update; purchase orders: create) -----------------------

    async def create(self, entity: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Create a record from unified fields; returns the system's raw record.

        Raises ValueError for fields the system cannot take, ConnectorError when it refuses.
        """
        if entity == "work_orders":
            body = _translate(fields, _WORK_ORDER_CREATE)
        elif entity == "purchase_orders":
            body = _translate(fields, _PURCHASE_ORDER_CREATE)
        else:
            raise ValueError(f"{SYSTEM} cannot create {entity}")
        record: dict[str, Any] = await self._request("POST", self._path(entity), json=body)
        return record

    async def update(
        self, entity: str, remote_id: str, fields: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Update a work order from unified fields; returns the system's raw record."""
        if entity != "work_orders":
            raise ValueError(f"{SYSTEM} cannot update {entity}")
        body = _translate(fields, _WORK_ORDER_UPDATE)
        path = f"{self._path(entity)}/{quote(str(remote_id), safe='')}"
        record: dict[str, Any] = await self._request("PATCH", path, json=body)
        return record
