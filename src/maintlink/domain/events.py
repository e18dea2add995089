"""The transactional outbox: events written with the change that causes them, fanned out
to the subscribed endpoints as deliveries in the same transaction.

The body each endpoint receives is rendered here, once, in that endpoint's pinned API
version; the delivery worker only signs and sends it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Row, Select, bindparam, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from maintlink.domain.event_types import EVENT_TYPES
from maintlink.ids import new_id
from maintlink.store.tables import connections, deliveries, events, webhook_endpoints
from maintlink.store.types import utcnow
from maintlink.versioning import VersionRegistry, default_registry

NOTIFY_CHANNEL = "maintlink_deliveries"
_NOTIFIED_IN = "maintlink_notified_in"  # conn.info: the transaction that has sent its NOTIFY

_registry = default_registry()
_max_body = 256 * 1024


def configure(registry: VersionRegistry, max_body_bytes: int) -> None:
    """The versions bodies are rendered in, and the largest body sent (per process)."""
    global _registry, _max_body
    _registry = registry
    _max_body = max_body_bytes


def _iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def envelope(row: Row[Any] | Mapping[str, Any], api_version: str) -> dict[str, Any]:
    r = row._mapping if isinstance(row, Row) else row
    return {
        "object": "event",
        "id": r["id"],
        "type": r["type"],
        "timestamp": _iso(r["created_at"]),
        "api_version": api_version,
        "connection_id": r["connection_id"],
        "customer_id": r["customer_id"],
        "sequence": r["sequence"],
        "data": r["data"],
    }


def render(row: Row[Any] | Mapping[str, Any], api_version: str) -> str:
    """The exact bytes an endpoint pinned to `api_version` receives."""
    version = _registry.get(api_version) or _registry.get("v1")
    assert version is not None
    body = version.transform_response(envelope(row, version.name))
    raw = orjson.dumps(body)
    if len(raw) > _max_body:
        # Too big to send: the receiver fetches the full event by id instead.
        body["data"] = {"truncated": True, "event_url": f"/api/v1/events/{body['id']}"}
        raw = orjson.dumps(body)
    return raw.decode()


def _jsonable(data: Mapping[str, Any]) -> dict[str, Any]:
    return orjson.loads(orjson.dumps(data))  # type: ignore[no-any-return]


def subscribed(endpoint_events: Sequence[str] | None, event_type: str) -> bool:
    return endpoint_events is None or event_type in endpoint_events


async def emit(
    conn: AsyncConnection,
    *,
    account_id: str,
    type: str,
    data: Mapping[str, Any],
    connection_id: str | None = None,
    customer_id: str | None = None,
    only_endpoint_id: str | None = None,
    exclude_endpoint_id: str | None = None,
    now: datetime | None = None,
) -> str:
    """Write one event and its deliveries inside the caller's transaction."""
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type}")
    payload = _jsonable(EVENT_TYPES[type].model_validate(data).model_dump(mode="json"))
    now = now or utcnow()
    sequence = None
    if connection_id is not None:
        # The row lock of this update orders concurrent emitters of one connection.
        sequence = (await conn.execute(
            update(connections).where(connections.c.id == connection_id)
            .values(event_sequence=connections.c.event_sequence + 1)
            .returning(connections.c.event_sequence)
        )).scalar_one()
    event_id = new_id("evt")
    row = {
        "id": event_id, "account_id": account_id, "connection_id": connection_id,
        "customer_id": customer_id, "type": type, "sequence": sequence, "data": payload,
        "created_at": now,
    }
    await conn.execute(_INSERT_EVENT, row)
    await fan_out(conn, row, trigger="scheduled", only_endpoint_id=only_endpoint_id,
                  exclude_endpoint_id=exclude_endpoint_id, now=now)
    return event_id


async def fan_out(
    conn: AsyncConnection,
    event: Mapping[str, Any],
    *,
    trigger: str,
    only_endpoint_id: str | None = None,
    exclude_endpoint_id: str | None = None,
    require_subscription: bool = True,
    now: datetime | None = None,
) -> list[str]:
    """Create a delivery of `event` for every enabled endpoint that should get it."""
    now = now or utcnow()
    query = _endpoints_query(
        only_endpoint_id is not None,
        event["connection_id"] is not None,
        exclude_endpoint_id is not None,
    )
    params = {
        "account_id": event["account_id"], "only_id": only_endpoint_id,
        "connection_id": event["connection_id"], "exclude_id": exclude_endpoint_id,
    }
    made = []
    bodies: dict[str, str] = {}
    for ep in await conn.execute(query, params):
        if require_subscription and not subscribed(ep.events, event["type"]):
            continue
        body = bodies.get(ep.api_version) or render(event, ep.api_version)
        bodies[ep.api_version] = body
        delivery_id = new_id("dlv")
        await conn.execute(_INSERT_DELIVERY, {
            "id": delivery_id, "event_id": event["id"], "endpoint_id": ep.id,
            "account_id": event["account_id"], "status": "pending", "body": body,
            "attempt_count": 0, "next_attempt_at": now, "trigger": trigger,
            "created_at": now, "updated_at": now,
        })
        made.append(delivery_id)
    if made:
        await notify(conn)
    return made


# Built once: constructing a statement per event cost more than executing it.
_INSERT_EVENT = events.insert()
_INSERT_DELIVERY = deliveries.insert()


@functools.cache
def _endpoints_query(only: bool, connection: bool, exclude: bool) -> Select[Any]:
    """The enabled endpoints an event goes to, for one shape of ``fan_out`` arguments."""
    ep = webhook_endpoints.c
    query = select(ep.id, ep.events, ep.api_version).where(
        ep.account_id == bindparam("account_id"), ep.status == "enabled"
    )
    if only:
        query = query.where(ep.id == bindparam("only_id"))
    else:
        scope = ep.connection_id.is_(None)
        if connection:
            scope = scope | (ep.connection_id == bindparam("connection_id"))
        query = query.where(scope)
    if exclude:
        query = query.where(ep.id != bindparam("exclude_id"))
    return query


async def notify(conn: AsyncConnection) -> None:
    """Wake delivery workers; PostgreSQL delivers NOTIFY at commit, so never too early.

    Once per transaction is enough (PostgreSQL folds repeats into one anyway): events
    emitted in bulk skip a round trip each. Inside a savepoint it is always sent, since
    rolling the savepoint back would take it along."""
    if conn.dialect.name == "postgresql":
        sync = conn.sync_connection
        tx = sync.get_transaction() if sync is not None else None
        if sync is not None and tx is not None and not sync.in_nested_transaction():
            if conn.info.get(_NOTIFIED_IN) is tx:
                return
            await conn.execute(text(f"NOTIFY {NOTIFY_CHANNEL}"))
            conn.info[_NOTIFIED_IN] = tx
            return
        await conn.execute(text(f"NOTIFY {NOTIFY_CHANNEL}"))
    else:
        from maintlink.webhooks.wakeup import local_wakeup

        local_wakeup()
