"""Webhook endpoints: configuration, secrets and rotation, enable and disable.

Secrets are encrypted at rest. During a rotation the previous secret keeps signing beside
the new one until `previous_secret_expires_at`, so receivers can switch without a gap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from maintlink.domain import events
from maintlink.domain.event_types import EVENT_TYPES
from maintlink.errors import MaintlinkError
from maintlink.ids import new_id
from maintlink.runtime import Runtime
from maintlink.store.tables import attempts, connections, deliveries, webhook_endpoints
from maintlink.webhooks import signing
from maintlink.webhooks.urls import InvalidWebhookURL, parse_allowed_networks, validate_webhook_url

# Headers maintlink sets itself, or that would break the request if overridden.
RESERVED_HEADERS = frozenset({
    "webhook-id", "webhook-timestamp", "webhook-signature", "maintlink-version",
    "content-type", "content-length", "user-agent", "host", "connection",
    "transfer-encoding", "te", "upgrade", "keep-alive", "proxy-authorization", "trailer",
})
SUBSCRIBABLE = sorted(EVENT_TYPES)


def check_url(rt: Runtime, url: str) -> str:
    try:
        return validate_webhook_url(
            url,
            allow_http=rt.settings.webhook_allow_http,
            allowed_networks=parse_allowed_networks(rt.settings.webhook_allowed_networks),
        )
    except InvalidWebhookURL as exc:
        raise MaintlinkError("INVALID_WEBHOOK_URL", str(exc.reason)) from exc


def check_events(types: Sequence[str] | None) -> list[str] | None:
    if types is None:
        return None
    unknown = sorted(set(types) - set(EVENT_TYPES))
    if unknown:
        raise MaintlinkError(
            "VALIDATION_ERROR", f"Unknown event types: {', '.join(unknown)}.",
            details={"errors": [{"location": "body.events", "message": f"unknown type {t}"}
                                for t in unknown],
                     "event_types": SUBSCRIBABLE},
        )
    return sorted(set(types))


def check_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in (headers or {}).items():
        lower = name.lower()
        if lower in RESERVED_HEADERS or lower.startswith("webhook-"):
            raise MaintlinkError("VALIDATION_ERROR", f"The header '{name}' cannot be set.",
                                 details={"errors": [{"location": f"body.headers.{name}",
                                                      "message": "reserved header"}]})
        if any(c in value for c in "\r\n\x00") or any(c in name for c in "\r\n\x00: "):
            raise MaintlinkError("VALIDATION_ERROR", f"The header '{name}' is malformed.",
                                 details={"errors": [{"location": f"body.headers.{name}",
                                                      "message": "malformed header"}]})
        out[name] = value
    return out


def check_version(rt: Runtime, api_version: str) -> str:
    if rt.versions.get(api_version) is None:
        raise MaintlinkError(
            "UNSUPPORTED_API_VERSION", f"API version '{api_version}' is not supported.",
            details={"supported_versions": rt.versions.names},
        )
    return api_version


async def _check_connection(conn: AsyncConnection, account_id: str, connection_id: str) -> None:
    row = (await conn.execute(select(connections.c.id).where(
        connections.c.id == connection_id, connections.c.account_id == account_id))).first()
    if row is None:
        raise MaintlinkError("NOT_FOUND", f"No connection '{connection_id}'.")


async def create_endpoint(
    conn: AsyncConnection,
    rt: Runtime,
    *,
    account_id: str,
    url: str,
    event_types: Sequence[str] | None = None,
    connection_id: str | None = None,
    description: str | None = None,
    api_version: str = "v1",
    headers: Mapping[str, str] | None = None,
    rate_limit_per_second: int | None = None,
    managed_by_connection: bool = False,
) -> tuple[Row[Any], str]:
    """Returns (row, secret). The secret can be read again with `GET /{id}/secret`."""
    url = check_url(rt, url)
    types = check_events(event_types)
    hdrs = check_headers(headers)
    check_version(rt, api_version)
    if connection_id is not None:
        await _check_connection(conn, account_id, connection_id)
    now = rt.clock()
    secret = signing.generate_secret()
    endpoint_id = new_id("ep")
    await conn.execute(webhook_endpoints.insert().values(
        id=endpoint_id, account_id=account_id, connection_id=connection_id,
        managed_by_connection=1 if managed_by_connection else 0, url=url,
        description=description, events=types, api_version=api_version, headers=hdrs,
        rate_limit_per_second=rate_limit_per_second,
        secret_encrypted=rt.cipher.encrypt(secret.encode()), status="enabled",
        created_at=now, updated_at=now,
    ))
    return await get_endpoint(conn, account_id, endpoint_id), secret


async def get_endpoint(
    conn: AsyncConnection, account_id: str, endpoint_id: str, *, for_update: bool = False
) -> Row[Any]:
    query = select(webhook_endpoints).where(
        webhook_endpoints.c.id == endpoint_id, webhook_endpoints.c.account_id == account_id)
    if for_update:
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    if row is None:
        raise MaintlinkError("NOT_FOUND", f"No webhook endpoint '{endpoint_id}'.")
    return row


async def list_endpoints(
    conn: AsyncConnection, account_id: str, *, after: str | None, limit: int,
    connection_id: str | None = None, status: str | None = None,
) -> list[Row[Any]]:
    query = select(webhook_endpoints).where(webhook_endpoints.c.account_id == account_id)
    if after:
        query = query.where(webhook_endpoints.c.id > after)
    if connection_id:
        query = query.where(webhook_endpoints.c.connection_id == connection_id)
    if status:
        query = query.where(webhook_endpoints.c.status == status)
    return list((await conn.execute(query.order_by(webhook_endpoints.c.id).limit(limit))).all())


async def update_endpoint(
    conn: AsyncConnection, rt: Runtime, account_id: str, endpoint_id: str,
    changes: Mapping[str, Any],
) -> Row[Any]:
    await get_endpoint(conn, account_id, endpoint_id, for_update=True)
    values: dict[str, Any] = {}
    if "url" in changes:
        values["url"] = check_url(rt, changes["url"])
    if "events" in changes:
        values["events"] = check_events(changes["events"])
    if "headers" in changes:
        values["headers"] = check_headers(changes["headers"])
    if "api_version" in changes:
        values["api_version"] = check_version(rt, changes["api_version"])
    if "connection_id" in changes:
        if changes["connection_id"] is not None:
            await _check_connection(conn, account_id, changes["connection_id"])
        values["connection_id"] = changes["connection_id"]
    for key in ("description", "rate_limit_per_second"):
        if key in changes:
            values[key] = changes[key]
    if values:
        values["updated_at"] = rt.clock()
        await conn.execute(update(webhook_endpoints)
                           .where(webhook_endpoints.c.id == endpoint_id).values(**values))
    return await get_endpoint(conn, account_id, endpoint_id)


async def delete_endpoint(conn: AsyncConnection, account_id: str, endpoint_id: str) -> None:
    await get_endpoint(conn, account_id, endpoint_id)
    # Deliveries first: their row locks make a worker still recording one wait, and then
    # find it gone, so no attempt of this endpoint is written after the next statement.
    await conn.execute(delete(deliveries).where(deliveries.c.endpoint_id == endpoint_id))
    await conn.execute(delete(attempts).where(attempts.c.endpoint_id == endpoint_id))
    await conn.execute(delete(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id))


def current_secret(rt: Runtime, row: Row[Any]) -> str:
    return rt.cipher.decrypt(row.secret_encrypted).decode()


def signing_secrets(rt: Runtime, row: Row[Any] | Mapping[str, Any], now: datetime) -> list[bytes]:
    """The secrets that sign a delivery now: the current one, plus the previous one while
    its overlap lasts."""
    r = row._mapping if isinstance(row, Row) else row
    out = [signing.decode_secret(rt.cipher.decrypt(r["secret_encrypted"]).decode())]
    expires = r["previous_secret_expires_at"]
    if r["previous_secret_encrypted"] and expires is not None and expires > now:
        out.append(signing.decode_secret(rt.cipher.decrypt(r["previous_secret_encrypted"]).decode()))
    return out


async def rotate_secret(
    conn: AsyncConnection, rt: Runtime, account_id: str, endpoint_id: str,
    overlap: timedelta | None = None,
) -> tuple[Row[Any], str]:
    row = await get_endpoint(conn, account_id, endpoint_id, for_update=True)
    now = rt.clock()
    overlap = overlap if overlap is not None else timedelta(
        hours=rt.settings.webhook_secret_overlap_hours)
    secret = signing.generate_secret()
    await conn.execute(update(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id)
                       .values(secret_encrypted=rt.cipher.encrypt(secret.encode()),
                               previous_secret_encrypted=row.secret_encrypted,
                               previous_secret_expires_at=now + overlap, updated_at=now))
    return await get_endpoint(conn, account_id, endpoint_id), secret


async def enable_endpoint(
    conn: AsyncConnection, rt: Runtime, account_id: str, endpoint_id: str
) -> Row[Any]:
    await get_endpoint(conn, account_id, endpoint_id, for_update=True)
    await conn.execute(update(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id)
                       .values(status="enabled", disabled_reason=None, disabled_at=None,
                               failing_since=None, updated_at=rt.clock()))
    return await get_endpoint(conn, account_id, endpoint_id)


async def disable_endpoint(
    conn: AsyncConnection, endpoint_id: str, reason: str, now: datetime
) -> bool:
    """Disable an endpoint (410 Gone, or failing for too long): its pending deliveries
    fail now (`recover` can re-queue them), and the account's other endpoints get a
    `webhook_endpoint.disabled` event. Returns False if it was already disabled."""
    row = (await conn.execute(select(webhook_endpoints).where(
        webhook_endpoints.c.id == endpoint_id).with_for_update())).first()
    if row is None or row.status == "disabled":
        return False
    await conn.execute(update(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id)
                       .values(status="disabled", disabled_reason=reason, disabled_at=now,
                               updated_at=now))
    # Delivering rows too: a crashed worker's lease would otherwise never be taken up again
    # (claims skip disabled endpoints). A live worker still records its own outcome.
    await conn.execute(update(deliveries).where(
        deliveries.c.endpoint_id == endpoint_id,
        deliveries.c.status.in_(("pending", "delivering")),
    ).values(status="failed", next_attempt_at=None, updated_at=now))
    await events.emit(
        conn, account_id=row.account_id, type="webhook_endpoint.disabled",
        data={"endpoint_id": endpoint_id, "url": row.url, "reason": reason,
              "failing_since": row.failing_since},
        exclude_endpoint_id=endpoint_id, now=now,
    )
    return True


def endpoint_view(row: Row[Any]) -> dict[str, Any]:
    return {
        "object": "webhook_endpoint",
        "id": row.id,
        "url": row.url,
        "description": row.description,
        "events": row.events,
        "connection_id": row.connection_id,
        "managed_by_connection": bool(row.managed_by_connection),
        "api_version": row.api_version,
        "headers": row.headers,
        "rate_limit_per_second": row.rate_limit_per_second,
        "status": row.status,
        "disabled_reason": row.disabled_reason,
        "disabled_at": row.disabled_at,
        "failing_since": row.failing_since,
        "secret_rotation_ends_at": row.previous_secret_expires_at,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }
