"""Webhook endpoints: health over 24 hours, the attempt log with the answers received, and
the operator's levers (re-enable, recover, rotate the secret, send a test event)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from maintlink.domain import deliveries as outbox
from maintlink.domain import endpoints
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
    with_notice,
)

router = APIRouter(route_class=DashboardRoute)

Text = Annotated[str | None, Query(max_length=200)]
RECOVER_CHOICES = {"1": "1 hour", "24": "24 hours", "72": "3 days", "168": "7 days"}


@router.get("/dashboard/webhooks")
async def endpoint_list(
    request: Request, session: SessionDep, q: Text = None, status: Text = None,
    after: Text = None,
) -> Response:
    rt = rt_of(request)
    now = rt.clock()
    q = (q or "").strip() or None
    status = status if status in ("enabled", "failing", "disabled") else None
    after = clean_after(after)
    async with rt.engine.connect() as conn:
        rows = await queries.endpoint_rows(conn, session.account_id, status=status, q=q,
                                           after=after, limit=PAGE_SIZE + 1)
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        stats = await queries.endpoint_stats(conn, session.account_id, [r.id for r in rows], now)
        summary = await queries.delivery_summary(conn, session.account_id, now)
    context: dict[str, Any] = {
        "rows": rows, "stats": stats, "summary": summary, "state_of": queries.endpoint_state,
        "filters": {"q": q or "", "status": status or ""}, "filtered": bool(q or status),
        "after": after, "next_after": rows[-1].id if more and rows else None,
    }
    template = ("dashboard/_webhooks_live.html" if is_fragment(request)
                else "dashboard/webhooks.html")
    return render(request, template, context, session=session, section="webhooks")


@router.get("/dashboard/webhooks/{endpoint_id}")
async def endpoint_detail(
    request: Request, session: SessionDep, endpoint_id: str, outcome: Text = None,
    after: Text = None,
) -> Response:
    rt = rt_of(request)
    now = rt.clock()
    outcome = outcome if outcome in ("succeeded", "failed") else None
    after = clean_after(after)
    async with rt.engine.connect() as conn:
        row = await endpoints.get_endpoint(conn, session.account_id, endpoint_id)
        stats = (await queries.endpoint_stats(conn, session.account_id, [row.id], now))[row.id]
        rows = await outbox.list_attempts(conn, session.account_id, after=after,
                                          limit=PAGE_SIZE + 1, endpoint_id=row.id,
                                          status=outcome)
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        types = await queries.event_types(conn, session.account_id, {r.event_id for r in rows})
    context: dict[str, Any] = {
        "row": row, "state": queries.endpoint_state(row), "stats": stats, "attempts": rows,
        "types": types, "filters": {"outcome": outcome or ""}, "filtered": bool(outcome),
        "after": after, "next_after": rows[-1].id if more and rows else None,
        "recover_choices": RECOVER_CHOICES,
    }
    template = ("dashboard/_endpoint_live.html" if is_fragment(request)
                else "dashboard/endpoint.html")
    return render(request, template, context, session=session, section="webhooks")


def _detail_url(endpoint_id: str) -> str:
    return f"/dashboard/webhooks/{endpoint_id}"


@router.post("/dashboard/webhooks/{endpoint_id}/enable")
async def enable(
    request: Request, session: SessionDep, form: FormDep, endpoint_id: str
) -> Response:
    """Re-enable; with `recover`, also re-queue every failed delivery still kept."""
    rt = rt_of(request)
    now = rt.clock()
    async with rt.engine.begin() as conn:
        await endpoints.enable_endpoint(conn, rt, session.account_id, endpoint_id)
        recovered = 0
        if form.get("recover") == "1":
            # Everything that failed and is still kept (a delivery's first failure comes
            # after it was created, so the endpoint's `failing_since` would miss some).
            since = now - timedelta(days=rt.settings.event_retention_days)
            recovered = await outbox.recover(conn, session.account_id, endpoint_id, since,
                                             None, now)
    return redirect(with_notice(_detail_url(endpoint_id), "enabled", n=str(recovered)))


@router.post("/dashboard/webhooks/{endpoint_id}/recover")
async def recover(
    request: Request, session: SessionDep, form: FormDep, endpoint_id: str
) -> Response:
    rt = rt_of(request)
    now = rt.clock()
    hours = str(form.get("since_hours") or "24")
    since = now - timedelta(hours=int(hours) if hours in RECOVER_CHOICES else 24)
    try:
        async with rt.engine.begin() as conn:
            count = await outbox.recover(conn, session.account_id, endpoint_id, since, None, now)
    except MaintlinkError as exc:
        if exc.code != "WEBHOOK_ENDPOINT_DISABLED":
            raise
        return redirect(with_notice(_detail_url(endpoint_id), "endpoint-disabled"))
    return redirect(with_notice(_detail_url(endpoint_id), "recovered", n=str(count)))


@router.post("/dashboard/webhooks/{endpoint_id}/test")
async def send_test(
    request: Request, session: SessionDep, form: FormDep, endpoint_id: str
) -> Response:
    rt = rt_of(request)
    try:
        async with rt.engine.begin() as conn:
            event_id = await outbox.send_test(conn, session.account_id, endpoint_id, rt.clock())
    except MaintlinkError as exc:
        if exc.code != "WEBHOOK_ENDPOINT_DISABLED":
            raise
        return redirect(with_notice(_detail_url(endpoint_id), "endpoint-disabled"))
    return redirect(with_notice(_detail_url(endpoint_id), "test-sent", id=event_id))


@router.post("/dashboard/webhooks/{endpoint_id}/rotate-secret")
async def rotate_secret(
    request: Request, session: SessionDep, form: FormDep, endpoint_id: str
) -> Response:
    rt = rt_of(request)
    async with rt.engine.begin() as conn:
        row, secret = await endpoints.rotate_secret(conn, rt, session.account_id, endpoint_id)
    return render(request, "dashboard/secret.html", {
        "row": row, "secret": secret, "rotated": True,
    }, session=session, section="webhooks")


@router.post("/dashboard/webhooks/{endpoint_id}/secret")
async def reveal_secret(
    request: Request, session: SessionDep, form: FormDep, endpoint_id: str
) -> Response:
    """A POST (with its CSRF token), so a secret never sits in a URL or in history."""
    rt = rt_of(request)
    async with rt.engine.connect() as conn:
        row = await endpoints.get_endpoint(conn, session.account_id, endpoint_id)
    return render(request, "dashboard/secret.html", {
        "row": row, "secret": endpoints.current_secret(rt, row), "rotated": False,
    }, session=session, section="webhooks")
