"""The hosted connection flow in real Chromium: an API-key system (the sandbox) by redirect
and embedded in the developer's page, an OAuth2 system (SAP S/4HANA, its simulator) end to
end, and reconnecting a `reauth_required` connection. The browser may only talk to loopback
servers; every code that reaches the developer is exchanged."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from maintlink.config import Settings
from maintlink.domain.connections import Status
from tests.conftest import bearer, create_connection, new_sandbox_key, serve_app
from tests.web.conftest import DeveloperSite, new_link, set_status

pw = pytest.importorskip("playwright.async_api")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


def _loopback(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in ("data", "about", "blob"):
        return True
    host = parts.hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture
async def chromium() -> AsyncIterator[Any]:
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing: install Debian's chromium to run browser tests"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    async with pw.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


class Console:
    """Errors the page reports (CSP violations, script errors): a flow page has none."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.blocked: list[str] = []


@pytest.fixture
async def console() -> Console:
    return Console()


async def _guarded_context(chromium: Any, console: Console, **options: Any) -> Any:
    context = await chromium.new_context(**options)

    async def guard(route: Any) -> None:
        if _loopback(route.request.url):
            await route.continue_()
        else:  # nothing leaves this machine
            console.blocked.append(route.request.url)
            await route.abort()

    await context.route("**/*", guard)
    context.on("page", lambda p: _watch(p, console))
    return context


# Chromium logs every 4xx/5xx document as a console error; error pages are meant to have
# those statuses.
_HTTP_STATUS = re.compile(r"^Failed to load resource: the server responded with a status of")


def _watch(page: Any, console: Console) -> None:
    def on_console(message: Any) -> None:
        if message.type == "error" and not _HTTP_STATUS.match(message.text):
            console.errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda e: console.errors.append(str(e)))


@pytest.fixture
async def page(chromium: Any, console: Console) -> AsyncIterator[Any]:
    context = await _guarded_context(chromium, console)
    page = await context.new_page()
    try:
        yield page
    finally:
        await context.close()
    assert console.blocked == []
    assert console.errors == []


async def _exchange(client: httpx.AsyncClient, admin_key: str, code: str) -> dict[str, Any]:
    r = await client.post("/api/v1/link-tokens/exchange", headers=bearer(admin_key),
                          json={"code": code})
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _touch_targets_too_small(page: Any) -> list[str]:
    return list(await page.evaluate("""() => Array.from(document.querySelectorAll(
        'main a, main button, main input:not([type=hidden]), main summary'))
        .filter(e => e.offsetParent !== null)
        .filter(e => e.getBoundingClientRect().height < 44)
        .map(e => e.outerHTML.slice(0, 80))"""))


# --- API-key system ---------------------------------------------------------------------------

async def test_api_key_system_by_redirect(
    page: Any, client: httpx.AsyncClient, admin_key: str, sandbox_url: str,
    developer: DeveloperSite,
) -> None:
    expect = pw.expect
    link = await new_link(client, admin_key, developer.callback, state="st-1")
    key = await new_sandbox_key(sandbox_url)

    await page.goto(link["url"])
    await expect(page.get_by_role("heading", name="Choose your maintenance system")).to_be_visible()
    search = page.get_by_label("Search systems")
    await search.fill("no such system")
    await expect(page.locator("#no-match")).to_be_visible()
    await search.fill("sandb")
    await expect(page.locator("#systems-count")).to_contain_text("match")
    await page.get_by_role("link", name=re.compile("Sandbox CMMS")).click()

    await expect(page.get_by_role("heading", name="Connect Sandbox CMMS")).to_be_visible()
    assert await _touch_targets_too_small(page) == []
    # A refused key: the system's reason, announced, and the attempts left.
    await page.get_by_label("Instance URL").fill(sandbox_url)
    await page.get_by_label("API key").fill("sbx_wrong")
    await page.get_by_role("button", name="Connect").click()
    summary = page.get_by_role("alert")
    await expect(summary).to_contain_text("Sandbox CMMS rejected these credentials")
    await expect(summary).to_contain_text("Invalid API key")
    await expect(summary).to_contain_text("4 attempts left")
    await expect(summary).to_be_focused()
    await expect(page.get_by_label("Instance URL")).to_have_value(sandbox_url)
    await expect(page.get_by_label("API key")).to_have_value("")

    # The live check takes a while: the customer sees that it is verifying.
    async with httpx.AsyncClient() as c:
        await c.post(f"{sandbox_url}/_sandbox/faults", json={"latency_ms": 1500})
    await page.get_by_label("API key").fill(key)
    # Clicked from the page's side and read at once: locators would wait for the
    # navigation (the POST) to finish first.
    status, busy = await page.evaluate("""() => {
        document.querySelector('#connect-form button').click();
        return [document.getElementById('status').textContent,
                document.getElementById('connect-form').getAttribute('aria-busy')];
    }""")
    assert (status, busy) == ("Verifying with Sandbox CMMS…", "true")
    await expect(page.get_by_role("heading", name=re.compile("Connected to Sandbox CMMS"))) \
        .to_be_visible()
    await expect(page.get_by_text("Sandbox Manufacturing", exact=False)).to_be_visible()
    await page.wait_for_url(re.compile(re.escape(developer.callback) + r"\?code=lc_"))
    await expect(page.locator("#state")).to_have_text("st-1")

    code = await page.locator("#code").inner_text()
    body = await _exchange(client, admin_key, code)
    assert body["mode"] == "create" and body["integration"] == "sandbox"
    me = await client.get("/api/v1/connection", headers=bearer(body["token"]))
    assert me.status_code == 200
    # The token never travelled through the browser.
    assert body["token"] not in page.url


async def test_api_key_system_embedded_in_the_developers_page(
    page: Any, client: httpx.AsyncClient, admin_key: str, sandbox_url: str,
    developer: DeveloperSite,
) -> None:
    expect = pw.expect
    link = await new_link(client, admin_key, developer.callback, integration="sandbox",
                          allowed_origin=developer.url)
    developer.link_url = link["url"]
    key = await new_sandbox_key(sandbox_url)

    await page.goto(f"{developer.url}/embed")
    await page.get_by_role("button", name="Connect your CMMS").click()
    dialog = page.get_by_role("dialog", name="Connect your maintenance system")
    await expect(dialog).to_be_visible()
    frame = page.frame_locator("iframe")
    await expect(frame.get_by_role("heading", name="Connect Sandbox CMMS")).to_be_visible()
    await expect(page.locator("#events li").first).to_have_text("open")
    await frame.get_by_label("Instance URL").fill(sandbox_url)
    await frame.get_by_label("API key").fill(key)
    await frame.get_by_role("button", name="Connect").click()

    await expect(page.locator("#result")).to_have_text(re.compile(r"^lc_"))
    await expect(dialog).to_have_count(0)  # the modal closed itself
    await expect(page.get_by_role("button", name="Connect your CMMS")).to_be_focused()
    assert page.url == f"{developer.url}/embed"  # no redirect happened
    assert developer.callbacks == []
    body = await _exchange(client, admin_key, await page.locator("#result").inner_text())
    assert body["integration"] == "sandbox"


async def test_embedded_flow_can_be_closed_with_escape(
    page: Any, client: httpx.AsyncClient, admin_key: str, developer: DeveloperSite,
) -> None:
    expect = pw.expect
    link = await new_link(client, admin_key, developer.callback, allowed_origin=developer.url)
    developer.link_url = link["url"]
    await page.goto(f"{developer.url}/embed")
    await page.get_by_role("button", name="Connect your CMMS").click()
    frame = page.frame_locator("iframe")
    await expect(frame.get_by_role("heading", name="Choose your maintenance system")) \
        .to_be_visible()
    await page.keyboard.press("Escape")
    await expect(page.locator("#exit")).to_have_text("closed")
    await expect(page.get_by_role("dialog")).to_have_count(0)


async def test_flow_refuses_to_be_framed_by_another_origin(
    page: Any, client: httpx.AsyncClient, admin_key: str, developer: DeveloperSite,
    console: Console,
) -> None:
    """A page of an origin the link token does not name cannot frame the flow."""
    link = await new_link(client, admin_key, developer.callback,
                          allowed_origin="https://app.example.com")
    developer.link_url = link["url"]
    await page.goto(f"{developer.url}/embed")
    await page.get_by_role("button", name="Connect your CMMS").click()
    frame = page.frame_locator("iframe")
    await page.wait_for_timeout(500)
    assert await frame.get_by_role("heading").count() == 0
    console.errors.clear()  # Chromium reports the refused frame; that is the point


async def test_phone_sized_screen(
    chromium: Any, console: Console, client: httpx.AsyncClient, admin_key: str,
) -> None:
    context = await _guarded_context(chromium, console, viewport={"width": 360, "height": 640},
                                     is_mobile=True, has_touch=True)
    try:
        page = await context.new_page()
        link = await new_link(client, admin_key, "http://127.0.0.1/cb", integration="sandbox")
        await page.goto(link["url"])
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0
        assert await _touch_targets_too_small(page) == []
    finally:
        await context.close()
    assert console.errors == []


# --- reconnect --------------------------------------------------------------------------------

async def test_reconnect_a_connection_that_needs_reauthorization(
    page: Any, client: httpx.AsyncClient, admin_key: str, sandbox_url: str,
    developer: DeveloperSite, settings: Settings,
) -> None:
    expect = pw.expect
    conn = await create_connection(client, admin_key, sandbox_url)
    async with httpx.AsyncClient() as c:
        await c.post(f"{sandbox_url}/_sandbox/credentials/{conn['_sandbox_key']}/revoke")
    await set_status(settings, conn["id"], Status.REAUTH_REQUIRED, "API key has been revoked")
    link = await new_link(client, admin_key, developer.callback, connection_id=conn["id"])

    await page.goto(link["url"])
    await expect(page.get_by_role("heading", name="Reconnect Sandbox CMMS")).to_be_visible()
    await expect(page.get_by_role("note")).to_contain_text("API key has been revoked")
    await expect(page.get_by_label("Instance URL")).to_have_value(sandbox_url)
    await expect(page.get_by_label("API key")).to_have_value("")
    await page.get_by_label("API key").fill(await new_sandbox_key(sandbox_url))
    await page.get_by_role("button", name="Reconnect").click()
    await page.wait_for_url(re.compile(re.escape(developer.callback) + r"\?code=lc_"))

    body = await _exchange(client, admin_key, await page.locator("#code").inner_text())
    assert body["connection_id"] == conn["id"] and body["mode"] == "reconnect"
    assert body["token"] != conn["token"]
    status = await client.get(f"/api/v1/connections/{conn['id']}/status",
                              headers=bearer(admin_key))
    assert status.json()["status"] == "active"
    assert (await client.get("/api/v1/connection", headers=bearer(conn["token"]))) \
        .status_code == 401


# --- OAuth2 system ----------------------------------------------------------------------------

@pytest.fixture
async def sap_url() -> AsyncIterator[str]:
    """The SAP S/4HANA simulator over real HTTP on loopback."""
    from maintlink.connectors.registry import CONNECTORS
    from maintlink.sandbox.sap_s4hana import create_sap_s4hana_app
    from maintlink.sandbox.state import SandboxState

    if "sap_s4hana" not in CONNECTORS:
        pytest.skip("the SAP S/4HANA connector is not registered yet")
    async with serve_app(create_sap_s4hana_app(SandboxState(seed=7, size=40))) as url:
        yield url


async def test_oauth2_system_end_to_end(
    page: Any, client: httpx.AsyncClient, admin_key: str, sap_url: str,
    developer: DeveloperSite,
) -> None:
    expect = pw.expect
    link = await new_link(client, admin_key, developer.callback, integration="sap_s4hana",
                          state="oauth-st")
    await page.goto(link["url"])
    await expect(page.get_by_role("heading", name=re.compile("Connect SAP"))).to_be_visible()
    assert await page.locator("input[type=password]").count() == 0  # no secrets asked here
    await page.get_by_label(re.compile("URL")).fill(sap_url)
    await page.get_by_role("button", name=re.compile("sign-in")).click()

    # The system's own authorization page, then back through our callback.
    await page.wait_for_url(re.compile(re.escape(sap_url)))
    await _approve_on_sap(page)
    await page.wait_for_url(re.compile(re.escape(developer.callback) + r"\?code=lc_"))
    await expect(page.locator("#state")).to_have_text("oauth-st")

    body = await _exchange(client, admin_key, await page.locator("#code").inner_text())
    assert body["integration"] == "sap_s4hana" and body["mode"] == "create"
    me = await client.get("/api/v1/connection", headers=bearer(body["token"]))
    assert me.status_code == 200 and me.json()["integration"] == "sap_s4hana"


async def test_oauth2_access_denied_offers_a_retry(
    page: Any, client: httpx.AsyncClient, admin_key: str, sap_url: str,
    developer: DeveloperSite,
) -> None:
    expect = pw.expect
    link = await new_link(client, admin_key, developer.callback, integration="sap_s4hana")
    await page.goto(link["url"])
    await page.get_by_label(re.compile("URL")).fill(sap_url)
    await page.get_by_role("button", name=re.compile("sign-in")).click()
    await page.wait_for_url(re.compile(re.escape(sap_url)))
    await _deny_on_sap(page)
    alert = page.get_by_role("alert")
    await expect(alert).to_contain_text("Access was not granted")
    # Trying again works from the same page.
    await expect(page.get_by_label(re.compile("URL"))).to_have_value(sap_url)
    await page.get_by_role("button", name=re.compile("sign-in")).click()
    await page.wait_for_url(re.compile(re.escape(sap_url)))
    await _approve_on_sap(page)
    await page.wait_for_url(re.compile(re.escape(developer.callback) + r"\?code=lc_"))
    await _exchange(client, admin_key, await page.locator("#code").inner_text())


async def test_oauth2_system_embedded_signs_in_in_a_popup(
    page: Any, client: httpx.AsyncClient, admin_key: str, sap_url: str,
    developer: DeveloperSite,
) -> None:
    """Authorization pages refuse to be framed: the embedded flow opens a popup, which
    closes itself when done, and the frame continues by itself."""
    expect = pw.expect
    link = await new_link(client, admin_key, developer.callback, integration="sap_s4hana",
                          allowed_origin=developer.url)
    developer.link_url = link["url"]
    await page.goto(f"{developer.url}/embed")
    await page.get_by_role("button", name="Connect your CMMS").click()
    frame = page.frame_locator("iframe")
    await frame.get_by_label("Instance URL").fill(sap_url)
    async with page.expect_popup() as opened:
        await frame.get_by_role("button", name=re.compile("sign-in")).click()
    popup = await opened.value
    await popup.wait_for_url(re.compile(re.escape(sap_url)))
    await _approve_on_sap(popup)
    await expect(page.locator("#result")).to_have_text(re.compile(r"^lc_"), timeout=15_000)
    for _ in range(50):
        if popup.is_closed():
            break
        await page.wait_for_timeout(100)
    assert popup.is_closed()
    body = await _exchange(client, admin_key, await page.locator("#result").inner_text())
    assert body["integration"] == "sap_s4hana"


async def _approve_on_sap(page: Any) -> None:
    await page.get_by_role("button", name=re.compile("allow|approve|authorize|sign in",
                                                     re.IGNORECASE)).click()


async def _deny_on_sap(page: Any) -> None:
    await page.get_by_role("button", name=re.compile("deny|cancel|decline",
                                                     re.IGNORECASE)).click()
