"""The event log: every event with the payload as each endpoint received it, its deliveries
and attempts, and resending."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from maintlink.domain import deliveries as outbox
from maintlink.domain.event_types import EVENT_TYPES
from maintlink.errors import MaintlinkError
from maintlink.web import dashboard_queries as queries
from maintlink.web.dashboard_core import (
    PAGE_SIZE,
    DashboardRoute,
    FormDep,
    SessionDep,
    clean_after,
    is_fragment,
    redirect,
    render,
    rt_of,
    safe_back,
    with_notice,
)

router = APIRouter(route_class=DashboardRoute)

Text = Annotated[str | None, Query(max_length=200)]
_ID = re.compile(r"(evt|dlv|att|conn|ep)_[0-9A-Za-z]{10,40}")


@router.get("/dashboard/events")
async def event_list(
    request: Request, session: SessionDep, q: Text = None, type: Text = None,
    connection: Text = None, customer: Text = None, after: Text = None,
) -> Response:
    rt = rt_of(request)
    q = (q or "").strip() or None
    type = type if type in EVENT_TYPES else None
    after = clean_after(after)
    missing_id = None
    async with rt.engine.connect() as conn:
        if q and _ID.fullmatch(q) and not is_fragment(request):
            # A pasted id jumps to its record; an unknown one says why it may be gone.
            target = await queries.jump_target(conn, session.account_id, q)
            if target is not None:
                return redirect(target)
            missing_id = q
        rows = [] if missing_id else await queries.event_rows(
            conn, session.account_id, q=q, type=type, connection_id=connection or None,
            customer=customer or None, after=after, limit=PAGE_SIZE + 1)
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        counts = await queries.deliveries_by_event(conn, session.account_id,
                                                   [r.id for r in rows])
    context: dict[str, Any] = {
        "rows": rows, "counts": counts, "types": sorted(EVENT_TYPES),
        "filters": {"q": q or "", "type": type or "", "connection": connection or "",
                    "customer": customer or ""},
        "filtered": bool(q or type or connection or customer), "missing_id": missing_id,
        "after": after, "next_after": rows[-1].id if more and rows else None,
        "retention_days": rt.settings.event_retention_days,
    }
    template = ("dashboard/_events_live.html" if is_fragment(request)
                else "dashboard/events.html")
    return render(request, template, context, session=session, section="events")


@router.get("/dashboard/events/{event_id}")
async def event_detail(request: Request, session: SessionDep, event_id: str) -> Response:
    rt = rt_of(request)
    async with rt.engine.connect() as conn:
        event = await outbox.get_event(conn, session.account_id, event_id)
        sent = await outbox.deliveries_of_event(conn, event.id)
        tried = await outbox.list_attempts(conn, session.account_id, after=None, limit=200,
                                           event_id=event.id)
        urls = await queries.endpoint_urls(conn, session.account_id,
                                           [d.endpoint_id for d in sent])
    by_delivery: dict[str, list[Any]] = {}
    for attempt in tried:
        by_delivery.setdefault(attempt.delivery_id, []).append(attempt)
    context = {
        "event": event, "deliveries": sent, "attempts": by_delivery, "urls": urls,
        "state_of": queries.delivery_state,
    }
    template = ("dashboard/_event_live.html" if is_fragment(request)
                else "dashboard/event.html")
    return render(request, template, context, session=session, section="events")


@router.post("/dashboard/events/{event_id}/resend")
async def resend(
    request: Request, session: SessionDep, form: FormDep, event_id: str
) -> Response:
    """A new delivery (trigger `manual`) to one endpoint, or to every endpoint that had one."""
    rt = rt_of(request)
    back = safe_back(form.get("back"), f"/dashboard/events/{event_id}")
    endpoint_id = str(form.get("endpoint_id") or "") or None
    try:
        async with rt.engine.begin() as conn:
            made = await outbox.resend(conn, session.account_id, event_id, endpoint_id,
                                       rt.clock())
    except MaintlinkError as exc:
        if exc.code != "WEBHOOK_ENDPOINT_DISABLED":
            raise
        return redirect(with_notice(back, "endpoint-disabled"))
    return redirect(with_notice(back, "resent", n=str(len(made))))
