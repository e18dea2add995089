"""The delivery log: events, deliveries and attempts as the API reads them, and the
operator's levers (resend, recover, test)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from maintlink.domain import events as outbox
from maintlink.domain.endpoints import get_endpoint
from maintlink.errors import MaintlinkError
from maintlink.store.tables import attempts, deliveries, events, webhook_endpoints


def event_view(row: Row[Any]) -> dict[str, Any]:
    return {
        "object": "event", "id": row.id, "type": row.type, "timestamp": row.created_at,
        "connection_id": row.connection_id, "customer_id": row.customer_id,
        "sequence": row.sequence, "data": row.data,
    }


def delivery_view(row: Row[Any]) -> dict[str, Any]:
    return {
        "object": "webhook_delivery", "id": row.id, "event_id": row.event_id,
        "endpoint_id": row.endpoint_id, "status": row.status, "trigger": row.trigger,
        "attempt_count": row.attempt_count, "next_attempt_at": row.next_attempt_at,
        "last_status_code": row.last_status_code, "last_failure_kind": row.last_failure_kind,
        "created_at": row.created_at, "succeeded_at": row.succeeded_at,
    }


def attempt_view(row: Row[Any]) -> dict[str, Any]:
    return {
        "object": "webhook_attempt", "id": row.id, "delivery_id": row.delivery_id,
        "event_id": row.event_id, "endpoint_id": row.endpoint_id,
        "attempt_number": row.attempt_number, "trigger": row.trigger,
        "attempted_at": row.attempted_at, "duration_ms": row.duration_ms,
        "status_code": row.status_code, "success": bool(row.success),
        "failure_kind": row.failure_kind, "error": row.error,
        "response_body": row.response_body, "next_attempt_at": row.next_attempt_at,
    }


async def list_events(
    conn: AsyncConnection, account_id: str, *, after: str | None, limit: int,
    type: str | None = None, connection_id: str | None = None, since: datetime | None = None,
) -> list[Row[Any]]:
    """Newest first, like every log."""
    query = select(events).where(events.c.account_id == account_id)
    if after:
        query = query.where(events.c.id < after)
    if type:
        query = query.where(events.c.type == type)
    if connection_id:
        query = query.where(events.c.connection_id == connection_id)
    if since:
        query = query.where(events.c.created_at >= since)
    return list((await conn.execute(query.order_by(events.c.id.desc()).limit(limit))).all())


async def get_event(conn: AsyncConnection, account_id: str, event_id: str) -> Row[Any]:
    row = (await conn.execute(select(events).where(
        events.c.id == event_id, events.c.account_id == account_id))).first()
    if row is None:
        raise MaintlinkError("NOT_FOUND", f"No event '{event_id}' (or older than the retention).")
    return row


async def deliveries_of_event(conn: AsyncConnection, event_id: str) -> list[Row[Any]]:
    return list((await conn.execute(select(deliveries).where(
        deliveries.c.event_id == event_id).order_by(deliveries.c.id))).all())


async def list_attempts(
    conn: AsyncConnection, account_id: str, *, after: str | None, limit: int,
    endpoint_id: str | None = None, event_id: str | None = None, status: str | None = None,
) -> list[Row[Any]]:
    query = select(attempts).where(attempts.c.account_id == account_id)
    if endpoint_id:
        query = query.where(attempts.c.endpoint_id == endpoint_id)
    if event_id:
        query = query.where(attempts.c.event_id == event_id)
    if status == "succeeded":
        query = query.where(attempts.c.success == 1)
    elif status == "failed":
        query = query.where(attempts.c.success == 0)
    if after:
        query = query.where(attempts.c.id < after)
    return list((await conn.execute(query.order_by(attempts.c.id.desc()).limit(limit))).all())


async def resend(
    conn: AsyncConnection, account_id: str, event_id: str, endpoint_id: str | None,
    now: datetime,
) -> list[Row[Any]]:
    """New deliveries of an event (trigger `manual`): to one endpoint, or to every enabled
    endpoint that had a delivery of it."""
    event = await get_event(conn, account_id, event_id)
    if endpoint_id is not None:
        endpoint = await get_endpoint(conn, account_id, endpoint_id)
        if endpoint.status != "enabled":
            raise MaintlinkError("WEBHOOK_ENDPOINT_DISABLED",
                                 f"Webhook endpoint '{endpoint_id}' is disabled.")
        targets = [endpoint_id]
    else:
        targets = sorted({d.endpoint_id for d in await deliveries_of_event(conn, event_id)})
    made: list[str] = []
    for target in targets:
        made += await outbox.fan_out(conn, event._mapping, trigger="manual",
                                     only_endpoint_id=target, require_subscription=False,
                                     now=now)
    if not made:
        return []
    return list((await conn.execute(select(deliveries).where(
        deliveries.c.id.in_(made)).order_by(deliveries.c.id))).all())


async def recover(
    conn: AsyncConnection, account_id: str, endpoint_id: str, since: datetime,
    until: datetime | None, now: datetime,
) -> int:
    """Re-queue every failed delivery of the endpoint created in [since, until]."""
    endpoint = await get_endpoint(conn, account_id, endpoint_id)
    if endpoint.status != "enabled":
        raise MaintlinkError("WEBHOOK_ENDPOINT_DISABLED",
                             f"Webhook endpoint '{endpoint_id}' is disabled; enable it first.")
    query = update(deliveries).where(
        deliveries.c.endpoint_id == endpoint_id, deliveries.c.status == "failed",
        deliveries.c.created_at >= since,
    )
    if until is not None:
        query = query.where(deliveries.c.created_at <= until)
    result = await conn.execute(query.values(
        status="pending", next_attempt_at=now, attempt_count=0, trigger="recover",
        lease_owner=None, lease_expires_at=None, updated_at=now))
    count = int(result.rowcount or 0)
    if count:
        await outbox.notify(conn)
    return count


async def send_test(conn: AsyncConnection, account_id: str, endpoint_id: str,
                    now: datetime) -> str:
    endpoint = await get_endpoint(conn, account_id, endpoint_id)
    if endpoint.status != "enabled":
        raise MaintlinkError("WEBHOOK_ENDPOINT_DISABLED",
                             f"Webhook endpoint '{endpoint_id}' is disabled.")
    return await outbox.emit(
        conn, account_id=account_id, type="webhook.test", only_endpoint_id=endpoint_id,
        now=now,
        data={"endpoint_id": endpoint_id,
              "message": "This is a test event sent from maintlink."},
    )


async def endpoint_of_connection(
    conn: AsyncConnection, account_id: str, connection_id: str
) -> Row[Any] | None:
    return (await conn.execute(select(webhook_endpoints).where(
        webhook_endpoints.c.account_id == account_id,
        webhook_endpoints.c.connection_id == connection_id,
        webhook_endpoints.c.managed_by_connection == 1,
    ).order_by(webhook_endpoints.c.id))).first()
