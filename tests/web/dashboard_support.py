"""Shared by the dashboard tests: maintlink with the sandbox, a webhook receiver and a delivery
worker, signed-in HTTP clients, and scenario helpers.

Import the fixtures into a test module with `from tests.web.dashboard_support import *`-style
explicit imports (pytest finds fixtures by name in the module)."""

from __future__ import annotations

import asyncio
import contextlib
import html
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import inspect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from maintlink.app import create_app
from maintlink.config import Settings
from maintlink.domain.health import check_connection
from maintlink.domain.syncs import SyncRun, claim_due
from maintlink.runtime import Runtime, build_runtime
from maintlink.store.db import create_engine
from maintlink.store.tables import metadata
from maintlink.webhooks.delivery import DeliveryWorker
from tests.conftest import bearer, new_sandbox_key, run_sync, serve_app

# --- the store: tables not yet in the initial migration ------------------------------------------
# The request log table is appended to `store/tables.py`; until the single initial migration is
# regenerated, the templates get the missing tables here (a no-op once the migration has them).

async def _create_missing(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            present = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
            missing = [t for t in metadata.sorted_tables if t.name not in present]
            if missing:
                await conn.run_sync(lambda c: metadata.create_all(c, tables=missing))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(sqlite_template: Path) -> Path:
    run_sync(_create_missing(f"sqlite+aiosqlite:///{sqlite_template}"))
    return sqlite_template


@pytest.fixture(scope="session")
def pg_template(pg_template: str) -> Iterator[str]:
    run_sync(_create_missing(pg_template.replace("postgresql://", "postgresql+asyncpg://")))
    yield pg_template


# --- a webhook receiver ---------------------------------------------------------------------------

@dataclass
class Receiver:
    """Plain HTTP on loopback (the test settings allow it for 127.0.0.0/8)."""

    url: str = ""
    status: int = 200
    body: bytes = b'{"ok":true}'
    received: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            self.received.append({"headers": dict(request.headers),
                                  "body": await request.body()})
            return Response(self.body, status_code=self.status,
                            media_type="application/json")

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])


# --- maintlink with everything around it ----------------------------------------------------------

@dataclass
class Stack:
    rt: Runtime
    url: str
    api: httpx.AsyncClient
    sandbox: str
    receiver: Receiver
    key: str
    other_key: str
    app: Any

    async def connect(self, customer: str, key: str | None = None) -> dict[str, Any]:
        sandbox_key = await new_sandbox_key(self.sandbox)
        r = await self.api.post(
            "/api/v1/connections", headers=bearer(key or self.key),
            json={"customer_id": customer, "integration": "sandbox",
                  "credentials": {"base_url": self.sandbox, "api_key": sandbox_key}})
        assert r.status_code == 201, r.text
        return {**r.json(), "_sandbox_key": sandbox_key}

    async def endpoint(self, key: str | None = None, path: str = "/hook",
                       **extra: Any) -> dict[str, Any]:
        r = await self.api.post("/api/v1/webhook-endpoints", headers=bearer(key or self.key),
                                json={"url": f"{self.receiver.url}{path}", **extra})
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def revoke(self, sandbox_key: str) -> None:
        async with httpx.AsyncClient() as c:
            r = await c.post(f"{self.sandbox}/_sandbox/credentials/{sandbox_key}/revoke")
            r.raise_for_status()

    async def flush_request_log(self) -> None:
        await self.app.state.request_log.flush()

    async def sync(self, connection_id: str) -> None:
        """Claim and run one sync, as the worker loop does."""
        assert connection_id in await claim_due(self.rt, "dashboard-tests", 50)
        await SyncRun(self.rt, connection_id, "dashboard-tests").run()

    async def check(self, connection_id: str) -> None:
        await check_connection(self.rt, connection_id)

    async def rows(self, query: Any) -> list[Any]:
        async with self.rt.engine.connect() as conn:
            return list((await conn.execute(query)).all())

    async def delivered(self, count: int) -> None:
        """Wait until the receiver has `count` requests."""
        async def enough() -> bool:
            return len(self.receiver.received) >= count
        await eventually(enough)


def stack_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={
        "webhook_allow_http": True,
        "webhook_allowed_networks": "127.0.0.0/8",
        "request_log_flush_seconds": 0.2,
        "health_check_interval_seconds": 3600.0,  # tests drive checks themselves
    })


@contextlib.asynccontextmanager
async def running_stack(
    settings: Settings, key: str, other_key: str, sandbox: str, *, deliver: bool = True,
) -> AsyncIterator[Stack]:
    s = stack_settings(settings)
    rt = build_runtime(s)
    receiver = Receiver()
    app = create_app(s, runtime=rt, auto_migrate=False)
    worker = DeliveryWorker(rt, "dashboard-tests", poll_interval=0.2)
    async with serve_app(receiver.app()) as receiver_url:
        receiver.url = receiver_url
        async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as api:
            task = asyncio.create_task(worker.run()) if deliver else None
            try:
                yield Stack(rt, url, api, sandbox, receiver, key, other_key, app)
            finally:
                if task is not None:
                    worker.stop()
                    await task
    await rt.aclose()


@pytest.fixture
async def stack(
    settings: Settings, admin_key: str, other_admin_key: str, sandbox_url: str
) -> AsyncIterator[Stack]:
    async with running_stack(settings, admin_key, other_admin_key, sandbox_url) as s:
        yield s


# --- signing in over plain HTTP -----------------------------------------------------------------

_CSRF = re.compile(r'name="csrf_token" value="([^"]*)"')


def csrf_of(page: str) -> str:
    match = _CSRF.search(page)
    assert match, "no CSRF field on the page"
    return html.unescape(match.group(1))


async def sign_in(base_url: str, key: str) -> httpx.AsyncClient:
    """A cookie-keeping client signed in to the dashboard (the caller closes it)."""
    client = httpx.AsyncClient(base_url=base_url, timeout=30)
    page = await client.get("/dashboard/login")
    assert page.status_code == 200, page.text
    r = await client.post("/dashboard/login",
                          data={"admin_key": key, "csrf_token": csrf_of(page.text),
                                "next": "/dashboard/connections"})
    assert r.status_code == 303, r.text
    return client


async def post_form(client: httpx.AsyncClient, page_path: str, action: str,
                    data: dict[str, str] | None = None) -> httpx.Response:
    """Post a form the way the page would: with the CSRF token the page carries."""
    page = await client.get(page_path)
    assert page.status_code == 200, page.text
    return await client.post(action, data={"csrf_token": csrf_of(page.text), **(data or {})})


async def eventually(check: Any, timeout: float = 10.0, interval: float = 0.1) -> Any:
    """Await `check()` until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)
