"""Writes through to the maintenance system, then into the local copy; an
`Idempotency-Key` makes a retried write happen once."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from maintlink.connectors.base import ConnectorError, FailureKind
from maintlink.domain import health
from maintlink.domain.connections import get_connection, provider_error
from maintlink.domain.credentials import connector_for
from maintlink.domain.records import jsonable, record_view, to_mapped, upsert
from maintlink.errors import MaintlinkError
from maintlink.runtime import Runtime
from maintlink.store.tables import idempotency_keys, records
from maintlink.unified import ENTITY_API


def request_hash(method: str, path: str, body: Any) -> str:
    raw = orjson.dumps([method, path, jsonable(body)], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(raw).hexdigest()


async def _claim_key(rt: Runtime, connection_id: str, key: str, digest: str) -> Any:
    """Returns a stored answer to replay, or None after reserving the key for this request."""
    async with rt.engine.begin() as conn:
        row = (await conn.execute(select(idempotency_keys).where(
            idempotency_keys.c.connection_id == connection_id,
            idempotency_keys.c.key == key))).first()
        if row is None:
            try:
                async with conn.begin_nested():
                    await conn.execute(idempotency_keys.insert().values(
                        connection_id=connection_id, key=key, request_hash=digest,
                        created_at=rt.clock()))
                return None
            except IntegrityError:
                row = (await conn.execute(select(idempotency_keys).where(
                    idempotency_keys.c.connection_id == connection_id,
                    idempotency_keys.c.key == key))).one()
    if row.request_hash != digest:
        raise MaintlinkError("IDEMPOTENCY_KEY_REUSED")
    if row.status_code is None:
        raise MaintlinkError("IDEMPOTENCY_KEY_IN_USE")
    return row.response


async def _forget_key(rt: Runtime, connection_id: str, key: str) -> None:
    async with rt.engine.begin() as conn:
        await conn.execute(delete(idempotency_keys).where(
            idempotency_keys.c.connection_id == connection_id, idempotency_keys.c.key == key))


async def write(
    rt: Runtime,
    *,
    connection_id: str,
    entity: str,
    fields: Mapping[str, Any],
    record_id: str | None = None,
    idempotency_key: str | None = None,
    digest: str = "",
) -> tuple[dict[str, Any], bool]:
    """Create (record_id None) or update a record. Returns (record view, replayed)."""
    if idempotency_key:
        stored = await _claim_key(rt, connection_id, idempotency_key, digest)
        if stored is not None:
            return dict(stored), True
    try:
        view = await _write(rt, connection_id, entity, fields, record_id)
    except BaseException:
        if idempotency_key:
            await _forget_key(rt, connection_id, idempotency_key)
        raise
    if idempotency_key:
        async with rt.engine.begin() as conn:
            await conn.execute(update(idempotency_keys).where(
                idempotency_keys.c.connection_id == connection_id,
                idempotency_keys.c.key == idempotency_key,
            ).values(status_code=201 if record_id is None else 200, response=jsonable(view)))
    return view, False


async def _write(
    rt: Runtime, connection_id: str, entity: str, fields: Mapping[str, Any],
    record_id: str | None,
) -> dict[str, Any]:
    async with rt.engine.connect() as conn:
        row = await get_connection(conn, connection_id)
        remote_id = None
        if record_id is not None:
            remote_id = await _remote_id(conn, connection_id, entity, record_id)
    connector = connector_for(rt, row)
    if entity not in connector.writable_entities:
        raise MaintlinkError("OPERATION_NOT_SUPPORTED",
                             f"{connector.name} does not accept writes of {entity}.")
    try:
        if remote_id is None:
            raw = await connector.create(entity, fields)
        else:
            raw = await connector.update(entity, remote_id, fields)
    except ValueError as exc:
        raise MaintlinkError("VALIDATION_ERROR", str(exc), details={
            "errors": [{"location": "body", "message": str(exc)}]}) from exc
    except ConnectorError as exc:
        if exc.kind is FailureKind.PROVIDER_ERROR and exc.status_code is not None \
                and 400 <= exc.status_code < 500:
            # The system refused this request's values: the caller's problem, not ill health.
            raise MaintlinkError("PROVIDER_REJECTED", exc.message) from exc
        async with rt.engine.begin() as conn:
            await health.record_failure(conn, connection_id, exc, rt.clock(),
                                        offline_after=rt.settings.health_offline_after)
        raise provider_error(exc) from exc
    mapped = to_mapped(connector.map_record(entity, raw), raw)
    now = rt.clock()
    async with rt.engine.begin() as conn:
        await upsert(conn, connection_id, entity, [mapped], now)
        await health.record_success(conn, connection_id, now)
        stored = (await conn.execute(select(records).where(
            records.c.connection_id == connection_id, records.c.entity == entity,
            records.c.remote_id == mapped.remote_id))).one()
    return jsonable(record_view(stored, ENTITY_API[entity][1], include_remote_data=False))


async def _remote_id(
    conn: AsyncConnection, connection_id: str, entity: str, record_id: str
) -> str:
    row = (await conn.execute(select(records.c.remote_id).where(
        records.c.id == record_id, records.c.connection_id == connection_id,
        records.c.entity == entity, records.c.deleted_at.is_(None)))).first()
    if row is None:
        raise MaintlinkError("NOT_FOUND", f"No {entity.rstrip('s').replace('_', ' ')} "
                                          f"'{record_id}'.")
    return str(row.remote_id)
