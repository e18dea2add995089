"""The dashboard in real Chromium (Playwright): signing in, two customers' connections, a
revoked credential showing up live without a reload, resending a delivery, the phone layout
and the pages without JavaScript. On SQLite and PostgreSQL."""

# Fixtures come from dashboard_support by import; test parameters name them.
# ruff: noqa: F811

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.web.dashboard_support import (  # noqa: F401 - fixtures
    Stack,
    pg_template,
    sqlite_template,
    stack,
)

CHROMIUM = os.environ.get("MAINTLINK_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

LIVE = 15_000  # ms: a few polling periods (3 s), with room for a loaded machine

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason=f"no Chromium at {CHROMIUM}")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


async def signed_in(browser: Browser, stack: Stack, **context: Any) -> Page:
    ctx = await browser.new_context(**context)
    page = await ctx.new_page()
    await page.goto(f"{stack.url}/dashboard/connections")
    await expect(page).to_have_url(re.compile(r"/dashboard/login\?next="))
    await page.get_by_label("Admin API key").fill(stack.key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(f"{stack.url}/dashboard/connections")
    return page


def row_of(page: Page, connection_id: str) -> Any:
    return page.locator(f'tr[data-id="{connection_id}"]')


async def test_sign_in_and_see_two_customers_with_their_statuses(
    browser: Browser, stack: Stack
) -> None:
    north = await stack.connect("northwind-foods")
    contoso = await stack.connect("contoso-energy")
    await stack.connect("globex-hidden", key=stack.other_key)
    await stack.revoke(contoso["_sandbox_key"])
    await stack.check(contoso["id"])

    page = await browser.new_page()
    await page.goto(f"{stack.url}/dashboard/login")
    await page.get_by_label("Admin API key").fill("mlk_wrong")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_have_text("That admin key is unknown or revoked.")
    await page.get_by_label("Admin API key").fill(stack.key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Connections")

    await expect(page.locator("tbody tr")).to_have_count(2)
    await expect(row_of(page, north["id"])).to_contain_text("northwind-foods")
    await expect(row_of(page, north["id"]).locator("[data-status]")).to_have_text("●Active")
    await expect(row_of(page, contoso["id"])).to_contain_text("contoso-energy")
    await expect(row_of(page, contoso["id"]).locator("[data-status]")).to_have_text(
        "✕Reauthorization required")
    await expect(page.get_by_text("globex-hidden")).to_have_count(0)

    # Filters work from the page's own controls.
    await page.get_by_label("Status", exact=True).select_option("reauth_required")
    await page.get_by_role("button", name="Apply").click()
    await expect(page).to_have_url(re.compile(r"status=reauth_required"))
    await expect(page.locator("tbody tr")).to_have_count(1)
    await page.get_by_role("link", name="Clear", exact=True).click()
    await page.get_by_label("Search").fill("northwind")
    await page.get_by_label("Search").press("Enter")
    await expect(page.locator("tbody tr")).to_have_count(1)
    await expect(page.locator("tbody tr")).to_contain_text("northwind-foods")

    # Sign out.
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_text("You are signed out.")).to_be_visible()
    await page.goto(f"{stack.url}/dashboard/connections")
    await expect(page).to_have_url(re.compile(r"/dashboard/login"))


async def test_a_revoked_credential_shows_up_without_a_reload(
    browser: Browser, stack: Stack
) -> None:
    north = await stack.connect("northwind-foods")
    await stack.connect("contoso-energy")
    page = await signed_in(browser, stack)
    status = row_of(page, north["id"]).locator("[data-status]")
    await expect(status).to_have_text("●Active")
    await page.evaluate("window.__notReloaded = true")

    await stack.revoke(north["_sandbox_key"])
    await stack.check(north["id"])  # the health check the worker would run

    await expect(status).to_have_text("✕Reauthorization required", timeout=LIVE)
    await expect(page.locator('[data-status-count="reauth_required"] .count-n')).to_have_text("1")
    assert await page.evaluate("window.__notReloaded") is True
    await expect(page.locator("#live-announcer")).to_contain_text("Status changed",
                                                                  timeout=LIVE)

    # The connection's own page says what to do, and updates live too.
    await page.get_by_role("link", name="northwind-foods").click()
    await expect(page.get_by_role("alert")).to_contain_text(
        "The system rejected this connection's credentials.")
    await expect(page.locator('li[data-to="reauth_required"]')).to_have_count(1)
    await page.evaluate("window.__notReloaded = true")
    await stack.api.post(f"/api/v1/connections/{north['id']}/disconnect",
                         headers={"Authorization": f"Bearer {stack.key}"})
    await expect(page.locator(".status-big[data-status]")).to_have_attribute(
        "data-status", "disconnected", timeout=LIVE)
    assert await page.evaluate("window.__notReloaded") is True


async def test_live_updates_pause_while_searching(browser: Browser, stack: Stack) -> None:
    north = await stack.connect("northwind-foods")
    page = await signed_in(browser, stack)
    await page.get_by_label("Search").focus()
    await page.get_by_label("Search").type("north")
    await stack.revoke(north["_sandbox_key"])
    await stack.check(north["id"])
    await page.wait_for_timeout(4_500)  # more than one polling period
    status = row_of(page, north["id"]).locator("[data-status]")
    await expect(status).to_have_text("●Active")  # paused while the field has focus
    assert await page.get_by_label("Search").input_value() == "north"
    await page.get_by_role("heading", level=1).click()  # focus leaves the field
    await expect(status).to_have_text("✕Reauthorization required", timeout=LIVE)


async def test_resend_a_delivery(browser: Browser, stack: Stack) -> None:
    await stack.endpoint()
    north = await stack.connect("northwind-foods")
    await stack.delivered(1)
    page = await signed_in(browser, stack)
    await page.goto(f"{stack.url}/dashboard/connections/{north['id']}")
    deliveries = page.locator("#deliveries tbody tr")
    await expect(deliveries).to_have_count(1)
    await expect(deliveries.first.locator("[data-delivery-status]")).to_have_text("●Delivered")
    await expect(deliveries.first).to_contain_text("200")
    await expect(deliveries.first.locator('[data-label="Latency"]')).to_have_text(
        re.compile(r"\d+(\.\d)? ms"))

    await deliveries.first.get_by_role("button", name=re.compile("^Resend")).click()
    await expect(page.get_by_role("status").first).to_contain_text(
        "Resent: 1 new deliveries queued.")
    await expect(deliveries).to_have_count(2)
    manual = page.locator('#deliveries tr[data-trigger="manual"]')
    await expect(manual.locator("[data-delivery-status]")).to_have_text(
        "●Delivered", timeout=LIVE)
    await stack.delivered(2)
    first, second = stack.receiver.received
    assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"]


async def test_phone_layout_stacks_tables_and_keeps_targets_large(
    browser: Browser, stack: Stack
) -> None:
    north = await stack.connect("northwind-foods")
    page = await signed_in(browser, stack, viewport={"width": 390, "height": 844},
                           is_mobile=True, has_touch=True)
    for path in ("/dashboard/connections", f"/dashboard/connections/{north['id']}",
                 "/dashboard/webhooks", "/dashboard/events", "/dashboard/requests"):
        await page.goto(stack.url + path)
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, (path, overflow)
        small = await page.evaluate("""() => [...document.querySelectorAll(
                'main button, main .button, main select, main input:not([type=hidden]), '
                + 'header a, header button')]
            .filter(e => e.offsetParent !== null)
            .map(e => [e.textContent.trim() || e.name || e.id, e.getBoundingClientRect()])
            .filter(([, r]) => r.height < 44)
            .map(([name, r]) => name + ':' + r.height)""")
        assert small == [], (path, small)
    await page.goto(f"{stack.url}/dashboard/connections")
    cell = row_of(page, north["id"]).locator('[data-label="Status"]')
    assert await cell.evaluate("e => getComputedStyle(e).display") == "block"
    label = await cell.evaluate("e => getComputedStyle(e, '::before').content")
    assert label == '"Status"'


async def test_everything_works_without_javascript(browser: Browser, stack: Stack) -> None:
    north = await stack.connect("northwind-foods")
    page = await signed_in(browser, stack, java_script_enabled=False)
    await expect(row_of(page, north["id"])).to_contain_text("northwind-foods")
    await page.get_by_role("link", name="northwind-foods").click()
    await page.get_by_role("link", name="Disconnect…").click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text("Disconnect")
    await page.get_by_role("button", name="Disconnect", exact=True).click()
    await expect(page.locator(".status-big[data-status]")).to_have_attribute(
        "data-status", "disconnected")
    await expect(page.get_by_role("status").first).to_contain_text("Disconnected.")
    # Copy buttons need JavaScript, so without it they stay hidden; the id is plain text.
    await expect(page.locator("button[data-copy]")).to_be_hidden()


async def test_logs_announce_new_rows_instead_of_shifting_them(
    browser: Browser, stack: Stack
) -> None:
    writer = stack.app.state.request_log
    account = {"account_id": (await _account_id(stack))}
    for i in range(40):
        writer.capture(account, "GET", f"/api/v1/work-orders/{i}", 200, f"old-{i:02d}", 3.0)
    await writer.flush()
    page = await signed_in(browser, stack)
    await page.goto(f"{stack.url}/dashboard/requests")
    rows = page.locator("tr[data-request-id]")
    await expect(rows).to_have_count(40)
    await page.evaluate("window.scrollTo(0, document.body.scrollHeight)")  # reading on
    assert await page.evaluate("window.scrollY") > 200

    for i in range(2):
        writer.capture(account, "POST", "/api/v1/work-orders", 201, f"new-{i}", 9.0)
    await writer.flush()
    show = page.get_by_role("button", name="2 new — show")
    await expect(show).to_be_visible(timeout=LIVE)
    await expect(rows).to_have_count(40)  # nothing moved under the reader
    await show.click()
    await expect(rows).to_have_count(42)
    await expect(rows.first).to_have_attribute("data-request-id", "new-1")


async def _account_id(stack: Stack) -> str:
    from sqlalchemy import select

    from maintlink.store.tables import api_keys

    rows = await stack.rows(select(api_keys.c.account_id).order_by(api_keys.c.id))
    return str(rows[0].account_id)
