from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter
from sqlalchemy import update

from maintlink.api.auth import Admin, AnyAuth, ConnectionPrincipal, RuntimeDep
from maintlink.api.pagination import Cursor, PageSize, decode_cursor, page
from maintlink.api.schemas import (
    ERROR_RESPONSES,
    ConnectionWithToken,
    FieldMappings,
    FieldMappingsUpdate,
    Reauthorize,
    SyncList,
    SyncRequested,
    SyncStatus,
)
from maintlink.connectors.registry import get_connector_class
from maintlink.domain import connections as conns
from maintlink.domain import syncs
from maintlink.errors import MaintlinkError
from maintlink.store.tables import connections
from maintlink.unified import ENTITY_API

router = APIRouter(tags=["syncs"], responses=ERROR_RESPONSES)

_PATH = re.compile(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*")


@router.post("/connections/{connection_id}/syncs", status_code=202,
             response_model=SyncRequested, summary="Start a sync now")
async def start_sync(connection_id: str, principal: Admin, rt: RuntimeDep) -> Any:
    """Queues a sync for the next free worker (at most one runs per connection); follow
    it with `GET /connections/{id}/sync-status`."""
    now = rt.clock()
    async with rt.engine.begin() as conn:
        await syncs.request_sync(conn, principal.account_id, connection_id, now)
    return {"object": "sync_request", "connection_id": connection_id, "requested_at": now,
            "status_url": f"/api/v1/connections/{connection_id}/sync-status"}


@router.get("/connections/{connection_id}/syncs", response_model=SyncList,
            summary="List sync runs, newest first")
async def list_syncs(
    connection_id: str, principal: Admin, rt: RuntimeDep,
    cursor: Cursor = None, page_size: PageSize = 100,
) -> Any:
    after = decode_cursor("syncs", cursor)
    async with rt.engine.connect() as conn:
        await conns.get_connection(conn, connection_id, account_id=principal.account_id)
        rows = await syncs.list_syncs(conn, connection_id, after=after, limit=page_size + 1)
    return page("syncs", [syncs.sync_view(r) for r in rows], page_size)


@router.get("/connections/{connection_id}/sync-status", response_model=SyncStatus,
            summary="Sync status, overall and per entity")
async def sync_status(connection_id: str, principal: AnyAuth, rt: RuntimeDep) -> Any:
    if isinstance(principal, ConnectionPrincipal) and principal.connection_id != connection_id:
        raise MaintlinkError("NOT_FOUND", f"No connection '{connection_id}'.")
    async with rt.engine.connect() as conn:
        row = await conns.get_connection(conn, connection_id, account_id=principal.account_id)
        entities = get_connector_class(row.integration).entities
        return await syncs.sync_status(conn, row, entities)


@router.post("/connections/{connection_id}/reauthorize", response_model=ConnectionWithToken,
             tags=["connections"], summary="Reauthorize with new credentials")
async def reauthorize(
    connection_id: str, body: Reauthorize, principal: Admin, rt: RuntimeDep
) -> Any:
    """Checks the new credentials live, keeps the connection id, its history and data,
    issues a new token (the old one stops working), returns to `active`, sends
    `connection.reauthorized` and starts an incremental sync."""
    async with rt.engine.connect() as conn:
        row = await conns.get_connection(conn, connection_id, account_id=principal.account_id)
    info = await conns.validate_credentials(rt, row.integration, body.credentials,
                                            row.settings or {})
    async with rt.engine.begin() as conn:
        row, token = await conns.reauthorize(
            conn, rt, account_id=principal.account_id, connection_id=connection_id,
            credentials=body.credentials, account_info=info)
    return {**conns.connection_view(row), "token": token}


def _mappings_view(connection_id: str, raw: Any) -> dict[str, Any]:
    return {"object": "field_mappings", "connection_id": connection_id,
            "mappings": raw if isinstance(raw, dict) else {}}


@router.get("/connections/{connection_id}/field-mappings", response_model=FieldMappings,
            tags=["connections"], summary="Per-connection field mappings")
async def get_field_mappings(connection_id: str, principal: Admin, rt: RuntimeDep) -> Any:
    async with rt.engine.connect() as conn:
        row = await conns.get_connection(conn, connection_id, account_id=principal.account_id)
    return _mappings_view(connection_id, row.field_mappings)


@router.put("/connections/{connection_id}/field-mappings", response_model=FieldMappings,
            tags=["connections"], summary="Replace the field mappings")
async def put_field_mappings(
    connection_id: str, body: FieldMappingsUpdate, principal: Admin, rt: RuntimeDep
) -> Any:
    """Remap a unified field or add a custom field from the raw record, per entity.
    Applied when records are read: no re-sync needed."""
    errors = []
    for entity, mapping in body.mappings.items():
        if entity not in ENTITY_API:
            errors.append({"location": f"body.mappings.{entity}", "message": "unknown entity"})
            continue
        model = ENTITY_API[entity][2]
        fixed = {"id", "remote_id", "created_at", "updated_at", "modified_at", "deleted_at",
                 "object", "remote_data", "custom_fields"}
        for name, path in {**mapping.fields, **mapping.custom_fields}.items():
            if not _PATH.fullmatch(path):
                errors.append({"location": f"body.mappings.{entity}.{name}",
                               "message": "path must be dotted keys, e.g. `meta.code`"})
        for name in mapping.fields:
            if name not in model.model_fields or name in fixed:
                errors.append({"location": f"body.mappings.{entity}.fields.{name}",
                               "message": "not a remappable unified field"})
    if errors:
        raise MaintlinkError("VALIDATION_ERROR", "; ".join(
            f"{e['location']}: {e['message']}" for e in errors), details={"errors": errors})
    value = {e: m.model_dump() for e, m in body.mappings.items()}
    async with rt.engine.begin() as conn:
        await conns.get_connection(conn, connection_id, account_id=principal.account_id)
        await conn.execute(update(connections).where(connections.c.id == connection_id)
                           .values(field_mappings=value))
    return _mappings_view(connection_id, value)
