from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from maintlink.api.auth import (
    Admin,
    AnyAuth,
    ConnectionAuth,
    ConnectionPrincipal,
    RuntimeDep,
    read_cache,
)
from maintlink.api.pagination import Cursor, PageSize, decode_cursor, page
from maintlink.api.schemas import (
    ERROR_RESPONSES,
    Connection,
    ConnectionCreate,
    ConnectionList,
    ConnectionSettings,
    ConnectionStatus,
    ConnectionUpdate,
    ConnectionWithToken,
    DataDeleted,
    TokenRotated,
)
from maintlink.domain import connections as conns
from maintlink.domain.endpoints import check_events, check_url
from maintlink.errors import MaintlinkError
from maintlink.ids import token_hint

router = APIRouter(tags=["connections"], responses=ERROR_RESPONSES)

StatusFilter = Annotated[
    conns.Status | None, Query(description="Only connections in this status")
]


@router.post(
    "/connections", status_code=201, response_model=ConnectionWithToken,
    summary="Create a connection",
)
async def create_connection(body: ConnectionCreate, principal: Admin, rt: RuntimeDep) -> Any:
    """Checks the credentials live against the system, then stores them encrypted. The
    answer holds the connection's bearer token, shown this once."""
    settings = (body.settings or ConnectionSettings()).model_dump()
    if body.webhook is not None:  # refuse a bad URL before calling the system
        check_url(rt, body.webhook.url)
        check_events(body.webhook.events)
    info = await conns.validate_credentials(rt, body.integration, body.credentials, settings)
    async with rt.engine.begin() as conn:
        row, token = await conns.create_connection(
            conn, rt, account_id=principal.account_id, customer_external_id=body.customer_id,
            integration=body.integration, credentials=body.credentials, settings=settings,
            account_info=info,
            webhook=body.webhook.model_dump() if body.webhook else None,
        )
    return {**conns.connection_view(row), "token": token}


@router.get("/connections", response_model=ConnectionList, summary="List connections")
async def list_connections(
    principal: Admin,
    rt: RuntimeDep,
    status: StatusFilter = None,
    customer_id: Annotated[str | None, Query(max_length=200)] = None,
    integration: Annotated[str | None, Query(max_length=64)] = None,
    cursor: Cursor = None,
    page_size: PageSize = 100,
) -> Any:
    after = decode_cursor("connections", cursor)
    async with rt.engine.connect() as conn:
        rows = await conns.list_connections(
            conn, principal.account_id, after=after, limit=page_size + 1,
            status=status, customer_id=customer_id, integration=integration,
        )
    return page("connections", [conns.connection_view(r) for r in rows], page_size)


@router.get("/connections/{connection_id}", response_model=Connection, summary="Get a connection")
async def get_connection(connection_id: str, principal: Admin, rt: RuntimeDep) -> Any:
    async with rt.engine.connect() as conn:
        row = await conns.get_connection(conn, connection_id, account_id=principal.account_id)
    return conns.connection_view(row)


@router.patch(
    "/connections/{connection_id}", response_model=Connection,
    summary="Change a connection's settings",
)
async def update_connection(
    connection_id: str, body: ConnectionUpdate, principal: Admin, rt: RuntimeDep
) -> Any:
    """Changes only the settings named: sync settings, or the integration's connector
    settings (`setting_fields` of its integration). A connector setting set to null goes back
    to its default. The next sync uses the new settings."""
    changes = body.settings.model_dump(exclude_unset=True)
    async with rt.engine.begin() as conn:
        row = await conns.update_settings(conn, principal.account_id, connection_id, changes)
    return conns.connection_view(row)


@router.get(
    "/connections/{connection_id}/status", response_model=ConnectionStatus,
    summary="Get a connection's status",
)
async def connection_status(
    connection_id: str, principal: AnyAuth, rt: RuntimeDep, request: Request
) -> Any:
    """With an admin key, or with the connection's own token (which still works here while
    the connection needs reauthorization, so the app can read why)."""
    if isinstance(principal, ConnectionPrincipal) and principal.connection_id != connection_id:
        raise MaintlinkError("NOT_FOUND", f"No connection '{connection_id}'.")
    # Apps poll this route: the row comes from the read cache, which any change to the
    # connection empties (see maintlink.api.read_cache).
    cache = read_cache(request)
    row = cache.get("connection", connection_id)
    if row is None:
        generation = cache.generation
        async with rt.reader.connect() as conn:
            row = await conns.get_connection(conn, connection_id)
        cache.put("connection", connection_id, row, generation)
    if row.account_id != principal.account_id:
        raise MaintlinkError("NOT_FOUND", f"No connection '{connection_id}'.")
    return conns.status_view(row)


@router.post(
    "/connections/{connection_id}/disconnect", response_model=Connection,
    summary="Disconnect a connection",
)
async def disconnect(connection_id: str, principal: Admin, rt: RuntimeDep) -> Any:
    """The token stops working at once and background work stops; synced data is kept
    until `DELETE /connections/{id}/data`. Disconnecting twice is harmless."""
    async with rt.engine.begin() as conn:
        row = await conns.disconnect(conn, principal.account_id, connection_id)
    return conns.connection_view(row)


@router.delete(
    "/connections/{connection_id}/data", response_model=DataDeleted,
    summary="Delete a connection's synced data",
)
async def delete_data(connection_id: str, principal: Admin, rt: RuntimeDep) -> Any:
    async with rt.engine.begin() as conn:
        count = await conns.delete_data(conn, principal.account_id, connection_id)
    return {"object": "data_deletion", "connection_id": connection_id, "deleted_records": count}


@router.post(
    "/connections/{connection_id}/token", response_model=TokenRotated,
    summary="Rotate a connection's token",
)
async def rotate_token(connection_id: str, principal: Admin, rt: RuntimeDep) -> Any:
    """Issues a new token; the previous one stops working at once."""
    async with rt.engine.begin() as conn:
        token = await conns.rotate_token(conn, principal.account_id, connection_id)
    return {"object": "connection_token", "connection_id": connection_id, "token": token,
            "token_hint": token_hint(token)}


@router.get(
    "/connection", response_model=Connection, summary="The connection of this token",
    tags=["connection token"],
)
async def current_connection(principal: ConnectionAuth, rt: RuntimeDep) -> Any:
    async with rt.engine.connect() as conn:
        row = await conns.get_connection(conn, principal.connection_id)
    return conns.connection_view(row)
