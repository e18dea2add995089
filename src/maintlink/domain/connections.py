"""Connections: creation, the state machine, tokens, and what status readers see.

Every status change goes through `transition`, which records it in
`connection_transitions` in the caller's transaction; events hang off that one place.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Row, bindparam, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from maintlink.connectors.base import AccountInfo, Connector, ConnectorError, FailureKind
from maintlink.connectors.registry import get_connector_class
from maintlink.domain import events
from maintlink.errors import MaintlinkError
from maintlink.ids import hash_token, new_id, new_token, token_hint
from maintlink.runtime import Runtime
from maintlink.store.tables import connection_transitions, connections, customers, records
from maintlink.store.types import utcnow

CONNECTION_TOKEN_PREFIX = "mlc"


class Status(StrEnum):
    ACTIVE = "active"
    OFFLINE = "offline"
    REAUTH_REQUIRED = "reauth_required"
    DISCONNECTED = "disconnected"


# from -> allowed targets; None is "not yet created".
ALLOWED: dict[Status | None, frozenset[Status]] = {
    None: frozenset({Status.ACTIVE}),
    Status.ACTIVE: frozenset({Status.OFFLINE, Status.REAUTH_REQUIRED, Status.DISCONNECTED}),
    Status.OFFLINE: frozenset({Status.ACTIVE, Status.REAUTH_REQUIRED, Status.DISCONNECTED}),
    Status.REAUTH_REQUIRED: frozenset({Status.ACTIVE, Status.DISCONNECTED}),
    Status.DISCONNECTED: frozenset(),
}

RECONNECT_INSTRUCTIONS = (
    "The maintenance system no longer accepts this connection's credentials. Ask the customer "
    "to reconnect: create a link token in reconnect mode (POST /api/v1/link-tokens with "
    "connection_id) and send them its URL, or submit new credentials to "
    "POST /api/v1/connections/{id}/reauthorize. The connection id and its synced data are kept."
)


class InvalidTransition(RuntimeError):
    pass


@dataclass(frozen=True)
class Transition:
    connection_id: str
    from_status: Status | None
    to_status: Status
    reason: str | None
    at: datetime


_SELECT = select(
    connections, customers.c.external_id.label("customer_external_id")
).join(customers, customers.c.id == connections.c.customer_id)


# Built once: composing the statement costs more than running it on a short request.
_BY_ID = _SELECT.where(connections.c.id == bindparam("connection_id"))
_BY_ID_IN_ACCOUNT = _BY_ID.where(connections.c.account_id == bindparam("account_id"))


async def get_connection(
    conn: AsyncConnection, connection_id: str, *, account_id: str | None = None,
    for_update: bool = False,
) -> Row[Any]:
    query = _BY_ID if account_id is None else _BY_ID_IN_ACCOUNT
    if for_update:
        query = query.with_for_update(of=connections)
    params = {"connection_id": connection_id}
    if account_id is not None:
        params["account_id"] = account_id
    row = (await conn.execute(query, params)).first()
    if row is None:
        raise MaintlinkError("NOT_FOUND", f"No connection '{connection_id}'.")
    return row


async def list_connections(
    conn: AsyncConnection,
    account_id: str,
    *,
    after: str | None,
    limit: int,
    status: str | None = None,
    customer_id: str | None = None,
    integration: str | None = None,
) -> list[Row[Any]]:
    query = _SELECT.where(connections.c.account_id == account_id)
    if after:
        query = query.where(connections.c.id > after)
    if status:
        query = query.where(connections.c.status == status)
    if customer_id:
        query = query.where(customers.c.external_id == customer_id)
    if integration:
        query = query.where(connections.c.integration == integration)
    return list((await conn.execute(query.order_by(connections.c.id).limit(limit))).all())


async def transition(
    conn: AsyncConnection,
    connection_id: str,
    to_status: Status,
    *,
    reason: str | None,
    error_code: str | None = None,
    now: datetime | None = None,
) -> Transition | None:
    """The one way to change a connection's status. Returns None when nothing changed."""
    row = await get_connection(conn, connection_id, for_update=True)
    current = Status(row.status)
    if current == to_status:
        return None
    if to_status not in ALLOWED[current]:
        raise InvalidTransition(f"{current} -> {to_status} is not allowed")
    now = now or utcnow()
    await conn.execute(
        update(connections)
        .where(connections.c.id == connection_id)
        .values(status=to_status, status_reason=reason, status_changed_at=now, updated_at=now)
    )
    await _record(conn, row.account_id, connection_id, current, to_status, reason, error_code, now)
    await _emit_transition(conn, row, current, to_status, reason, error_code, now)
    return Transition(connection_id, current, to_status, reason, now)


async def _emit_transition(
    conn: AsyncConnection, row: Row[Any], current: Status, to_status: Status,
    reason: str | None, error_code: str | None, now: datetime,
) -> None:
    """The webhook event of each transition, in the transition's own transaction."""
    base = {"previous_status": current.value, "reason": reason}
    if to_status is Status.REAUTH_REQUIRED:
        event_type = "connection.reauthorization_required"
        data = {**base, "error_code": error_code,
                "reconnect": reconnect_details(row.id, reason)}
    elif to_status is Status.DISCONNECTED:
        event_type, data = "connection.disconnected", base
    elif current is Status.REAUTH_REQUIRED and to_status is Status.ACTIVE:
        event_type, data = "connection.reauthorized", base
    else:  # active <-> offline
        event_type = "connection.status_changed"
        data = {**base, "status": to_status.value, "online": to_status is Status.ACTIVE,
                "error_code": error_code}
    await events.emit(conn, account_id=row.account_id, type=event_type, data=data,
                      connection_id=row.id, customer_id=row.customer_external_id, now=now)


async def _record(
    conn: AsyncConnection, account_id: str, connection_id: str, from_status: Status | None,
    to_status: Status, reason: str | None, error_code: str | None, at: datetime,
) -> None:
    await conn.execute(
        connection_transitions.insert().values(
            id=new_id("tr"), connection_id=connection_id, account_id=account_id,
            from_status=from_status, to_status=to_status, reason=reason,
            error_code=error_code, at=at,
        )
    )


def check_credential_fields(cls: type[Connector], credentials: Mapping[str, Any]) -> None:
    known = {f.name for f in cls.credential_fields}
    errors = []
    for f in cls.credential_fields:
        value = credentials.get(f.name)
        if f.required and (value is None or (isinstance(value, str) and not value.strip())):
            errors.append({"field": f.name, "message": f"'{f.label}' is required."})
        elif value is not None and not isinstance(value, str):
            errors.append({"field": f.name, "message": f"'{f.label}' must be a string."})
    for name in credentials:
        if name not in known:
            errors.append({"field": name, "message": "Unknown credential field."})
    if errors:
        raise MaintlinkError(
            "INVALID_CREDENTIALS",
            "; ".join(f"{e['field']}: {e['message']}" for e in errors),
            details={"fields": errors},
        )


def provider_error(exc: ConnectorError) -> MaintlinkError:
    """How a connector failure reads to an API client during a live call."""
    if exc.kind in (FailureKind.AUTH, FailureKind.INVALID_CONFIGURATION):
        return MaintlinkError("INVALID_CREDENTIALS", exc.message)
    if exc.kind is FailureKind.PERMISSION_DENIED:
        return MaintlinkError("PROVIDER_PERMISSION_DENIED", exc.message)
    if exc.kind is FailureKind.UNAVAILABLE:
        return MaintlinkError("PROVIDER_UNAVAILABLE", exc.message)
    if exc.kind is FailureKind.RATE_LIMITED:
        retry = int(exc.retry_after or 60)
        return MaintlinkError(
            "PROVIDER_RATE_LIMITED", exc.message, headers={"Retry-After": str(max(retry, 1))}
        )
    return MaintlinkError("PROVIDER_ERROR", exc.message)


# maintlink's own settings; every other key of `settings` belongs to the connector.
SYNC_SETTINGS = {"sync_interval_minutes": 15, "history_days": 90}


def check_settings(integration: str, settings: Mapping[str, Any]) -> None:
    """Refuse connector settings the integration does not have or cannot take."""
    cls = get_connector_class(integration)
    problems = cls.settings_problems(
        {k: v for k, v in settings.items() if k not in SYNC_SETTINGS}
    )
    if problems:
        raise MaintlinkError(
            "VALIDATION_ERROR",
            f"Settings not accepted by {integration}: {', '.join(sorted(problems))}.",
            details={"errors": [{"location": f"body.settings.{name}", "message": why}
                                for name, why in sorted(problems.items())]},
        )


async def update_settings(
    conn: AsyncConnection, account_id: str, connection_id: str, changes: Mapping[str, Any],
    now: datetime | None = None,
) -> Row[Any]:
    """Merge `changes` into the connection's settings; None puts a setting back to its
    default. The next sync uses them; the schedule moves at the next run."""
    row = await get_connection(conn, connection_id, account_id=account_id, for_update=True)
    merged = dict(row.settings or {})
    for name, value in changes.items():
        if value is None:
            merged.pop(name, None)
            if name in SYNC_SETTINGS:
                merged[name] = SYNC_SETTINGS[name]
        else:
            merged[name] = value
    check_settings(row.integration, merged)
    await conn.execute(update(connections).where(connections.c.id == connection_id).values(
        settings=merged, updated_at=now or utcnow()))
    return await get_connection(conn, connection_id, account_id=account_id)


async def validate_credentials(
    rt: Runtime, integration: str, credentials: Mapping[str, Any], settings: Mapping[str, Any]
) -> AccountInfo:
    """Check credentials live against the system, outside any transaction."""
    cls = get_connector_class(integration)
    check_credential_fields(cls, credentials)
    check_settings(integration, settings)
    connector = cls(credentials, rt.http, settings)
    try:
        info = await connector.validate()
    except ConnectorError as exc:
        raise provider_error(exc) from exc
    return dataclasses.replace(info, credentials=dict(connector.credentials))


async def _customer_id(conn: AsyncConnection, account_id: str, external_id: str) -> str:
    query = select(customers.c.id).where(
        customers.c.account_id == account_id, customers.c.external_id == external_id
    )
    row = (await conn.execute(query)).first()
    if row:
        return str(row.id)
    customer_id = new_id("cus")
    await conn.execute(
        customers.insert().values(
            id=customer_id, account_id=account_id, external_id=external_id, created_at=utcnow()
        )
    )
    return customer_id


async def create_connection(
    conn: AsyncConnection,
    rt: Runtime,
    *,
    account_id: str,
    customer_external_id: str,
    integration: str,
    credentials: Mapping[str, Any],
    settings: Mapping[str, Any],
    account_info: AccountInfo,
    webhook: Mapping[str, Any] | None = None,
) -> tuple[Row[Any], str]:
    """Store an already validated connection; returns (row, token shown once)."""
    now = rt.clock()
    connection_id = new_id("conn")
    token = new_token(CONNECTION_TOKEN_PREFIX)
    await conn.execute(
        connections.insert().values(
            id=connection_id,
            account_id=account_id,
            customer_id=await _customer_id(conn, account_id, customer_external_id),
            integration=integration,
            status=Status.ACTIVE,
            credentials_encrypted=rt.cipher.encrypt_json(
                dict(account_info.credentials or credentials)),
            settings=dict(settings),
            remote_account={
                "id": account_info.remote_account_id,
                "name": account_info.remote_account_name,
            },
            token_hash=hash_token(token),
            token_hint=token_hint(token),
            token_issued_at=now,
            status_reason="connected",
            status_changed_at=now,
            last_checked_at=now,
            consecutive_failures=0,
            event_sequence=0,
            created_at=now,
            updated_at=now,
            next_sync_at=now,  # the initial sync starts at once
            next_health_check_at=now + timedelta(
                seconds=rt.settings.health_check_interval_seconds),
        )
    )
    await _record(conn, account_id, connection_id, None, Status.ACTIVE, "connected", None, now)
    if webhook is not None:
        from maintlink.domain import endpoints

        await endpoints.create_endpoint(
            conn, rt, account_id=account_id, url=webhook["url"],
            event_types=webhook.get("events"), connection_id=connection_id,
            description=f"Webhook of connection {connection_id}", managed_by_connection=True,
        )
    await events.emit(
        conn, account_id=account_id, type="connection.created", connection_id=connection_id,
        customer_id=customer_external_id, now=now,
        data={"integration": integration, "status": Status.ACTIVE.value,
              "remote_account": {"id": account_info.remote_account_id,
                                 "name": account_info.remote_account_name}},
    )
    return await get_connection(conn, connection_id), token


async def reauthorize(
    conn: AsyncConnection,
    rt: Runtime,
    *,
    account_id: str,
    connection_id: str,
    credentials: Mapping[str, Any],
    account_info: AccountInfo,
) -> tuple[Row[Any], str]:
    """New, already validated credentials for an existing connection: same id, history and
    data; a new token (the old one stops working); back to `active`; an incremental sync
    starts at once."""
    row = await get_connection(conn, connection_id, account_id=account_id, for_update=True)
    current = Status(row.status)
    if current is Status.DISCONNECTED:
        raise MaintlinkError(
            "CONNECTION_NOT_ACTIVE",
            "A disconnected connection cannot be reauthorized; create a new connection.")
    now = rt.clock()
    token = new_token(CONNECTION_TOKEN_PREFIX)
    await conn.execute(update(connections).where(connections.c.id == connection_id).values(
        credentials_encrypted=rt.cipher.encrypt_json(dict(account_info.credentials or credentials)),
        remote_account={"id": account_info.remote_account_id,
                        "name": account_info.remote_account_name},
        token_hash=hash_token(token), token_hint=token_hint(token), token_issued_at=now,
        consecutive_failures=0, last_error_code=None, last_error_message=None,
        last_error_at=None, last_checked_at=now, open_errors=None,
        next_sync_at=now, sync_requested_at=now, updated_at=now,
        next_health_check_at=now + timedelta(seconds=rt.settings.health_check_interval_seconds),
    ))
    if current is Status.REAUTH_REQUIRED:
        await transition(conn, connection_id, Status.ACTIVE, reason="reauthorized", now=now)
    else:
        if current is Status.OFFLINE:
            await transition(conn, connection_id, Status.ACTIVE, reason="reauthorized", now=now)
        await events.emit(
            conn, account_id=account_id, type="connection.reauthorized",
            connection_id=connection_id, customer_id=row.customer_external_id, now=now,
            data={"previous_status": current.value, "reason": "reauthorized"})
    await events.notify(conn)
    return await get_connection(conn, connection_id), token


async def rotate_token(conn: AsyncConnection, account_id: str, connection_id: str) -> str:
    row = await get_connection(conn, connection_id, account_id=account_id, for_update=True)
    if row.status == Status.DISCONNECTED:
        raise MaintlinkError(
            "CONNECTION_NOT_ACTIVE", "A disconnected connection cannot get a new token."
        )
    token = new_token(CONNECTION_TOKEN_PREFIX)
    now = utcnow()
    await conn.execute(
        update(connections)
        .where(connections.c.id == connection_id)
        .values(token_hash=hash_token(token), token_hint=token_hint(token),
                token_issued_at=now, updated_at=now)
    )
    return token


async def disconnect(conn: AsyncConnection, account_id: str, connection_id: str) -> Row[Any]:
    await get_connection(conn, connection_id, account_id=account_id)
    now = utcnow()
    await transition(conn, connection_id, Status.DISCONNECTED, reason="disconnected", now=now)
    await conn.execute(
        update(connections).where(connections.c.id == connection_id)
        .values(disconnected_at=now)
        .where(connections.c.disconnected_at.is_(None))
    )
    return await get_connection(conn, connection_id)


async def delete_data(conn: AsyncConnection, account_id: str, connection_id: str) -> int:
    await get_connection(conn, connection_id, account_id=account_id)
    result = await conn.execute(delete(records).where(records.c.connection_id == connection_id))
    return int(result.rowcount or 0)


async def count_records(conn: AsyncConnection, connection_id: str) -> int:
    query = select(func.count()).select_from(records).where(
        records.c.connection_id == connection_id, records.c.deleted_at.is_(None)
    )
    return int((await conn.execute(query)).scalar_one())


_BY_TOKEN = select(
    connections.c.id, connections.c.account_id, connections.c.status,
    connections.c.status_reason,
).where(connections.c.token_hash == bindparam("token_hash"))


async def authenticate_token(conn: AsyncConnection, token: str) -> Row[Any] | None:
    return (await conn.execute(_BY_TOKEN, {"token_hash": hash_token(token)})).first()


def reconnect_details(connection_id: str, reason: str | None) -> dict[str, Any]:
    return {
        "reason": reason,
        "instructions": RECONNECT_INSTRUCTIONS.replace("{id}", connection_id),
        "reauthorize_url": f"/api/v1/connections/{connection_id}/reauthorize",
        "link_token_url": "/api/v1/link-tokens",
    }


def status_view(row: Row[Any]) -> dict[str, Any]:
    status = Status(row.status)
    last_error = None
    if row.last_error_code:
        last_error = {
            "code": row.last_error_code,
            "message": row.last_error_message,
            "at": row.last_error_at,
        }
    return {
        "object": "connection_status",
        "connection_id": row.id,
        "status": status.value,
        "online": status is Status.ACTIVE,
        "reauth_required": status is Status.REAUTH_REQUIRED,
        "status_reason": row.status_reason,
        "status_changed_at": row.status_changed_at,
        "last_checked_at": row.last_checked_at,
        "last_error": last_error,
        "reconnect": (
            reconnect_details(row.id, row.status_reason)
            if status is Status.REAUTH_REQUIRED else None
        ),
    }


def connection_view(row: Row[Any]) -> dict[str, Any]:
    return {
        "object": "connection",
        "id": row.id,
        "customer_id": row.customer_external_id,
        "integration": row.integration,
        "status": row.status,
        "status_reason": row.status_reason,
        "settings": row.settings,
        "remote_account": row.remote_account,
        "token_hint": row.token_hint,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "status_changed_at": row.status_changed_at,
        "last_checked_at": row.last_checked_at,
        "disconnected_at": row.disconnected_at,
    }


async def transitions_of(conn: AsyncConnection, connection_id: str) -> list[dict[str, Any]]:
    query = (
        select(connection_transitions)
        .where(connection_transitions.c.connection_id == connection_id)
        .order_by(connection_transitions.c.id)
    )
    return [
        {
            "from_status": r.from_status, "to_status": r.to_status,
            "reason": r.reason, "error_code": r.error_code, "at": r.at,
        }
        for r in await conn.execute(query)
    ]
