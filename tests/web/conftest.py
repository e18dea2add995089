"""Fixtures for the connection flow: maintlink with a movable clock, the developer's own
site (a callback page and an embedding page on another loopback origin), helpers that
drive the hosted pages over plain HTTP the way a browser without JavaScript would."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from maintlink.app import create_app
from maintlink.config import Settings
from maintlink.crypto import generate_key
from maintlink.domain.connections import Status, transition
from maintlink.runtime import build_runtime
from maintlink.store.db import create_engine
from maintlink.store.types import utcnow
from tests.conftest import bearer, serve_app

SAP_CLIENT = {"client_id": "sap-demo-client", "client_secret": "sap-demo-secret"}


class Clock:
    """maintlink's notion of now, movable by tests (expiry of tokens and codes)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return utcnow() + self.offset

    def advance(self, **delta: float) -> None:
        self.offset += timedelta(**delta)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path, database_url=database_url, secret_key=generate_key(),
        sandbox_enabled=False, environment="production",
        oauth_clients={"sap_s4hana": dict(SAP_CLIENT)},
        link_token_attempts_per_minute=50,
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def api(settings: Settings, clock: Clock) -> AsyncIterator[str]:
    rt = build_runtime(settings)
    rt.clock = clock
    try:
        async with serve_app(create_app(settings, runtime=rt, auto_migrate=False)) as url:
            yield url
    finally:
        await rt.aclose()


@dataclass
class DeveloperSite:
    """The developer's app: `/callback` receives the redirect, `/embed` opens the modal."""

    url: str = ""
    maintlink_url: str = ""
    link_url: str = ""
    callbacks: list[dict[str, str]] = field(default_factory=list)

    @property
    def callback(self) -> str:
        return f"{self.url}/callback"


def _developer_app(site: DeveloperSite) -> Starlette:
    async def callback(request: Request) -> Response:
        params = dict(request.query_params)
        site.callbacks.append(params)
        items = "".join(f'<dd id="{html.escape(k)}">{html.escape(v)}</dd>'
                        for k, v in params.items())
        return HTMLResponse(f"<!doctype html><title>Callback</title><h1>Back in the app</h1>"
                            f"<dl>{items}</dl>")

    async def embed(request: Request) -> Response:
        page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Developer app</title>
<script src="{site.maintlink_url}/static/maintlink-connect.js"></script></head>
<body><h1>Developer app</h1>
<button id="connect" type="button">Connect your CMMS</button>
<output id="result"></output><output id="exit"></output><ol id="events"></ol>
<script>
document.getElementById("connect").addEventListener("click", function () {{
  MaintlinkConnect.open({{
    url: {site.link_url!r},
    onSuccess: function (code, meta) {{
      document.getElementById("result").textContent = code;
      document.getElementById("result").dataset.integration = meta.integration; }},
    onExit: function (info) {{ document.getElementById("exit").textContent = info.reason; }},
    onEvent: function (e) {{
      var li = document.createElement("li"); li.textContent = e.name;
      document.getElementById("events").appendChild(li); }}
  }});
}});
</script></body></html>"""
        return HTMLResponse(page)

    return Starlette(routes=[Route("/callback", callback), Route("/embed", embed)])


@pytest.fixture
async def developer(api: str) -> AsyncIterator[DeveloperSite]:
    site = DeveloperSite(maintlink_url=api)
    async with serve_app(_developer_app(site)) as url:
        site.url = url
        yield site


# --- helpers ---------------------------------------------------------------------------------

async def new_link(
    client: httpx.AsyncClient, admin_key: str, redirect_uri: str, **fields: Any
) -> dict[str, Any]:
    body = {"customer_id": "cust-1", "redirect_uri": redirect_uri, **fields}
    if "connection_id" in fields and "customer_id" not in fields:
        body.pop("customer_id")
    r = await client.post("/api/v1/link-tokens", headers=bearer(admin_key), json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(page: str) -> str:
    match = _CSRF.search(page)
    assert match, "no csrf field on the page"
    return html.unescape(match.group(1))


async def submit_form(
    browser: httpx.AsyncClient, url: str, values: dict[str, str], *,
    integration: str | None = None, extra: dict[str, str] | None = None,
) -> httpx.Response:
    """Open the form as a browser without JavaScript would, fill it in, submit it."""
    page_url = f"{url}?integration={integration}" if integration else url
    page = await browser.get(page_url)
    assert page.status_code == 200, page.text
    form = {"csrf": csrf_of(page.text), **{f"field_{k}": v for k, v in values.items()},
            **(extra or {})}
    if integration:
        form["integration"] = integration
    return await browser.post(url, data=form)


def code_from(location: str) -> str:
    query = httpx.URL(location).params
    return str(query["code"])


async def set_status(settings: Settings, connection_id: str, status: Status, reason: str) -> None:
    engine = create_engine(settings.effective_database_url)
    try:
        async with engine.begin() as c:
            await transition(c, connection_id, status, reason=reason,
                             error_code="INVALID_CREDENTIALS")
    finally:
        await engine.dispose()

