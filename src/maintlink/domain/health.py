"""What maintlink learns about a connection's health, from checks, syncs and writes.

A credential failure moves the connection to `reauth_required` at once. Network and 5xx
failures move it to `offline` after `OFFLINE_AFTER` in a row; one success brings it back.
Errors that need the developer's attention raise `connection.error` once, until the same
thing succeeds again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncConnection

from maintlink.connectors.base import ConnectorError, FailureKind
from maintlink.domain import events
from maintlink.domain.connections import Status, get_connection, transition
from maintlink.store.tables import connections

OFFLINE_AFTER = 3

ERROR_CODES = {
    FailureKind.AUTH: "PROVIDER_AUTH_FAILED",
    FailureKind.UNAVAILABLE: "PROVIDER_UNAVAILABLE",
    FailureKind.RATE_LIMITED: "PROVIDER_RATE_LIMITED",
    FailureKind.PERMISSION_DENIED: "PROVIDER_PERMISSION_DENIED",
    FailureKind.INVALID_CONFIGURATION: "PROVIDER_INVALID_CONFIGURATION",
    FailureKind.PROVIDER_ERROR: "PROVIDER_ERROR",
}


def error_code(exc: ConnectorError) -> str:
    return ERROR_CODES[exc.kind]


async def record_success(conn: AsyncConnection, connection_id: str, now: datetime) -> None:
    row = await get_connection(conn, connection_id, for_update=True)
    await conn.execute(update(connections).where(connections.c.id == connection_id).values(
        consecutive_failures=0, last_checked_at=now))
    if row.status == Status.OFFLINE:
        await transition(conn, connection_id, Status.ACTIVE,
                         reason="the system answers again", now=now)


async def record_failure(
    conn: AsyncConnection, connection_id: str, exc: ConnectorError, now: datetime,
    *, offline_after: int = OFFLINE_AFTER, entity: str | None = None,
) -> None:
    """Learn from a failed call. Rate limiting is not ill health: it is only noted."""
    row = await get_connection(conn, connection_id, for_update=True)
    if row.status in (Status.DISCONNECTED, Status.REAUTH_REQUIRED):
        return
    code = error_code(exc)
    values: dict[str, Any] = {"last_checked_at": now, "last_error_code": code,
                              "last_error_message": exc.message[:1000], "last_error_at": now}
    table = connections
    if exc.kind in (FailureKind.AUTH, FailureKind.INVALID_CONFIGURATION):
        await conn.execute(update(table).where(table.c.id == connection_id).values(**values))
        await transition(conn, connection_id, Status.REAUTH_REQUIRED, reason=exc.message,
                         error_code=code, now=now)
        return
    if exc.kind is FailureKind.UNAVAILABLE:
        failures = int(row.consecutive_failures or 0) + 1
        values["consecutive_failures"] = failures
        await conn.execute(update(table).where(table.c.id == connection_id).values(**values))
        if row.status == Status.ACTIVE and failures >= offline_after:
            await transition(conn, connection_id, Status.OFFLINE,
                             reason=f"{failures} failed calls in a row: {exc.message}",
                             error_code=code, now=now)
        return
    if exc.kind is FailureKind.RATE_LIMITED:
        await conn.execute(update(table).where(table.c.id == connection_id)
                           .values(last_checked_at=now))
        return
    await conn.execute(update(table).where(table.c.id == connection_id).values(**values))
    await raise_error_once(conn, row, code, exc.message, entity, now)


async def raise_error_once(
    conn: AsyncConnection, row: Any, code: str, message: str, entity: str | None,
    now: datetime,
) -> bool:
    """`connection.error` for something needing attention, once until it resolves."""
    key = f"{code}:{entity or ''}"
    open_errors = list(row.open_errors or [])
    if key in open_errors:
        return False
    open_errors.append(key)
    table = connections
    await conn.execute(update(table).where(table.c.id == row.id).values(open_errors=open_errors))
    await events.emit(conn, account_id=row.account_id, type="connection.error",
                      connection_id=row.id, customer_id=row.customer_external_id, now=now,
                      data={"error_code": code, "message": message[:1000], "entity": entity})
    return True


async def resolve_errors(
    conn: AsyncConnection, connection_id: str, *, entity: str | None = None
) -> None:
    """Forget open errors (all, or one entity's) after that thing worked again."""
    row = await get_connection(conn, connection_id)
    open_errors = list(row.open_errors or [])
    keep = [k for k in open_errors if entity is not None and not k.endswith(f":{entity}")]
    if keep != open_errors:
        table = connections
        await conn.execute(update(table).where(table.c.id == connection_id)
                           .values(open_errors=keep))



# --- scheduled checks --------------------------------------------------------------------------

async def claim_health_checks(rt: Any, limit: int) -> list[str]:
    """Connections due for a check; claiming pushes their next check forward, so two
    workers never check one connection at the same time."""
    from sqlalchemy import select

    from maintlink.domain.syncs import jittered

    now = rt.clock()
    due = (connections.c.status.in_([Status.ACTIVE, Status.OFFLINE])
           & (connections.c.next_health_check_at <= now))
    pick = select(connections.c.id).where(due).order_by(
        connections.c.next_health_check_at).limit(limit)
    if rt.dialect == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    interval = rt.settings.health_check_interval_seconds
    async with rt.engine.begin() as conn:
        result = await conn.execute(
            update(connections).where(connections.c.id.in_(pick.scalar_subquery()), due)
            .values(next_health_check_at=now + jittered(interval))
            .returning(connections.c.id))
        return [r.id for r in result]


async def check_connection(rt: Any, connection_id: str) -> None:
    """One health check: the connector's cheapest authenticated call."""
    from maintlink.domain.credentials import connector_for

    async with rt.engine.connect() as conn:
        row = await get_connection(conn, connection_id)
    if row.status not in (Status.ACTIVE, Status.OFFLINE):
        return
    try:
        await connector_for(rt, row).check_health()
    except ConnectorError as exc:
        async with rt.engine.begin() as conn:
            await record_failure(conn, connection_id, exc, rt.clock(),
                                 offline_after=rt.settings.health_offline_after)
        return
    async with rt.engine.begin() as conn:
        await record_success(conn, connection_id, rt.clock())
