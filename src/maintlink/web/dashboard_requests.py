"""The API request log: what support asks about, found by request id."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from maintlink.domain import request_log
from maintlink.web import dashboard_queries as queries
from maintlink.web.dashboard_core import (
    PAGE_SIZE,
    DashboardRoute,
    SessionDep,
    clean_after,
    is_fragment,
    render,
    rt_of,
)

router = APIRouter(route_class=DashboardRoute)

Text = Annotated[str | None, Query(max_length=200)]
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@router.get("/dashboard/requests")
async def request_list(
    request: Request, session: SessionDep, request_id: Text = None, connection: Text = None,
    status: Text = None, method: Text = None, after: Text = None,
) -> Response:
    rt = rt_of(request)
    request_id = (request_id or "").strip() or None
    connection = (connection or "").strip() or None
    status = status if status in request_log.STATUS_CLASSES else None
    method = method if method in METHODS else None
    after = clean_after(after)
    async with rt.engine.connect() as conn:
        rows = await request_log.list_requests(
            conn, session.account_id, after=after, limit=PAGE_SIZE + 1, connection_id=connection,
            request_id=request_id, status_class=status, method=method)
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        labels = await queries.connection_labels(conn, session.account_id,
                                                 [r.connection_id for r in rows])
    context: dict[str, Any] = {
        "rows": rows, "labels": labels, "methods": METHODS,
        "status_classes": request_log.STATUS_CLASSES,
        "filters": {"request_id": request_id or "", "connection": connection or "",
                    "status": status or "", "method": method or ""},
        "filtered": bool(request_id or connection or status or method),
        "after": after, "next_after": rows[-1].id if more and rows else None,
        "retention_days": rt.settings.request_log_retention_days,
        "flush_seconds": rt.settings.request_log_flush_seconds,
    }
    template = ("dashboard/_requests_live.html" if is_fragment(request)
                else "dashboard/requests.html")
    return render(request, template, context, session=session, section="requests")
