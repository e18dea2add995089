from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query

from maintlink.api.auth import Admin, RuntimeDep
from maintlink.api.pagination import Cursor, PageSize, decode_cursor, page
from maintlink.api.schemas import (
    ERROR_RESPONSES,
    AttemptList,
    DeliveryList,
    Event,
    EventList,
    Resend,
)
from maintlink.domain import deliveries as log
from maintlink.domain.event_types import EVENT_TYPES
from maintlink.errors import MaintlinkError

router = APIRouter(tags=["events"], responses=ERROR_RESPONSES)

EventTypeFilter = Annotated[
    Literal[tuple(EVENT_TYPES)] | None,  # type: ignore[valid-type]
    Query(description="Only events of this type"),
]


@router.get("/events", response_model=EventList, summary="List events, newest first")
async def list_events(
    principal: Admin, rt: RuntimeDep,
    type: EventTypeFilter = None,
    connection_id: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[datetime | None, Query(description="Created at or after (ISO 8601)")]
    = None,
    cursor: Cursor = None, page_size: PageSize = 100,
) -> Any:
    if since is not None and since.tzinfo is None:
        raise MaintlinkError("VALIDATION_ERROR", "`since` needs a zone, e.g. ...T00:00:00Z.",
                             details={"errors": [{"location": "query.since",
                                                  "message": "timezone required"}]})
    after = decode_cursor("events", cursor)
    async with rt.engine.connect() as conn:
        rows = await log.list_events(conn, principal.account_id, after=after,
                                     limit=page_size + 1, type=type,
                                     connection_id=connection_id, since=since)
    return page("events", [log.event_view(r) for r in rows], page_size)


@router.get("/events/{event_id}", response_model=Event, summary="Get an event")
async def get_event(event_id: str, principal: Admin, rt: RuntimeDep) -> Any:
    """With its deliveries to each endpoint."""
    async with rt.engine.connect() as conn:
        row = await log.get_event(conn, principal.account_id, event_id)
        dels = await log.deliveries_of_event(conn, event_id)
    return {**log.event_view(row), "deliveries": [log.delivery_view(d) for d in dels]}


@router.get("/events/{event_id}/attempts", response_model=AttemptList,
            summary="Delivery attempts of an event")
async def event_attempts(
    event_id: str, principal: Admin, rt: RuntimeDep,
    status: Literal["succeeded", "failed"] | None = None,
    cursor: Cursor = None, page_size: PageSize = 100,
) -> Any:
    after = decode_cursor("attempts", cursor)
    async with rt.engine.connect() as conn:
        await log.get_event(conn, principal.account_id, event_id)
        rows = await log.list_attempts(conn, principal.account_id, after=after,
                                       limit=page_size + 1, event_id=event_id, status=status)
    return page("attempts", [log.attempt_view(r) for r in rows], page_size)


@router.post("/events/{event_id}/resend", status_code=202, response_model=DeliveryList,
             summary="Send an event again")
async def resend(
    event_id: str, principal: Admin, rt: RuntimeDep,
    body: Annotated[Resend | None, Body()] = None,
) -> Any:
    """To one endpoint (`endpoint_id`), or to every endpoint that had a delivery of it.
    The receiver sees the same `webhook-id`, so it can de-duplicate."""
    async with rt.engine.begin() as conn:
        rows = await log.resend(conn, principal.account_id, event_id,
                                body.endpoint_id if body else None, rt.clock())
    return {"object": "list", "data": [log.delivery_view(r) for r in rows], "next_cursor": None}
