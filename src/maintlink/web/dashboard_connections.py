"""Connections across all customers, one connection's detail, and what can be done to it:
sync now, send a reconnect link, disconnect."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from maintlink.connectors.registry import CONNECTORS
from maintlink.domain import connections as conns
from maintlink.domain import deliveries as outbox
from maintlink.domain import link_tokens as links
from maintlink.domain import request_log, syncs
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
RUNS = 5  # sync runs per page of a connection's page
DELIVERIES = 10  # the newest; the event pages hold the rest
EXPIRY_CHOICES = {"900": "15 minutes", "3600": "1 hour", "86400": "1 day", "604800": "7 days"}


@router.get("/dashboard")
async def home() -> Response:
    return redirect("/dashboard/connections")


@router.get("/dashboard/connections")
async def connection_list(
    request: Request, session: SessionDep, q: Text = None, status: Text = None,
    system: Text = None, customer: Text = None, after: Text = None,
) -> Response:
    rt = rt_of(request)
    now = rt.clock()
    q = (q or "").strip() or None
    status = status if status in queries.STATUSES else None
    after = clean_after(after)
    async with rt.engine.connect() as conn:
        counts = await queries.status_counts(conn, session.account_id)
        rows = await queries.connection_rows(
            conn, session.account_id, q=q, status=status, integration=system or None,
            customer=(customer or "").strip() or None, after=after, limit=PAGE_SIZE + 1)
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        facts = await queries.connection_facts(conn, session.account_id,
                                               [r.id for r in rows], now)
        summary = await queries.delivery_summary(conn, session.account_id, now)
        systems, customers = await queries.filter_choices(conn, session.account_id)
    context: dict[str, Any] = {
        "rows": rows, "facts": facts, "counts": counts, "total": sum(counts.values()),
        "summary": summary, "systems": systems, "customers": customers,
        "filters": {"q": q or "", "status": status or "", "system": system or "",
                    "customer": customer or ""},
        "filtered": bool(q or status or system or customer), "after": after,
        "next_after": rows[-1].id if more and rows else None,
    }
    template = ("dashboard/_connections_live.html" if is_fragment(request)
                else "dashboard/connections.html")
    return render(request, template, context, session=session, section="connections")


async def _detail_context(
    request: Request, session: SessionDep, connection_id: str, syncs_after: str | None,
) -> dict[str, Any]:
    rt = rt_of(request)
    now = rt.clock()
    account = session.account_id
    async with rt.engine.connect() as conn:
        row = await conns.get_connection(conn, connection_id, account_id=account)
        timeline = list(reversed(await conns.transitions_of(conn, row.id)))
        runs = await syncs.list_syncs(conn, row.id, after=syncs_after, limit=RUNS + 1)
        cls = CONNECTORS.get(row.integration)
        status = await syncs.sync_status(conn, row, tuple(cls.entities) if cls else ())
        recent_events = await outbox.list_events(conn, account, after=None, limit=10,
                                                 connection_id=row.id)
        sent = await queries.connection_deliveries(conn, account, row.id, after=None,
                                                   limit=DELIVERIES)
        latest = await queries.latest_attempts(conn, [d.id for d in sent])
        requests = await request_log.list_requests(conn, account, after=None, limit=10,
                                                   connection_id=row.id)
        facts = (await queries.connection_facts(conn, account, [row.id], now))[row.id]
        link_rows = await queries.reconnect_links(conn, account, row.id, now)
        redirect_default = await queries.last_redirect_uri(conn, account)
    return {
        "row": row, "timeline": timeline, "runs": runs[:RUNS],
        "runs_next": runs[RUNS - 1].id if len(runs) > RUNS else None, "syncs_after": syncs_after,
        "sync_status": status, "events": recent_events, "deliveries": sent,
        "latest": latest, "requests": requests, "facts": facts,
        "links": [(r, links.status_of(r, now).value) for r in link_rows],
        "redirect_default": redirect_default or "", "expiry_choices": EXPIRY_CHOICES,
        "retention_days": rt.settings.request_log_retention_days,
    }


@router.get("/dashboard/connections/{connection_id}")
async def connection_detail(
    request: Request, session: SessionDep, connection_id: str,
    syncs_after: Text = None,
) -> Response:
    context = await _detail_context(request, session, connection_id, clean_after(syncs_after))
    template = ("dashboard/_connection_live.html" if is_fragment(request)
                else "dashboard/connection.html")
    return render(request, template, context, session=session, section="connections")


def _detail_url(connection_id: str) -> str:
    return f"/dashboard/connections/{connection_id}"


@router.post("/dashboard/connections/{connection_id}/sync")
async def sync_now(
    request: Request, session: SessionDep, form: FormDep, connection_id: str
) -> Response:
    rt = rt_of(request)
    try:
        async with rt.engine.begin() as conn:
            await syncs.request_sync(conn, session.account_id, connection_id, rt.clock())
    except MaintlinkError as exc:
        if exc.code != "CONNECTION_NOT_ACTIVE":
            raise
        return redirect(with_notice(_detail_url(connection_id), "sync-refused"))
    return redirect(with_notice(_detail_url(connection_id), "sync-requested"))


@router.get("/dashboard/connections/{connection_id}/disconnect")
async def disconnect_confirm(
    request: Request, session: SessionDep, connection_id: str
) -> Response:
    rt = rt_of(request)
    async with rt.engine.connect() as conn:
        row = await conns.get_connection(conn, connection_id, account_id=session.account_id)
        records = await conns.count_records(conn, row.id)
    return render(request, "dashboard/disconnect.html", {"row": row, "records": records},
                  session=session, section="connections")


@router.post("/dashboard/connections/{connection_id}/disconnect")
async def disconnect(
    request: Request, session: SessionDep, form: FormDep, connection_id: str
) -> Response:
    rt = rt_of(request)
    async with rt.engine.begin() as conn:
        await conns.disconnect(conn, session.account_id, connection_id)
    return redirect(with_notice(_detail_url(connection_id), "disconnected"))


@router.post("/dashboard/connections/{connection_id}/reconnect-link")
async def create_reconnect_link(
    request: Request, session: SessionDep, form: FormDep, connection_id: str
) -> Response:
    """A link token in reconnect mode, shown once with its expiry (as the API would)."""
    rt = rt_of(request)
    redirect_uri = str(form.get("redirect_uri") or "").strip()
    expires = str(form.get("expires_in") or "900")
    spec = links.LinkTokenRequest(
        redirect_uri=redirect_uri, connection_id=connection_id,
        expires_in=int(expires) if expires in EXPIRY_CHOICES else 900)
    async with rt.engine.connect() as conn:  # 404 before any validation message
        row = await conns.get_connection(conn, connection_id, account_id=session.account_id)
    try:
        async with rt.engine.begin() as conn:
            link, token = await links.create_link_token(
                conn, rt, account_id=session.account_id, request=spec)
    except MaintlinkError as exc:
        if exc.code == "NOT_FOUND":
            raise
        context = await _detail_context(request, session, connection_id, None)
        context.update(link_error=exc.message, redirect_default=redirect_uri)
        return render(request, "dashboard/connection.html", context, session=session,
                      section="connections", status_code=exc.status)
    base = (rt.settings.public_url or str(request.base_url)).rstrip("/")
    return render(request, "dashboard/reconnect_link.html", {
        "row": row, "link": link, "url": f"{base}/connect/{token}",
        "expires_in": timedelta(seconds=int(spec.expires_in or 900)),
    }, session=session, section="connections")


@router.post("/dashboard/connections/{connection_id}/reconnect-links/{link_id}/revoke")
async def revoke_reconnect_link(
    request: Request, session: SessionDep, form: FormDep, connection_id: str, link_id: str,
) -> Response:
    rt = rt_of(request)
    async with rt.engine.begin() as conn:
        await conns.get_connection(conn, connection_id, account_id=session.account_id)
        link = await links.get_link_token(conn, session.account_id, link_id)
        if link.connection_id != connection_id:
            raise MaintlinkError("NOT_FOUND", f"No link token '{link_id}'.")
        await links.revoke_link_token(conn, rt, session.account_id, link_id)
    return redirect(with_notice(_detail_url(connection_id), "link-revoked"))
