"""Link tokens and the hosted flow over plain HTTP (a browser without JavaScript): creation
and its validation, single use, expiry, account binding, failed-attempt locking, the
exchange (single use, expiry, account), reconnect mode, webhooks; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from maintlink.app import create_app
from maintlink.config import Settings
from maintlink.domain.connections import Status
from maintlink.store.db import create_engine
from maintlink.store.tables import connections, link_codes, link_tokens, webhook_endpoints
from tests.conftest import bearer, create_connection, new_sandbox_key, serve_app
from tests.web.conftest import (
    Clock,
    DeveloperSite,
    code_from,
    csrf_of,
    new_link,
    set_status,
    submit_form,
)

CALLBACK = "https://app.example.com/maintlink/callback"


@pytest.fixture
async def browser(api: str) -> AsyncIterator[httpx.AsyncClient]:
    """Another client, for the customer's browser: no admin key, no redirects followed."""
    async with httpx.AsyncClient(base_url=api, timeout=30) as b:
        yield b


async def _complete(
    browser: httpx.AsyncClient, link: dict[str, Any], sandbox_url: str, key: str, *,
    integration: str | None = "sandbox", extra: dict[str, str] | None = None,
) -> str:
    """Finish the flow; returns the code from the success page's continue link."""
    r = await submit_form(browser, link["url"], {"base_url": sandbox_url, "api_key": key},
                          integration=integration, extra=extra)
    assert r.status_code == 303, r.text
    assert r.headers["location"].endswith("/success")
    page = await browser.get(r.headers["location"])
    assert page.status_code == 200
    match = re.search(r'id="continue" class="button primary" href="([^"]+)"', page.text)
    assert match, page.text
    return code_from(match.group(1).replace("&amp;", "&"))


async def _exchange(client: httpx.AsyncClient, key: str, code: str) -> httpx.Response:
    return await client.post("/api/v1/link-tokens/exchange", headers=bearer(key),
                             json={"code": code})


async def _rows(settings: Settings, table: Any) -> list[Any]:
    engine = create_engine(settings.effective_database_url)
    try:
        async with engine.connect() as c:
            return list((await c.execute(select(table))).all())
    finally:
        await engine.dispose()


def _error(r: httpx.Response) -> str:
    return str(r.json()["error"]["code"])


# --- creation ---------------------------------------------------------------------------------

async def test_create_returns_single_use_token_and_absolute_url(
    client: httpx.AsyncClient, admin_key: str, api: str, settings: Settings
) -> None:
    before = datetime.now().astimezone()
    link = await new_link(client, admin_key, CALLBACK, state="s-1")
    assert link["object"] == "link_token"
    assert link["link_token"].startswith("lt_")
    assert link["url"] == f"{api}/connect/{link['link_token']}"
    assert link["mode"] == "create" and link["customer_id"] == "cust-1"
    expires = datetime.fromisoformat(link["expires_at"])
    assert timedelta(minutes=29) < expires - before <= timedelta(minutes=30, seconds=5)

    r = await client.get(f"/api/v1/link-tokens/{link['id']}", headers=bearer(admin_key))
    assert r.status_code == 200
    assert r.json()["status"] == "open" and "link_token" not in r.json()
    # Only the hash is stored.
    (row,) = await _rows(settings, link_tokens)
    assert link["link_token"] not in [str(v) for v in row]


async def test_url_uses_public_url_when_set(settings: Settings, admin_key: str) -> None:
    custom = settings.model_copy(update={"public_url": "https://connect.example.com/"})
    async with serve_app(create_app(custom, auto_migrate=False)) as url, \
            httpx.AsyncClient(base_url=url) as c:
        link = await new_link(c, admin_key, CALLBACK)
    assert link["url"] == f"https://connect.example.com/connect/{link['link_token']}"


@pytest.mark.parametrize("uri", [
    "http://localhost:3000/cb", "http://127.0.0.1/cb?x=1", "http://[::1]:8080/cb",
    "https://app.example.com/cb?tenant=7",
])
async def test_redirect_uri_https_or_loopback_http(
    client: httpx.AsyncClient, admin_key: str, uri: str
) -> None:
    link = await new_link(client, admin_key, uri)
    r = await client.get(f"/api/v1/link-tokens/{link['id']}", headers=bearer(admin_key))
    assert r.json()["redirect_uri"] == uri  # kept exactly


@pytest.mark.parametrize(("body", "code"), [
    ({"redirect_uri": "http://app.example.com/cb"}, "INVALID_REDIRECT_URI"),
    ({"redirect_uri": "/relative/cb"}, "INVALID_REDIRECT_URI"),
    ({"redirect_uri": "javascript:alert(1)"}, "INVALID_REDIRECT_URI"),
    ({"redirect_uri": "https://app.example.com/cb#frag"}, "INVALID_REDIRECT_URI"),
    ({"redirect_uri": "https://user:pw@app.example.com/cb"}, "INVALID_REDIRECT_URI"),
    ({"redirect_uri": "https://app.example.com/cb?code=1"}, "INVALID_REDIRECT_URI"),
    ({"allowed_origin": "https://app.example.com/path"}, "INVALID_REDIRECT_URI"),
    ({"allowed_origin": "http://app.example.com"}, "INVALID_REDIRECT_URI"),
    ({"webhook_url": "http://hooks.example.com/x"}, "INVALID_WEBHOOK_URL"),
    ({"webhook_url": "https://10.0.0.1/x"}, "INVALID_WEBHOOK_URL"),
    ({"webhook_url": "https://hooks.example.com/x", "webhook_events": ["nope"]},
     "VALIDATION_ERROR"),
    ({"webhook_events": ["sync.completed"]}, "VALIDATION_ERROR"),
    ({"integration": "nope"}, "INTEGRATION_NOT_FOUND"),
    ({"expires_in": 604_801}, "VALIDATION_ERROR"),
    ({"expires_in": 10}, "VALIDATION_ERROR"),
    ({"customer_id": None}, "VALIDATION_ERROR"),
    ({"surprise": 1}, "VALIDATION_ERROR"),
    ({"connection_id": "conn_unknown"}, "NOT_FOUND"),
])
async def test_creation_is_validated(
    client: httpx.AsyncClient, admin_key: str, body: dict[str, Any], code: str
) -> None:
    payload = {"customer_id": "cust-1", "redirect_uri": CALLBACK, **body}
    payload = {k: v for k, v in payload.items() if v is not None}
    r = await client.post("/api/v1/link-tokens", headers=bearer(admin_key), json=payload)
    assert r.status_code in (400, 404, 422), r.text
    assert _error(r) == code, r.text


async def test_allowed_origin_is_normalized(client: httpx.AsyncClient, admin_key: str) -> None:
    link = await new_link(client, admin_key, CALLBACK, allowed_origin="https://App.Example.com:443/")
    r = await client.get(f"/api/v1/link-tokens/{link['id']}", headers=bearer(admin_key))
    assert r.json()["allowed_origin"] == "https://app.example.com"


async def test_creation_needs_an_admin_key(
    client: httpx.AsyncClient, admin_key: str, sandbox_url: str
) -> None:
    body = {"customer_id": "c", "redirect_uri": CALLBACK}
    r = await client.post("/api/v1/link-tokens", json=body)
    assert (r.status_code, _error(r)) == (401, "AUTHENTICATION_FAILED")
    conn = await create_connection(client, admin_key, sandbox_url)
    r = await client.post("/api/v1/link-tokens", json=body, headers=bearer(conn["token"]))
    assert (r.status_code, _error(r)) == (403, "FORBIDDEN")


async def test_oauth_integration_needs_a_configured_client(
    settings: Settings, admin_key: str
) -> None:
    from maintlink.connectors.registry import CONNECTORS

    if "sap_s4hana" not in CONNECTORS:
        pytest.skip("the SAP S/4HANA connector is not registered yet")
    bare = settings.model_copy(update={"oauth_clients": {}})
    async with serve_app(create_app(bare, auto_migrate=False)) as url, \
            httpx.AsyncClient(base_url=url) as c:
        r = await c.post("/api/v1/link-tokens", headers=bearer(admin_key),
                         json={"customer_id": "c", "redirect_uri": CALLBACK,
                               "integration": "sap_s4hana"})
        assert (r.status_code, _error(r)) == (400, "INTEGRATION_NOT_CONFIGURED")
        # ... and the picker does not offer it.
        link = await new_link(c, admin_key, CALLBACK)
        page = await c.get(link["url"])
        assert "SAP" not in page.text


# --- the flow and the exchange ------------------------------------------------------------------

async def test_flow_creates_a_connection_and_the_code_exchanges_once(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, admin_key: str, sandbox_url: str,
    settings: Settings,
) -> None:
    link = await new_link(client, admin_key, CALLBACK, state="opaque/state?&")
    page = await browser.get(link["url"])
    assert page.status_code == 200 and "Choose your maintenance system" in page.text
    key = await new_sandbox_key(sandbox_url)
    r = await submit_form(browser, link["url"], {"base_url": sandbox_url, "api_key": key},
                          integration="sandbox")
    success = await browser.get(r.headers["location"])
    assert "Connected to Sandbox CMMS" in success.text
    assert "Sandbox Manufacturing" in success.text  # the remote account's name
    continue_href = re.search(r'id="continue"[^>]* href="([^"]+)"', success.text)
    assert continue_href
    back = httpx.URL(continue_href.group(1).replace("&amp;", "&"))
    assert str(back).startswith(CALLBACK + "?")
    assert back.params["state"] == "opaque/state?&"
    code = back.params["code"]
    assert code.startswith("lc_")
    assert key not in success.text  # no secret ever comes back

    r = await _exchange(client, admin_key, code)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "link_exchange" and body["mode"] == "create"
    assert body["customer_id"] == "cust-1" and body["integration"] == "sandbox"
    assert body["token"].startswith("mlc_") and body["webhook_endpoint_id"] is None
    me = await client.get("/api/v1/connection", headers=bearer(body["token"]))
    assert me.status_code == 200 and me.json()["id"] == body["connection_id"]

    r = await _exchange(client, admin_key, code)
    assert (r.status_code, _error(r)) == (400, "LINK_CODE_INVALID")
    r = await client.get(f"/api/v1/link-tokens/{link['id']}", headers=bearer(admin_key))
    assert r.json()["status"] == "used" and r.json()["connection_id"] == body["connection_id"]
    # Only hashes, and the waiting token is erased by the exchange.
    (code_row,) = await _rows(settings, link_codes)
    assert code_row.token_encrypted is None and code not in [str(v) for v in code_row]


async def test_link_token_is_single_use(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, admin_key: str, sandbox_url: str,
    settings: Settings,
) -> None:
    link = await new_link(client, admin_key, CALLBACK, integration="sandbox")
    key = await new_sandbox_key(sandbox_url)
    page = await browser.get(link["url"])
    assert "Connect Sandbox CMMS" in page.text  # fixed integration: no picker
    csrf = csrf_of(page.text)
    code = await _complete(browser, link, sandbox_url, key, integration=None)
    # The same form again: nothing new is created.
    r = await browser.post(link["url"], data={
        "csrf": csrf, "field_base_url": sandbox_url, "field_api_key": key})
    assert r.status_code == 303 and r.headers["location"].endswith("/success")
    assert len(await _rows(settings, connections)) == 1
    # Until exchanged the success page still shows the code; afterwards it does not.
    page = await browser.get(link["url"] + "/success")
    assert code in page.text
    assert (await _exchange(client, admin_key, code)).status_code == 200
    page = await browser.get(link["url"] + "/success")
    assert page.status_code == 200 and "Connected to Sandbox CMMS" in page.text
    assert "lc_" not in page.text and "close this window" in page.text


async def test_concurrent_submissions_create_one_connection(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, admin_key: str, sandbox_url: str,
    settings: Settings,
) -> None:
    link = await new_link(client, admin_key, CALLBACK, integration="sandbox")
    key = await new_sandbox_key(sandbox_url)
    csrf = csrf_of((await browser.get(link["url"])).text)
    form = {"csrf": csrf, "field_base_url": sandbox_url, "field_api_key": key}
    answers = await asyncio.gather(*(browser.post(link["url"], data=form) for _ in range(4)))
    assert all(a.status_code in (303, 410) for a in answers), [a.status_code for a in answers]
    assert len(await _rows(settings, connections)) == 1
    assert len(await _rows(settings, link_codes)) == 1


async def test_code_expires_after_ten_minutes(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, admin_key: str, sandbox_url: str,
    settings: Settings, clock: Clock,
) -> None:
    link = await new_link(client, admin_key, CALLBACK)
    code = await _complete(browser, link, sandbox_url, await new_sandbox_key(sandbox_url))
    clock.advance(minutes=10, seconds=1)
    r = await _exchange(client, admin_key, code)
    assert (r.status_code, _error(r)) == (400, "LINK_CODE_EXPIRED")
    assert r.json()["error"]["details"]["connection_id"]
    (code_row,) = await _rows(settings, link_codes)
    assert code_row.token_encrypted is None  # the waiting token is gone for good
    page = await browser.get(link["url"] + "/success")
    assert "lc_" not in page.text


async def test_code_is_bound_to_the_account(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, admin_key: str,
    other_admin_key: str, sandbox_url: str,
) -> None:
    link = await new_link(client, admin_key, CALLBACK)
    code = await _complete(browser, link, sandbox_url, await new_sandbox_key(sandbox_url))
    r = await _exchange(client, other_admin_key, code)
    assert (r.status_code, _error(r)) == (400, "LINK_CODE_INVALID")
    assert r.json()["error"]["message"] == "Unknown code."
    r = await client.get(f"/api/v1/link-tokens/{link['id']}", headers=bearer(other_admin_key))
    assert (r.status_code, _error(r)) == (404, "NOT_FOUND")
    r = await client.post(f"/api/v1/link-tokens/{link['id']}/revoke",
                          headers=bearer(other_admin_key))
    assert (r.status_code, _error(r)) == (404, "NOT_FOUND")
    r = await _exchange(client, admin_key, code)  # the owner still can
    assert r.status_code == 200
    r = await _exchange(client, admin_key, "lc_" + "x" * 43)
    assert (r.status_code, _error(r)) == (400, "LINK_CODE_INVALID")


async def test_expired_link_shows_a_clear_page(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, admin_key: str, clock: Clock,
) -> None:
    link = await new_link(client, admin_key, CALLBACK, state="st", expires_in=120)
    page = await browser.get(link["url"])
    csrf = csrf_of((await browser.get(link["url"] + "?integration=sandbox")).text)
    assert page.status_code == 200
    clock.advance(seconds=121)
    page = await browser.get(link["url"])
    assert page.status_code == 410
    assert "This link has expired" in page.text and "LINK_TOKEN_EXPIRED" in page.text
    back = re.search(r'href="([^"]+)" data-action="exit"', page.text)
    assert back and "error=link_expired" in back.group(1) and "state=st" in back.group(1)
    r = await browser.post(link["url"], data={"csrf": csrf, "integration": "sandbox"})
    assert r.status_code == 410
    r = await client.get(f"/api/v1/link-tokens/{link['id']}", headers=bearer(admin_key))
    assert r.json()["status"] == "expired"


async def test_reconnect_default_expiry_is_shorter(
    client: httpx.AsyncClient, admin_key: str, sandbox_url: str
) -> None:
    conn = await create_connection(client, admin_key, sandbox_url)
    link = await new_link(client, admin_key, CALLBACK, connection_id=conn["id"])
    left = datetime.fromisoformat(link["expires_at"]) - datetime.now().astimezone()
    assert timedelta(minutes=14) < left <= timedelta(minutes=15, seconds=5)


async def test_unknown_and_revoked_links(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, admin_key: str
) -> None:
    page = await browser.get("/connect/lt_doesnotexist")
    assert page.status_code == 404 and "This link is not valid" in page.text
    link = await new_link(client, admin_key, CALLBACK)
    r = await client.post(f"/api/v1/link-tokens/{link['id']}/revoke", headers=bearer(admin_key))
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    page = await browser.get(link["url"])
    assert page.status_code == 404 and "LINK_TOKEN_INVALID" in page.text


async def test_failed_attempts_lock_the_link(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, admin_key: str, sandbox_url: str,
) -> None:
    link = await new_link(client, admin_key, CALLBACK, integration="sandbox")
    for left in (4, 3, 2, 1):
        r = await submit_form(browser, link["url"], {"base_url": sandbox_url, "api_key": "bad"})
        assert r.status_code == 400
        assert "Sandbox CMMS rejected these credentials" in r.text
        assert "Invalid API key" in r.text  # the system's own reason
        assert f"{left} attempt" in r.text
    r = await submit_form(browser, link["url"], {"base_url": sandbox_url, "api_key": "bad"})
    assert r.status_code == 410 and "LINK_TOKEN_LOCKED" in r.text
    key = await new_sandbox_key(sandbox_url)
    page = await browser.get(link["url"])
    assert page.status_code == 410 and "too many failed attempts" in page.text
    r = await client.get(f"/api/v1/link-tokens/{link['id']}", headers=bearer(admin_key))
    assert r.json()["status"] == "locked" and r.json()["failed_attempts"] == 5
    assert key  # a good key comes too late


async def test_missing_fields_are_not_failed_attempts(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, admin_key: str, sandbox_url: str,
) -> None:
    link = await new_link(client, admin_key, CALLBACK, integration="sandbox")
    r = await submit_form(browser, link["url"], {"base_url": sandbox_url, "api_key": " "})
    assert r.status_code == 422
    assert 'aria-invalid="true"' in r.text and "Enter the api key." in r.text
    assert f'value="{sandbox_url}"' in r.text  # what was typed stays
    r = await client.get(f"/api/v1/link-tokens/{link['id']}", headers=bearer(admin_key))
    assert r.json()["failed_attempts"] == 0


async def test_typed_errors_unreachable_and_missing_permission(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, admin_key: str, sandbox_url: str,
) -> None:
    link = await new_link(client, admin_key, CALLBACK, integration="sandbox")
    key = await new_sandbox_key(sandbox_url)
    async with httpx.AsyncClient() as c:
        await c.post(f"{sandbox_url}/_sandbox/faults", json={"offline": True})
    r = await submit_form(browser, link["url"], {"base_url": sandbox_url, "api_key": key})
    assert r.status_code == 502 and "Sandbox CMMS could not be reached" in r.text
    assert "PROVIDER_UNAVAILABLE" in r.text

    async def me(_: Any) -> JSONResponse:
        return JSONResponse({"error": {"message": "Missing scope: organization.read"}}, 403)

    async with serve_app(Starlette(routes=[Route("/api/v1/me", me)])) as stingy:
        r = await submit_form(browser, link["url"], {"base_url": stingy, "api_key": key})
    assert r.status_code == 400 and "These credentials lack a permission" in r.text
    assert "Missing scope: organization.read" in r.text


async def test_forms_need_their_csrf_field(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, admin_key: str, sandbox_url: str,
    settings: Settings,
) -> None:
    one = await new_link(client, admin_key, CALLBACK, integration="sandbox")
    two = await new_link(client, admin_key, CALLBACK, integration="sandbox")
    key = await new_sandbox_key(sandbox_url)
    form = {"field_base_url": sandbox_url, "field_api_key": key}
    r = await browser.post(one["url"], data=form)
    assert r.status_code == 403 and "could not be verified" in r.text
    csrf_two = csrf_of((await browser.get(two["url"])).text)
    r = await browser.post(one["url"], data={**form, "csrf": csrf_two})
    assert r.status_code == 403
    assert await _rows(settings, connections) == []


async def test_attempts_are_rate_limited_per_link(
    settings: Settings, admin_key: str, sandbox_url: str
) -> None:
    strict = settings.model_copy(update={"link_token_attempts_per_minute": 2})
    async with serve_app(create_app(strict, auto_migrate=False)) as url, \
            httpx.AsyncClient(base_url=url) as c:
        link = await new_link(c, admin_key, CALLBACK, integration="sandbox",
                              expires_in=3600)
        values = {"base_url": sandbox_url, "api_key": ""}
        assert (await submit_form(c, link["url"], values)).status_code == 422
        assert (await submit_form(c, link["url"], values)).status_code == 422
        r = await submit_form(c, link["url"], values)
        assert r.status_code == 429 and "Too many attempts" in r.text
        assert int(r.headers["retry-after"]) >= 1


# --- reconnect mode -------------------------------------------------------------------------

async def test_reconnect_mode_reauthorizes_the_same_connection(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, admin_key: str, sandbox_url: str,
    settings: Settings,
) -> None:
    conn = await create_connection(client, admin_key, sandbox_url)
    async with httpx.AsyncClient() as c:
        await c.post(f"{sandbox_url}/_sandbox/credentials/{conn['_sandbox_key']}/revoke")
    await set_status(settings, conn["id"], Status.REAUTH_REQUIRED, "API key has been revoked")
    old = await client.get("/api/v1/connection", headers=bearer(conn["token"]))
    assert _error(old) == "CONNECTION_REAUTH_REQUIRED"

    link = await new_link(client, admin_key, CALLBACK, connection_id=conn["id"])
    assert link["mode"] == "reconnect" and link["customer_id"] == "cust-1"
    assert link["integration"] == "sandbox"
    page = await browser.get(link["url"])
    assert page.status_code == 200
    assert "Reconnect Sandbox CMMS" in page.text  # no picker
    assert "Why am I asked again?" in page.text and "API key has been revoked" in page.text
    assert f'value="{sandbox_url}"' in page.text  # non-secret values pre-filled ...
    assert conn["_sandbox_key"] not in page.text  # ... secrets never
    assert "All systems" not in page.text

    key = await new_sandbox_key(sandbox_url)
    r = await browser.post(link["url"], data={"csrf": csrf_of(page.text),
                                              "field_base_url": sandbox_url,
                                              "field_api_key": key})
    assert r.status_code == 303
    success = await browser.get(r.headers["location"])
    assert "Reconnected to Sandbox CMMS" in success.text
    code = code_from(re.search(r'id="continue"[^>]* href="([^"]+)"', success.text)
                     .group(1).replace("&amp;", "&"))  # type: ignore[union-attr]
    body = (await _exchange(client, admin_key, code)).json()
    assert body["connection_id"] == conn["id"] and body["mode"] == "reconnect"
    assert body["token"] != conn["token"]
    assert (await client.get("/api/v1/connection", headers=bearer(conn["token"]))) \
        .status_code == 401
    me = await client.get("/api/v1/connection", headers=bearer(body["token"]))
    assert me.status_code == 200 and me.json()["status"] == "active"
    assert len(await _rows(settings, connections)) == 1
    events = await client.get("/api/v1/events", headers=bearer(admin_key),
                              params={"connection_id": conn["id"]})
    assert "connection.reauthorized" in [e["type"] for e in events.json()["data"]]


@pytest.mark.parametrize(("change", "code"), [
    ({"customer_id": "someone-else"}, "VALIDATION_ERROR"),
    ({"integration": "maintainx"}, "VALIDATION_ERROR"),
])
async def test_reconnect_binds_to_the_connection(
    client: httpx.AsyncClient, admin_key: str, sandbox_url: str, change: dict[str, str],
    code: str,
) -> None:
    conn = await create_connection(client, admin_key, sandbox_url)
    body = {"redirect_uri": CALLBACK, "connection_id": conn["id"], **change}
    r = await client.post("/api/v1/link-tokens", headers=bearer(admin_key), json=body)
    assert _error(r) in (code, "INTEGRATION_NOT_FOUND"), r.text


async def test_reconnect_refuses_other_accounts_and_disconnected(
    client: httpx.AsyncClient, admin_key: str, other_admin_key: str, sandbox_url: str,
) -> None:
    conn = await create_connection(client, admin_key, sandbox_url)
    body = {"redirect_uri": CALLBACK, "connection_id": conn["id"]}
    r = await client.post("/api/v1/link-tokens", headers=bearer(other_admin_key), json=body)
    assert (r.status_code, _error(r)) == (404, "NOT_FOUND")
    await client.post(f"/api/v1/connections/{conn['id']}/disconnect", headers=bearer(admin_key))
    r = await client.post("/api/v1/link-tokens", headers=bearer(admin_key), json=body)
    assert (r.status_code, _error(r)) == (409, "CONNECTION_NOT_ACTIVE")


# --- webhooks, headers, small screens -----------------------------------------------------------

async def test_webhook_from_the_link_token_becomes_the_connections_own(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, admin_key: str, sandbox_url: str,
    settings: Settings,
) -> None:
    link = await new_link(client, admin_key, CALLBACK, webhook_url="https://hooks.example.com/ml",
                          webhook_events=["sync.completed", "connection.reauthorization_required"])
    page = await browser.get(link["url"] + "?integration=sandbox")
    assert "https://hooks.example.com/ml" in page.text and 'name="webhook_url"' not in page.text
    code = await _complete(browser, link, sandbox_url, await new_sandbox_key(sandbox_url))
    body = (await _exchange(client, admin_key, code)).json()
    ep = await client.get(f"/api/v1/webhook-endpoints/{body['webhook_endpoint_id']}",
                          headers=bearer(admin_key))
    assert ep.status_code == 200, ep.text
    ep_body = ep.json()
    assert ep_body["connection_id"] == body["connection_id"]
    assert ep_body["managed_by_connection"] is True
    assert ep_body["url"] == "https://hooks.example.com/ml"
    assert sorted(ep_body["events"]) == ["connection.reauthorization_required",
                                         "sync.completed"]


async def test_customer_may_enter_a_webhook_when_allowed(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, admin_key: str, sandbox_url: str,
) -> None:
    link = await new_link(client, admin_key, CALLBACK, integration="sandbox",
                          collect_webhook_url=True)
    key = await new_sandbox_key(sandbox_url)
    values = {"base_url": sandbox_url, "api_key": key}
    r = await submit_form(browser, link["url"], values, extra={"webhook_url": "http://10.1.2.3/"})
    assert r.status_code == 422 and 'id="err_webhook_url"' in r.text
    r = await submit_form(browser, link["url"], values,
                          extra={"webhook_url": "https://hooks.example.com/customer"})
    assert r.status_code == 303
    success = await browser.get(r.headers["location"])
    code = code_from(re.search(r'id="continue"[^>]* href="([^"]+)"', success.text)
                     .group(1).replace("&amp;", "&"))  # type: ignore[union-attr]
    body = (await _exchange(client, admin_key, code)).json()
    ep = await client.get(f"/api/v1/webhook-endpoints/{body['webhook_endpoint_id']}",
                          headers=bearer(admin_key))
    assert ep.json()["url"] == "https://hooks.example.com/customer"


async def test_flow_pages_send_security_headers(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, admin_key: str,
) -> None:
    link = await new_link(client, admin_key, CALLBACK)
    page = await browser.get(link["url"])
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["x-frame-options"] == "DENY"
    # Embedding needs an allowed origin.
    page = await browser.get(link["url"] + "?embed=1")
    assert page.status_code == 403 and "not created for embedding" in page.text

    framed = await new_link(client, admin_key, CALLBACK, allowed_origin="https://app.example.com")
    page = await browser.get(framed["url"] + "?embed=1")
    assert page.status_code == 200
    assert "frame-ancestors https://app.example.com" in page.headers["content-security-policy"]
    assert "x-frame-options" not in page.headers
    assert 'data-origin="https://app.example.com"' in page.text


async def test_picker_search_works_without_javascript(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, admin_key: str,
) -> None:
    link = await new_link(client, admin_key, CALLBACK)
    page = await browser.get(link["url"], params={"q": "sand"})
    assert "Sandbox CMMS" in page.text and 'id="no-match" class="muted" hidden' in page.text
    page = await browser.get(link["url"], params={"q": "zzz-nothing"})
    assert "Sandbox CMMS" not in page.text and 'id="no-match" class="muted">' in page.text
    page = await browser.get(link["url"], params={"integration": "nope"})
    assert page.status_code == 404 and "not available here" in page.text


async def test_cancel_returns_to_the_app(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, admin_key: str,
    developer: DeveloperSite,
) -> None:
    link = await new_link(client, admin_key, developer.callback, state="abc")
    r = await browser.get(link["url"] + "/exit")
    assert r.status_code == 303
    back = httpx.URL(r.headers["location"])
    assert str(back).startswith(developer.callback)
    assert back.params["error"] == "cancelled" and back.params["state"] == "abc"


async def test_flow_ends_at_the_developers_callback(
    client: httpx.AsyncClient, admin_key: str, sandbox_url: str, developer: DeveloperSite,
    settings: Settings,
) -> None:
    """Following every redirect and the success page's link, as a browser would."""
    link = await new_link(client, admin_key, developer.callback, state="42")
    async with httpx.AsyncClient(follow_redirects=True) as b:
        r = await submit_form(b, link["url"], {"base_url": sandbox_url,
                                               "api_key": await new_sandbox_key(sandbox_url)},
                              integration="sandbox")
        assert r.status_code == 200 and "Connected to Sandbox CMMS" in r.text
        href = re.search(r'id="continue"[^>]* href="([^"]+)"', r.text)
        assert href
        await b.get(href.group(1).replace("&amp;", "&"))
    (received,) = developer.callbacks
    assert received["state"] == "42"
    assert (await _exchange(client, admin_key, received["code"])).status_code == 200
    endpoints = await _rows(settings, webhook_endpoints)
    assert endpoints == []
