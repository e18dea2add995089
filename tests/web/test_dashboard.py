"""The dashboard over plain HTTP, the way a browser without JavaScript uses it: sign-in
sessions, CSRF, every page and action, and account isolation. On SQLite and PostgreSQL."""

# Fixtures come from dashboard_support by import; test parameters name them.
# ruff: noqa: F811

from __future__ import annotations

import html
import re
import time
from datetime import timedelta
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from maintlink.domain.accounts import revoke_admin_key
from maintlink.domain.endpoints import disable_endpoint
from maintlink.store.tables import (
    api_keys,
    connections,
    deliveries,
    events,
    link_tokens,
    webhook_endpoints,
)
from maintlink.web import session as sessions
from tests.conftest import bearer
from tests.web.dashboard_support import (  # noqa: F401 - fixtures
    Stack,
    csrf_of,
    eventually,
    pg_template,
    post_form,
    sign_in,
    sqlite_template,
    stack,
)


def text_of(page: str) -> str:
    """The page's visible text, tags removed, whitespace collapsed."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


def statuses(page: str) -> dict[str, str]:
    """connection id -> data-status, from the connections table."""
    rows = re.findall(r'<tr data-id="(conn_[^"]+)".*?data-status="([a-z_]+)"', page, re.S)
    return dict(rows)


@pytest.fixture
async def acme(stack: Stack) -> Any:
    client = await sign_in(stack.url, stack.key)
    yield client
    await client.aclose()


# --- sessions ------------------------------------------------------------------------------------

async def test_pages_need_a_session_and_send_you_back_after_sign_in(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as client:
        r = await client.get("/dashboard/webhooks?status=failing")
        assert r.status_code == 303
        assert r.headers["location"] == \
            "/dashboard/login?next=%2Fdashboard%2Fwebhooks%3Fstatus%3Dfailing"
        page = await client.get(r.headers["location"])
        assert page.status_code == 200
        assert 'name="next" value="/dashboard/webhooks?status=failing"' in page.text
        r = await client.post("/dashboard/login", data={
            "admin_key": stack.key, "csrf_token": csrf_of(page.text),
            "next": "/dashboard/webhooks?status=failing"})
        assert r.status_code == 303
        assert r.headers["location"] == "/dashboard/webhooks?status=failing"
        # Only paths inside the dashboard are followed after sign-in.
        page = await client.get("/dashboard/login?next=https://evil.example/")
        assert page.status_code == 303 and page.headers["location"] == "/dashboard/connections"


async def test_the_session_cookie_is_signed_http_only_and_never_holds_the_key(
    stack: Stack,
) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as client:
        page = await client.get("/dashboard/login")
        r = await client.post("/dashboard/login", data={
            "admin_key": stack.key, "csrf_token": csrf_of(page.text)})
        assert r.status_code == 303
        cookie = next(v for k, v in r.headers.multi_items()
                      if k == "set-cookie" and v.startswith(sessions.COOKIE + "="))
        attributes = [a.strip().lower() for a in cookie.split(";")]
        assert "httponly" in attributes and "samesite=lax" in attributes
        assert "path=/dashboard" in attributes
        assert "secure" not in attributes  # served over plain http here
        value = client.cookies[sessions.COOKIE]
        assert stack.key not in value and stack.key.split("_", 1)[1] not in value
        assert (await client.get("/dashboard/connections")).status_code == 200
        # Behind a TLS-terminating proxy (trusted by uvicorn) the cookie is `Secure`.
        proxied = {"X-Forwarded-Proto": "https"}
        async with httpx.AsyncClient(base_url=stack.url, headers=proxied) as behind:
            page = await behind.get("/dashboard/login")
            nonce = page.cookies[sessions.LOGIN_COOKIE]  # httpx keeps Secure ones for https
            r = await behind.post(
                "/dashboard/login", headers={"Cookie": f"{sessions.LOGIN_COOKIE}={nonce}"},
                data={"admin_key": stack.key, "csrf_token": csrf_of(page.text)})
            for name in (sessions.LOGIN_COOKIE, sessions.COOKIE):
                source = page if name == sessions.LOGIN_COOKIE else r
                line = next(v for k, v in source.headers.multi_items()
                            if k == "set-cookie" and v.startswith(name + "="))
                assert "secure" in [a.strip().lower() for a in line.split(";")], name

        # A changed cookie (another account id, re-encoded) is refused.
        head, payload, mac = value.split(".")
        forged = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB")
        client.cookies.set(sessions.COOKIE, f"{head}.{forged}.{mac}", path="/dashboard")
        r = await client.get("/dashboard/connections")
        assert r.status_code == 303 and r.headers["location"].startswith("/dashboard/login")


async def test_a_wrong_key_or_a_missing_form_token_does_not_sign_in(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as client:
        page = await client.get("/dashboard/login")
        token = csrf_of(page.text)
        r = await client.post("/dashboard/login", data={"admin_key": "mlk_nope",
                                                        "csrf_token": token})
        assert r.status_code == 401
        assert "unknown or revoked" in r.text and 'aria-invalid="true"' in r.text
        assert sessions.COOKIE not in client.cookies
        r = await client.post("/dashboard/login", data={"admin_key": stack.key})
        assert r.status_code == 403 and sessions.COOKIE not in client.cookies
        async with httpx.AsyncClient(base_url=stack.url) as stranger:  # no login cookie
            r = await stranger.post("/dashboard/login", data={"admin_key": stack.key,
                                                              "csrf_token": token})
            assert r.status_code == 403 and sessions.COOKIE not in stranger.cookies


async def test_revoking_the_admin_key_ends_its_sessions(stack: Stack, acme: Any) -> None:
    assert (await acme.get("/dashboard/connections")).status_code == 200
    key_id = (await stack.rows(select(api_keys.c.id).where(
        api_keys.c.revoked_at.is_(None)).order_by(api_keys.c.id)))[0].id
    async with stack.rt.engine.begin() as conn:
        assert await revoke_admin_key(conn, key_id)
    r = await acme.get("/dashboard/connections")
    assert r.status_code == 303 and r.headers["location"].startswith("/dashboard/login")
    r = await acme.get("/dashboard/connections?fragment=1")
    assert r.status_code == 401


async def test_sign_out_needs_the_form_token_and_clears_the_session(
    stack: Stack, acme: Any
) -> None:
    r = await acme.post("/dashboard/logout", data={"csrf_token": "forged"})
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/connections"
    assert (await acme.get("/dashboard/connections")).status_code == 200
    r = await post_form(acme, "/dashboard/connections", "/dashboard/logout")
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/login?signed_out=1"
    assert sessions.COOKIE not in acme.cookies
    assert (await acme.get("/dashboard/connections")).status_code == 303
    page = await acme.get("/dashboard/login?signed_out=1")
    assert "You are signed out." in page.text


def test_sessions_expire_and_survive_a_master_key_rotation(tmp_path: Any) -> None:
    from maintlink.config import Settings
    from maintlink.crypto import generate_key

    old, new = generate_key(), generate_key()
    before = Settings(data_dir=tmp_path, secret_key=old, dashboard_session_hours=1)
    cookie, session = sessions.issue(before, "key_1", "acct_1")
    assert sessions.read(before, cookie) == session
    assert sessions.read(before, cookie, now=time.time() + 3601) is None
    rotated = before.model_copy(update={"secret_key": f"{new},{old}"})
    assert sessions.read(rotated, cookie) == session
    assert sessions.csrf_ok(rotated, session, sessions.csrf_token(before, session))
    gone = before.model_copy(update={"secret_key": new})
    assert sessions.read(gone, cookie) is None
    assert not sessions.csrf_ok(gone, session, sessions.csrf_token(before, session))


async def test_every_form_post_needs_the_token_of_its_own_session(stack: Stack, acme: Any) -> None:
    north = await stack.connect("northwind")
    action = f"/dashboard/connections/{north['id']}/disconnect"
    assert (await acme.post(action, data={})).status_code == 403
    assert (await acme.post(action, data={"csrf_token": "x" * 43})).status_code == 403
    # A valid token of another session (another account) is worth nothing here.
    other = await sign_in(stack.url, stack.other_key)
    try:
        foreign = csrf_of((await other.get("/dashboard/connections")).text)
    finally:
        await other.aclose()
    r = await acme.post(action, data={"csrf_token": foreign})
    assert r.status_code == 403 and "expired" in r.text
    row = (await stack.rows(select(connections.c.status).where(
        connections.c.id == north["id"])))[0]
    assert row.status == "active"


# --- connections ----------------------------------------------------------------------------------

async def test_connections_of_all_customers_with_counts_filters_and_search(
    stack: Stack, acme: Any
) -> None:
    page = await acme.get("/dashboard/connections")
    assert "Nothing yet." in text_of(page.text)
    north = await stack.connect("northwind-foods")
    contoso = await stack.connect("contoso-energy")
    await stack.connect("globex-secret-customer", key=stack.other_key)
    await stack.revoke(north["_sandbox_key"])
    await stack.check(north["id"])

    page = await acme.get("/dashboard/connections")
    assert page.status_code == 200
    assert statuses(page.text) == {north["id"]: "reauth_required", contoso["id"]: "active"}
    text = text_of(page.text)
    assert "northwind-foods" in text and "contoso-energy" in text
    assert "globex-secret-customer" not in page.text
    assert "Reauthorization required" in text and "Sandbox CMMS" in text
    counts = dict(re.findall(r'data-status-count="([a-z_]+)"[^>]*>\s*<span class="count-n">(\d+)',
                             page.text))
    assert counts == {"active": "1", "offline": "0", "reauth_required": "1",
                      "disconnected": "0"}

    async def shown(query: str) -> dict[str, str]:
        r = await acme.get(f"/dashboard/connections?{query}")
        assert r.status_code == 200
        return statuses(r.text)

    assert await shown("status=reauth_required") == {north["id"]: "reauth_required"}
    assert await shown("status=active&system=sandbox") == {contoso["id"]: "active"}
    assert await shown("customer=contoso-energy") == {contoso["id"]: "active"}
    assert await shown("q=NORTHWIND") == {north["id"]: "reauth_required"}
    assert await shown(f"q={contoso['id'][-8:]}") == {contoso["id"]: "active"}
    assert await shown("q=revoked") == {north["id"]: "reauth_required"}  # the reason
    assert await shown("q=globex") == {}
    page = await acme.get("/dashboard/connections?q=nothing-like-this")
    assert "No matches." in text_of(page.text) and "Clear the filters" in page.text
    assert await shown("status=bogus") == {north["id"]: "reauth_required",
                                           contoso["id"]: "active"}


async def test_live_fragments_hold_only_the_parts_that_change(stack: Stack, acme: Any) -> None:
    await stack.connect("northwind")
    r = await acme.get("/dashboard/connections?fragment=1")
    assert r.status_code == 200
    assert "<html" not in r.text and "<form" not in r.text
    assert re.findall(r'data-live-part="([a-z]+)"', r.text) == ["counts", "connections"]
    async with httpx.AsyncClient(base_url=stack.url) as anonymous:
        r = await anonymous.get("/dashboard/connections?fragment=1")
        assert r.status_code == 401 and "Signed out" in r.text


async def test_connection_detail_shows_what_happened(stack: Stack, acme: Any) -> None:
    await stack.endpoint()
    north = await stack.connect("northwind")
    await stack.sync(north["id"])
    await stack.delivered(2)  # connection.created, sync.completed
    r = await stack.api.get("/api/v1/work-orders", headers={
        **bearer(north["token"]), "X-Request-Id": "support-4711"})
    assert r.status_code == 200
    await stack.revoke(north["_sandbox_key"])
    await stack.check(north["id"])
    await stack.delivered(3)
    await stack.flush_request_log()

    page = await acme.get(f"/dashboard/connections/{north['id']}")
    assert page.status_code == 200
    text = text_of(page.text)
    # Status and what to do about it.
    assert 'data-status="reauth_required"' in page.text
    assert "The system rejected this connection's credentials." in text
    assert "PROVIDER_AUTH_FAILED" in text
    # Timeline, newest first.
    assert re.findall(r'<li data-to="([a-z_]+)">', page.text) == ["reauth_required", "active"]
    # Sync runs with per-entity counts.
    assert "initial" in text and "Completed" in text
    assert re.search(r"work orders</span>\s*<span>\+\d+", page.text)
    # Events, deliveries (code, latency, resend) and API requests.
    for event_type in ("connection.created", "sync.completed",
                       "connection.reauthorization_required"):
        assert event_type in text
    delivery_rows = re.findall(r'<tr data-id="(dlv_[^"]+)"', page.text)
    assert len(delivery_rows) == 3
    assert text.count("Delivered") >= 3 and ">200<" in page.text
    assert re.search(r'data-label="Latency">\d+(\.\d)? ms<', page.text)
    assert page.text.count(">Resend<") == 3
    assert "support-4711" in text and "/api/v1/work-orders" in text


async def test_resend_a_delivery_from_the_connection_page(stack: Stack, acme: Any) -> None:
    await stack.endpoint()
    north = await stack.connect("northwind")
    await stack.delivered(1)
    page_path = f"/dashboard/connections/{north['id']}"
    event_id = (await stack.rows(select(events.c.id).where(
        events.c.connection_id == north["id"])))[0].id
    endpoint_id = (await stack.rows(select(webhook_endpoints.c.id)))[0].id
    r = await post_form(acme, page_path, f"/dashboard/events/{event_id}/resend", {
        "endpoint_id": endpoint_id, "back": page_path + "#deliveries"})
    assert r.status_code == 303
    assert r.headers["location"] == page_path + "?notice=resent&n=1#deliveries"
    await stack.delivered(2)
    first, second = stack.receiver.received
    assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"] == event_id
    triggers = [d.trigger for d in await stack.rows(
        select(deliveries.c.trigger).where(deliveries.c.event_id == event_id)
        .order_by(deliveries.c.id))]
    assert triggers == ["scheduled", "manual"]
    page = await acme.get(r.headers["location"])
    assert "Resent: 1 new deliveries queued." in text_of(page.text)
    assert 'data-trigger="manual"' in page.text


async def test_disconnect_asks_first(stack: Stack, acme: Any) -> None:
    north = await stack.connect("northwind")
    page = await acme.get(f"/dashboard/connections/{north['id']}")
    assert f'href="/dashboard/connections/{north["id"]}/disconnect"' in page.text
    confirm = await acme.get(f"/dashboard/connections/{north['id']}/disconnect")
    assert confirm.status_code == 200
    assert "stops working at once" in text_of(confirm.text)
    r = await acme.post(f"/dashboard/connections/{north['id']}/disconnect",
                        data={"csrf_token": csrf_of(confirm.text)})
    assert r.status_code == 303 and "notice=disconnected" in r.headers["location"]
    page = await acme.get(r.headers["location"])
    assert 'data-status="disconnected"' in page.text and "Disconnected." in page.text
    r = await stack.api.get("/api/v1/work-orders", headers=bearer(north["token"]))
    assert r.json()["error"]["code"] == "CONNECTION_DISCONNECTED"


async def test_sync_now(stack: Stack, acme: Any) -> None:
    north = await stack.connect("northwind")
    await stack.sync(north["id"])
    path = f"/dashboard/connections/{north['id']}"
    r = await post_form(acme, path, f"{path}/sync")
    assert r.status_code == 303 and "notice=sync-requested" in r.headers["location"]
    row = (await stack.rows(select(connections.c.sync_requested_at).where(
        connections.c.id == north["id"])))[0]
    assert row.sync_requested_at is not None
    await stack.revoke(north["_sandbox_key"])
    await stack.check(north["id"])
    r = await post_form(acme, path, f"{path}/sync")
    assert "notice=sync-refused" in r.headers["location"]


async def test_reconnect_link(stack: Stack, acme: Any) -> None:
    north = await stack.connect("northwind")
    path = f"/dashboard/connections/{north['id']}"
    r = await post_form(acme, path, f"{path}/reconnect-link",
                        {"redirect_uri": "ftp://nope", "expires_in": "3600"})
    assert r.status_code == 400
    assert 'aria-invalid="true"' in r.text and "redirect_uri" in r.text
    r = await post_form(acme, path, f"{path}/reconnect-link", {
        "redirect_uri": "https://app.example.com/callback", "expires_in": "3600"})
    assert r.status_code == 200
    url = re.search(r'id="reconnect-url" type="text" readonly value="([^"]+)"', r.text)
    assert url and re.fullmatch(rf"{re.escape(stack.url)}/connect/lt_\w+", url.group(1))
    link = (await stack.rows(select(link_tokens)))[0]
    assert link.mode == "reconnect" and link.connection_id == north["id"]
    assert timedelta(minutes=59) < link.expires_at - link.created_at <= timedelta(hours=1)
    assert r.headers["cache-control"] == "no-store"
    # The flow's page opens with it.
    assert (await stack.api.get(url.group(1))).status_code == 200
    # The connection page lists it, prefills the redirect URI, and revokes it.
    page = await acme.get(path)
    assert 'value="https://app.example.com/callback"' in page.text
    assert "Reconnect links sent" in page.text and ">Open<" in page.text
    r = await post_form(acme, path, f"{path}/reconnect-links/{link.id}/revoke")
    assert r.status_code == 303
    assert (await stack.rows(select(link_tokens.c.status)))[0].status == "revoked"


# --- webhooks -------------------------------------------------------------------------------------

async def test_endpoints_health_attempts_and_levers(stack: Stack, acme: Any) -> None:
    ok = await stack.endpoint(description="Production receiver")
    broken = await stack.endpoint(path="/missing")  # the receiver answers 404 there
    await stack.connect("northwind")
    await stack.delivered(1)

    async def failed_attempt() -> Any:
        # The page reads the counts and the log in separate statements: an attempt recorded
        # between them shows in one only, so wait for a page that has both.
        r = await acme.get(f"/dashboard/webhooks/{broken['id']}")
        counted = re.search(r"0\.0% of \d+ attempts succeeded in the last 24 h",
                            text_of(r.text))
        return ">404<" in r.text and counted and r
    page = await eventually(failed_attempt)
    text = text_of(page.text)
    assert "Response body" in text  # the answer received, as received

    listing = await acme.get("/dashboard/webhooks")
    assert listing.status_code == 200
    assert f'data-endpoint="{ok["id"]}"' in listing.text and "100.0%" in listing.text
    assert "Production receiver" in listing.text

    # Send a test event.
    r = await post_form(acme, f"/dashboard/webhooks/{ok['id']}",
                        f"/dashboard/webhooks/{ok['id']}/test")
    assert r.status_code == 303 and "notice=test-sent" in r.headers["location"]
    test_events = await stack.rows(select(events.c.id).where(events.c.type == "webhook.test"))
    assert len(test_events) == 1
    await stack.delivered(2)

    # Reveal and rotate the secret.
    r = await post_form(acme, f"/dashboard/webhooks/{ok['id']}",
                        f"/dashboard/webhooks/{ok['id']}/secret")
    assert ok["secret"] in r.text and r.headers["cache-control"] == "no-store"
    r = await post_form(acme, f"/dashboard/webhooks/{ok['id']}",
                        f"/dashboard/webhooks/{ok['id']}/rotate-secret")
    new_secret = re.search(r'id="secret-value" type="text" readonly value="(whsec_[^"]+)"',
                           r.text)
    assert new_secret and new_secret.group(1) != ok["secret"]
    row = (await stack.rows(select(webhook_endpoints).where(
        webhook_endpoints.c.id == ok["id"])))[0]
    assert row.previous_secret_expires_at is not None

    # Disabled: said so, and re-enabled with the failures re-queued.
    async with stack.rt.engine.begin() as conn:
        await disable_endpoint(conn, broken["id"], "failing for 5 days", stack.rt.clock())
    page = await acme.get(f"/dashboard/webhooks/{broken['id']}")
    assert 'data-endpoint-state="disabled"' in page.text
    assert "Re-enable and resend what failed" in page.text
    r = await post_form(acme, f"/dashboard/webhooks/{broken['id']}",
                        f"/dashboard/webhooks/{broken['id']}/enable", {"recover": "1"})
    assert r.status_code == 303 and "notice=enabled" in r.headers["location"]
    row = (await stack.rows(select(webhook_endpoints.c.status).where(
        webhook_endpoints.c.id == broken["id"])))[0]
    assert row.status == "enabled"
    pending = await stack.rows(select(deliveries.c.trigger).where(
        deliveries.c.endpoint_id == broken["id"], deliveries.c.trigger == "recover"))
    assert pending


# --- events ---------------------------------------------------------------------------------------

async def test_event_log_search_jump_and_payload_as_sent(stack: Stack, acme: Any) -> None:
    await stack.endpoint()
    north = await stack.connect("northwind")
    await stack.connect("contoso")
    await stack.delivered(2)
    page = await acme.get("/dashboard/events")
    assert page.text.count("connection.created") >= 2
    page = await acme.get("/dashboard/events?type=connection.created&customer=contoso")
    assert len(re.findall(r'<tr data-id="evt_', page.text)) == 1
    page = await acme.get("/dashboard/events?q=Sandbox+Manufacturing")  # text in the payload
    assert len(re.findall(r'<tr data-id="evt_', page.text)) == 2
    page = await acme.get(f"/dashboard/events?connection={north['id']}")
    assert len(re.findall(r'<tr data-id="evt_', page.text)) == 1

    event_id = (await stack.rows(select(events.c.id).where(
        events.c.connection_id == north["id"])))[0].id
    r = await acme.get(f"/dashboard/events?q={event_id}")
    assert r.status_code == 303 and r.headers["location"] == f"/dashboard/events/{event_id}"
    delivery_id = (await stack.rows(select(deliveries.c.id).where(
        deliveries.c.event_id == event_id)))[0].id
    r = await acme.get(f"/dashboard/events?q={delivery_id}")
    assert r.headers["location"] == f"/dashboard/events/{event_id}"
    r = await acme.get("/dashboard/events?q=evt_01ZZZZZZZZZZZZZZZZZZZZZZZZ")
    assert "older than the retention" in text_of(r.text) and "30 days" in r.text

    page = await acme.get(f"/dashboard/events/{event_id}")
    body = (await stack.rows(select(deliveries.c.body).where(
        deliveries.c.id == delivery_id)))[0].body
    assert "Payload as sent" in page.text
    assert html.escape(f'"id": "{event_id}"', quote=True) in page.text or \
        f'&#34;id&#34;: &#34;{event_id}&#34;' in page.text
    assert '"api_version"' in body and "api_version" in page.text
    assert ">200<" in page.text  # the attempt and the code it got


# --- API requests ---------------------------------------------------------------------------------

async def test_request_log_page_finds_a_request_by_its_id(stack: Stack, acme: Any) -> None:
    north = await stack.connect("northwind")
    contoso = await stack.connect("contoso")
    await stack.api.get("/api/v1/work-orders", headers={**bearer(north["token"]),
                                                         "X-Request-Id": "case-1234"})
    await stack.api.get("/api/v1/assets/nope", headers=bearer(contoso["token"]))
    await stack.flush_request_log()
    page = await acme.get("/dashboard/requests?request_id=case-1234")
    rows = re.findall(r'data-request-id="([^"]+)"', page.text)
    assert rows == ["case-1234"]
    assert "northwind" in text_of(page.text) and "GET /api/v1/work-orders" in text_of(page.text)
    page = await acme.get("/dashboard/requests?request_id=case-12")  # exact, not a prefix
    assert "No request" in text_of(page.text) and "7 days" in text_of(page.text)
    page = await acme.get(f"/dashboard/requests?connection={contoso['id']}&status=4xx")
    assert len(re.findall(r'data-request-id="', page.text)) == 1 and ">404<" in page.text


async def test_cursor_pagination(stack: Stack, acme: Any) -> None:
    writer = stack.app.state.request_log
    for i in range(57):
        writer.capture({"account_id": await _account(stack)}, "GET", f"/api/v1/x/{i}", 200,
                       f"req-{i:03d}", 1.0)
    await writer.flush()
    first = await acme.get("/dashboard/requests")
    ids = re.findall(r'data-request-id="(req-\d+)"', first.text)
    assert len(ids) == 50 and ids[0] == "req-056"
    next_link = re.search(r'rel="next"\s+href="([^"]+)"', first.text)
    assert next_link
    second = await acme.get(html.unescape(next_link.group(1)))
    more = re.findall(r'data-request-id="(req-\d+)"', second.text)
    assert more == [f"req-{i:03d}" for i in range(6, -1, -1)]
    assert 'rel="next"' not in second.text and "First page" in second.text


async def _account(stack: Stack) -> str:
    rows = await stack.rows(select(api_keys.c.account_id).order_by(api_keys.c.id))
    return str(rows[0].account_id)


# --- isolation ------------------------------------------------------------------------------------

async def test_another_accounts_ids_are_not_found_on_every_page_and_action(
    stack: Stack, acme: Any
) -> None:
    await stack.endpoint()
    mine = await stack.connect("acme-customer")
    theirs = await stack.connect("globex-customer", key=stack.other_key)
    their_endpoint = await stack.endpoint(key=stack.other_key)
    await stack.delivered(1)
    r = await stack.api.post("/api/v1/link-tokens", headers=bearer(stack.other_key), json={
        "connection_id": theirs["id"], "redirect_uri": "https://globex.example/cb"})
    assert r.status_code == 201
    their_link = r.json()["id"]
    their_event = (await stack.rows(select(events.c.id).where(
        events.c.connection_id == theirs["id"])))[0].id
    await stack.api.get("/api/v1/work-orders", headers=bearer(theirs["token"]))
    await stack.flush_request_log()

    pages = [f"/dashboard/connections/{theirs['id']}",
             f"/dashboard/connections/{theirs['id']}?fragment=1",
             f"/dashboard/connections/{theirs['id']}/disconnect",
             f"/dashboard/webhooks/{their_endpoint['id']}",
             f"/dashboard/webhooks/{their_endpoint['id']}?fragment=1",
             f"/dashboard/events/{their_event}"]
    for path in pages:
        r = await acme.get(path)
        assert r.status_code == 404, path
        assert "globex" not in r.text.lower(), path

    token = csrf_of((await acme.get("/dashboard/connections")).text)
    actions = [
        (f"/dashboard/connections/{theirs['id']}/disconnect", {}),
        (f"/dashboard/connections/{theirs['id']}/sync", {}),
        (f"/dashboard/connections/{theirs['id']}/reconnect-link",
         {"redirect_uri": "https://acme.example/cb"}),
        (f"/dashboard/connections/{theirs['id']}/reconnect-links/{their_link}/revoke", {}),
        (f"/dashboard/connections/{mine['id']}/reconnect-links/{their_link}/revoke", {}),
        (f"/dashboard/webhooks/{their_endpoint['id']}/enable", {"recover": "1"}),
        (f"/dashboard/webhooks/{their_endpoint['id']}/recover", {}),
        (f"/dashboard/webhooks/{their_endpoint['id']}/test", {}),
        (f"/dashboard/webhooks/{their_endpoint['id']}/rotate-secret", {}),
        (f"/dashboard/webhooks/{their_endpoint['id']}/secret", {}),
        (f"/dashboard/events/{their_event}/resend", {}),
        (f"/dashboard/events/{their_event}/resend", {"endpoint_id": their_endpoint["id"]}),
    ]
    for action, data in actions:
        r = await acme.post(action, data={"csrf_token": token, **data})
        assert r.status_code == 404, action
        assert their_endpoint["secret"] not in r.text

    # Nothing changed on their side.
    row = (await stack.rows(select(connections.c.status, connections.c.sync_requested_at)
                            .where(connections.c.id == theirs["id"])))[0]
    assert row.status == "active" and row.sync_requested_at is None
    assert (await stack.rows(select(link_tokens.c.status)))[0].status == "open"
    assert len(await stack.rows(select(link_tokens.c.id))) == 1
    assert len(await stack.rows(select(events.c.id).where(
        events.c.type == "webhook.test"))) == 0
    assert len(await stack.rows(select(deliveries.c.id).where(
        deliveries.c.trigger == "manual"))) == 0
    row = (await stack.rows(select(webhook_endpoints.c.previous_secret_expires_at).where(
        webhook_endpoints.c.id == their_endpoint["id"])))[0]
    assert row.previous_secret_expires_at is None

    # Lists never show them; filters naming them match nothing.
    for path in ("/dashboard/connections", "/dashboard/webhooks", "/dashboard/events",
                 "/dashboard/requests"):
        r = await acme.get(path)
        assert r.status_code == 200, path
        assert theirs["id"] not in r.text and their_endpoint["id"] not in r.text, path
        assert "globex" not in r.text.lower(), path
    for path in ("/dashboard/connections?q=globex",
                 "/dashboard/connections?customer=globex-customer",
                 f"/dashboard/events?connection={theirs['id']}",
                 f"/dashboard/requests?connection={theirs['id']}",
                 f"/dashboard/webhooks?q={their_endpoint['id']}"):
        r = await acme.get(path)
        assert r.status_code == 200, path
        assert "<tr data-id=" not in r.text and "No matches." in text_of(r.text), path
    r = await acme.get(f"/dashboard/events?q={their_event}")
    assert r.status_code == 200 and "older than the retention" in text_of(r.text)
    r = await acme.get(f"/dashboard/events?q={theirs['id']}")
    assert r.status_code == 200 and "globex-customer" not in r.text


# --- pages without JavaScript, accessibility basics ----------------------------------------------

class _Controls(HTMLParser):
    """Form controls, labels and forms of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.labels: set[str] = set()
        self.controls: list[dict[str, str | None]] = []
        self.forms: list[dict[str, str | None]] = []
        self.form_fields: list[set[str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "label" and a.get("for"):
            self.labels.add(str(a["for"]))
        if tag in ("input", "select", "textarea") and a.get("type") != "hidden":
            self.controls.append(a)
        if tag == "form":
            self.forms.append(a)
            self.form_fields.append(set())
        if tag == "input" and self.form_fields and a.get("name"):
            self.form_fields[-1].add(str(a["name"]))


async def test_pages_label_every_control_and_protect_every_form(stack: Stack, acme: Any) -> None:
    ep = await stack.endpoint()
    north = await stack.connect("northwind")
    await stack.delivered(1)
    event_id = (await stack.rows(select(events.c.id)))[0].id
    paths = ["/dashboard/connections", f"/dashboard/connections/{north['id']}",
             f"/dashboard/connections/{north['id']}/disconnect", "/dashboard/webhooks",
             f"/dashboard/webhooks/{ep['id']}", "/dashboard/events",
             f"/dashboard/events/{event_id}", "/dashboard/requests"]
    for path in paths:
        r = await acme.get(path)
        assert r.status_code == 200, path
        assert r.headers["content-security-policy"].startswith("default-src 'self'")
        assert r.headers["x-frame-options"] == "DENY" and r.headers["cache-control"] == "no-store"
        assert "<script>" not in r.text and " style=" not in r.text  # nothing inline (CSP)
        assert '<main id="main"' in r.text and 'lang="en"' in r.text
        parser = _Controls()
        parser.feed(r.text)
        for control in parser.controls:
            assert control.get("id") in parser.labels or control.get("aria-label"), (path, control)
        for form, fields in zip(parser.forms, parser.form_fields, strict=True):
            if (form.get("method") or "get").lower() == "post":
                assert "csrf_token" in fields, (path, form)

    # The login page too, without a session.
    async with httpx.AsyncClient(base_url=stack.url) as anonymous:
        r = await anonymous.get("/dashboard/login")
        parser = _Controls()
        parser.feed(r.text)
        assert parser.controls and all(c.get("id") in parser.labels for c in parser.controls)


async def test_unknown_pages_and_bad_parameters_answer_with_pages(stack: Stack, acme: Any) -> None:
    r = await acme.get("/dashboard/connections/conn_nope")
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert "Not found" in r.text
    r = await acme.get("/dashboard/connections?q=" + "x" * 500)
    assert r.status_code == 400 and r.headers["content-type"].startswith("text/html")
    r = await acme.get("/dashboard/requests?after=../../etc&status=9xx")
    assert r.status_code == 200


async def test_an_offline_connection_and_its_recovery_show_in_words(
    stack: Stack, acme: Any
) -> None:
    north = await stack.connect("northwind")
    async with httpx.AsyncClient() as c:
        await c.post(f"{stack.sandbox}/_sandbox/credentials/{north['_sandbox_key']}/faults",
                     json={"offline": True})
    for _ in range(stack.rt.settings.health_offline_after):
        await stack.check(north["id"])
    page = await acme.get(f"/dashboard/connections/{north['id']}")
    assert 'data-status="offline"' in page.text
    assert "cannot reach the system" in text_of(page.text)
    async with httpx.AsyncClient() as c:
        await c.post(f"{stack.sandbox}/_sandbox/credentials/{north['_sandbox_key']}/faults",
                     json={"offline": False})
    await stack.check(north["id"])
    page = await acme.get(f"/dashboard/connections/{north['id']}")
    assert re.findall(r'<li data-to="([a-z_]+)">', page.text) == ["active", "offline", "active"]
