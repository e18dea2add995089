"""The unified data API, read with a connection token, served from the synced store."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, create_model
from sqlalchemy import Row, exists, func, literal, select, text
from sqlalchemy.sql.elements import ColumnElement

from maintlink.api.auth import ConnectionAuth, RuntimeDep
from maintlink.api.pagination import Cursor, PageSize, decode_cursor, page
from maintlink.api.schemas import ERROR_RESPONSES
from maintlink.domain import writes
from maintlink.domain.connections import get_connection
from maintlink.domain.records import record_view
from maintlink.errors import MaintlinkError
from maintlink.store.tables import records
from maintlink.unified import (
    ENTITY_API,
    PurchaseOrderCreate,
    WorkOrderCreate,
    WorkOrderUpdate,
)

router = APIRouter(tags=["data"], responses=ERROR_RESPONSES)

IncludeRemote = Annotated[bool, Query(description="Add the raw record as `remote_data`")]
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", max_length=255,
           description="Retrying with the same key and body performs the write once"),
]


def _field_filter(dialect: str, field: str, value: str, is_list: bool) -> ColumnElement[bool]:
    if not is_list:
        return records.c.data[field].as_string() == value
    if dialect == "postgresql":
        # `@>` of a JSON array and a JSON string: the array holds that string.
        return text(f"records.data -> :f_{field} @> to_jsonb(CAST(:v_{field} AS text))")\
            .bindparams(**{f"f_{field}": field, f"v_{field}": value})
    each = func.json_each(records.c.data, f"$.{field}").table_valued("value")
    return exists(select(literal(1)).select_from(each).where(each.c.value == value))


def _mapping_of(row: Row[Any], entity: str) -> dict[str, Any] | None:
    mappings = row.field_mappings or {}
    return mappings.get(entity) if isinstance(mappings, dict) else None


def _add_entity(entity: str) -> None:
    path, object_type, model, filters = ENTITY_API[entity]
    list_model: type[BaseModel] = create_model(
        f"{model.__name__}List", object=(str, "list"), data=(list[model], ...),  # type: ignore[valid-type]
        next_cursor=(str | None, None))
    label = object_type.replace("_", " ")
    list_fields = {"asset_ids", "vendor_ids", "assignee_user_ids"}

    async def list_records(
        request: Request, principal: ConnectionAuth, rt: RuntimeDep,
        modified_after: Annotated[datetime | None, Query(
            description="Only records maintlink saw change after this time (ISO 8601)")] = None,
        include_deleted: Annotated[bool, Query(
            description="Also records deleted at the source (with `deleted_at`)")] = False,
        include_remote_data: IncludeRemote = False,
        cursor: Cursor = None, page_size: PageSize = 100,
    ) -> Any:
        after = decode_cursor(entity, cursor)
        if modified_after is not None and modified_after.tzinfo is None:
            raise MaintlinkError("VALIDATION_ERROR", "`modified_after` needs a zone (…Z).",
                                 details={"errors": [{"location": "query.modified_after",
                                                      "message": "timezone required"}]})
        query = select(records).where(records.c.connection_id == principal.connection_id,
                                      records.c.entity == entity)
        if after:
            query = query.where(records.c.id > after)
        if modified_after is not None:
            query = query.where(records.c.modified_at > modified_after)
        if not include_deleted:
            query = query.where(records.c.deleted_at.is_(None))
        for name, field in filters.items():
            value = request.query_params.get(name)
            if value is not None:
                query = query.where(_field_filter(rt.dialect, field, value, field in list_fields))
        async with rt.engine.connect() as conn:
            conn_row = await get_connection(conn, principal.connection_id)
            rows = (await conn.execute(query.order_by(records.c.id).limit(page_size + 1))).all()
        mapping = _mapping_of(conn_row, entity)
        return page(entity, [record_view(r, object_type, include_remote_data=include_remote_data,
                                         mapping=mapping) for r in rows], page_size)

    # Filters are declared for the OpenAPI document; values are read from the query string.
    params = [{"name": n, "in": "query", "required": False, "schema": {"type": "string"},
               "description": f"Only records whose `{f}` is (or contains) this value"}
              for n, f in filters.items()]
    router.add_api_route(
        f"/{path}", list_records, methods=["GET"], response_model=list_model,
        summary=f"List {label}s", openapi_extra={"parameters": params} if params else None,
        description=f"{label.capitalize()}s of this token's connection, from the synced "
        "store, in a stable order; filter with `modified_after` to read only what changed.")

    async def get_record(
        record_id: str, principal: ConnectionAuth, rt: RuntimeDep,
        include_remote_data: IncludeRemote = False,
    ) -> Any:
        async with rt.engine.connect() as conn:
            conn_row = await get_connection(conn, principal.connection_id)
            row = (await conn.execute(select(records).where(
                records.c.id == record_id, records.c.connection_id == principal.connection_id,
                records.c.entity == entity))).first()
        if row is None:
            raise MaintlinkError("NOT_FOUND", f"No {label} '{record_id}'.")
        return record_view(row, object_type, include_remote_data=include_remote_data,
                           mapping=_mapping_of(conn_row, entity))

    router.add_api_route(f"/{path}/{{record_id}}", get_record, methods=["GET"],
                         response_model=model, summary=f"Get a {label}")


for _entity in ENTITY_API:
    _add_entity(_entity)


async def _write(
    request: Request, rt: Any, principal: Any, entity: str, body: BaseModel,
    key: str | None, record_id: str | None = None,
) -> JSONResponse:
    fields = body.model_dump(exclude_unset=True)
    digest = writes.request_hash(request.method, request.url.path, fields)
    view, replayed = await writes.write(
        rt, connection_id=principal.connection_id, entity=entity, fields=fields,
        record_id=record_id, idempotency_key=key, digest=digest)
    headers = {"Idempotent-Replayed": "true"} if replayed else {}
    status = 201 if record_id is None else 200
    return JSONResponse(view, status_code=status, headers=headers)


_WO = ENTITY_API["work_orders"][2]
_PO = ENTITY_API["purchase_orders"][2]


@router.post("/work-orders", status_code=201, response_model=_WO, summary="Create a work order")
async def create_work_order(
    request: Request, body: WorkOrderCreate, principal: ConnectionAuth, rt: RuntimeDep,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Written to the system first, then to the local copy. `501 OPERATION_NOT_SUPPORTED`
    when the system's API does not take it."""
    return await _write(request, rt, principal, "work_orders", body, idempotency_key)


@router.patch("/work-orders/{record_id}", response_model=_WO, summary="Update a work order")
async def update_work_order(
    request: Request, record_id: str, body: WorkOrderUpdate, principal: ConnectionAuth,
    rt: RuntimeDep, idempotency_key: IdempotencyKey = None,
) -> Any:
    """Status, assignees, notes, due date ... as the system allows."""
    return await _write(request, rt, principal, "work_orders", body, idempotency_key, record_id)


@router.post("/purchase-orders", status_code=201, response_model=_PO,
             summary="Create a purchase order")
async def create_purchase_order(
    request: Request, body: PurchaseOrderCreate, principal: ConnectionAuth, rt: RuntimeDep,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    return await _write(request, rt, principal, "purchase_orders", body, idempotency_key)
