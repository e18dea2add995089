"""Screenshots of the dashboard for docs/dashboard.md, from realistic demo data.

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots] [--chromium /usr/bin/chromium]

Builds three days of history in a throwaway SQLite store, with the real parts: the sandbox
system over HTTP, syncs and health checks run by the domain code, webhooks delivered by the
delivery worker to a local receiver (one endpoint healthy, one answering 503, one disabled),
API requests made with connection tokens. maintlink's clock is moved through those days, so
the pages show a believable past. Then Chromium (through Playwright) signs in and captures
each page at laptop and phone sizes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import tempfile
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from sqlalchemy import inspect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from maintlink.app import create_app
from maintlink.config import Settings
from maintlink.domain.accounts import create_admin_key
from maintlink.domain.endpoints import disable_endpoint
from maintlink.domain.health import check_connection
from maintlink.domain.syncs import SyncRun, claim_due
from maintlink.runtime import build_runtime
from maintlink.sandbox.app import SandboxState, create_sandbox_app
from maintlink.store.db import migrate
from maintlink.store.tables import metadata
from maintlink.store.types import utcnow
from maintlink.webhooks.delivery import DeliveryWorker

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
MAX_HEIGHT = 1500
CUSTOMERS = ["northwind-foods", "contoso-energy", "fabrikam-plants", "initech-logistics",
             "umbrella-pharma", "wayne-utilities"]


class Clock:
    """maintlink's now, moved through the demo's past; real time once `offset` is zero."""

    def __init__(self, offset: timedelta) -> None:
        self.offset = offset

    def __call__(self) -> datetime:
        return utcnow() - self.offset

    def to(self, ago: timedelta) -> None:
        self.offset = ago


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                            access_log=False, lifespan="on", log_config=None)
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def receiver_app() -> Starlette:
    """The developer's webhook receivers: one healthy, one behind a broken load balancer."""

    async def ok(request: Request) -> Response:
        await request.body()
        await asyncio.sleep(random.uniform(0.01, 0.08))
        return Response('{"received":true}', media_type="application/json")

    async def broken(request: Request) -> Response:
        await request.body()
        return Response("<html><body><h1>503 Service Temporarily Unavailable</h1>"
                        "</body></html>", status_code=503, media_type="text/html")

    return Starlette(routes=[Route("/webhooks/maintlink", ok, methods=["POST"]),
                             Route("/legacy/hooks", broken, methods=["POST"])])


async def ensure_tables(rt: Any) -> None:
    """Tables added after the initial migration was last generated (a no-op once it has
    them)."""
    async with rt.engine.begin() as conn:
        present = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        missing = [t for t in metadata.sorted_tables if t.name not in present]
        if missing:
            await conn.run_sync(lambda c: metadata.create_all(c, tables=missing))


class Demo:
    def __init__(self, rt: Any, api: httpx.AsyncClient, sandbox: str, receiver: str,
                 clock: Clock, key: str) -> None:
        self.rt, self.api, self.sandbox, self.receiver = rt, api, sandbox, receiver
        self.clock, self.key = clock, key
        self.conns: dict[str, dict[str, Any]] = {}
        self.worker = DeliveryWorker(rt, "screenshots", listen=False)

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    async def sandbox_post(self, path: str, body: Any = None) -> Any:
        r = await self.api.post(f"{self.sandbox}{path}", json=body)
        r.raise_for_status()
        return r.json()

    async def connect(self, customer: str) -> None:
        key = (await self.sandbox_post("/_sandbox/credentials"))["api_key"]
        r = await self.api.post("/api/v1/connections", headers=self.admin(), json={
            "customer_id": customer, "integration": "sandbox",
            "credentials": {"base_url": self.sandbox, "api_key": key},
            "settings": {"history_days": 365}})
        r.raise_for_status()
        self.conns[customer] = {**r.json(), "sandbox_key": key}

    async def sync_all(self) -> None:
        ids = await claim_due(self.rt, "screenshots", 50)
        for connection_id in ids:
            await SyncRun(self.rt, connection_id, "screenshots").run()
        await self.deliver()

    async def due_now(self) -> None:
        """Make every active connection's next sync due (as the schedule would)."""
        from sqlalchemy import update

        from maintlink.store.tables import connections

        async with self.rt.engine.begin() as conn:
            await conn.execute(update(connections).values(next_sync_at=self.clock()))

    async def deliver(self) -> None:
        for _ in range(20):
            if not await self.worker.run_once():
                break

    async def at(self, ago: timedelta) -> None:
        self.clock.to(ago)
        await self.deliver()  # retries that fell due meanwhile

    async def build(self) -> None:
        c = self.clock
        await self.at(timedelta(days=3, hours=2))
        for customer in CUSTOMERS:
            await self.connect(customer)
        healthy = await self.api.post("/api/v1/webhook-endpoints", headers=self.admin(), json={
            "url": f"{self.receiver}/webhooks/maintlink",
            "description": "Production receiver"})
        healthy.raise_for_status()
        broken = await self.api.post("/api/v1/webhook-endpoints", headers=self.admin(), json={
            "url": f"{self.receiver}/legacy/hooks", "description": "Legacy ERP bridge",
            "events": ["connection.status_changed", "connection.reauthorization_required"]})
        broken.raise_for_status()
        retired = await self.api.post("/api/v1/webhook-endpoints", headers=self.admin(), json={
            "url": "https://hooks.staging.example.com/maintlink",
            "description": "Old staging environment"})
        retired.raise_for_status()
        async with self.rt.engine.begin() as conn:
            await disable_endpoint(conn, retired.json()["id"],
                                   "failed without a break for 5 days", c())
        await self.sync_all()

        for ago in (timedelta(days=2), timedelta(days=1, hours=3), timedelta(hours=20),
                    timedelta(hours=9), timedelta(hours=3)):
            await self.at(ago)
            await self.sandbox_post("/_sandbox/changes", {"create": 6, "update": 14, "delete": 1})
            await self.due_now()
            await self.sync_all()

        # fabrikam's system went down for a while this morning, and came back.
        await self.at(timedelta(hours=6))
        fab = self.conns["fabrikam-plants"]
        await self.sandbox_post(f"/_sandbox/credentials/{fab['sandbox_key']}/faults",
                                {"offline": True})
        for _ in range(3):
            await check_connection(self.rt, fab["id"])
        await self.deliver()
        await self.at(timedelta(hours=5, minutes=20))
        await self.sandbox_post(f"/_sandbox/credentials/{fab['sandbox_key']}/faults",
                                {"offline": False})
        await check_connection(self.rt, fab["id"])
        await self.deliver()

        # wayne's system is unreachable right now.
        await self.at(timedelta(minutes=25))
        wayne = self.conns["wayne-utilities"]
        await self.sandbox_post(f"/_sandbox/credentials/{wayne['sandbox_key']}/faults",
                                {"offline": True})
        for _ in range(3):
            await check_connection(self.rt, wayne["id"])
        await self.deliver()

        # northwind's administrator revoked the API key maintlink uses.
        await self.at(timedelta(minutes=48))
        north = self.conns["northwind-foods"]
        await self.sandbox_post(f"/_sandbox/credentials/{north['sandbox_key']}/revoke")
        await check_connection(self.rt, north["id"])
        await self.deliver()

        # umbrella stopped using the integration.
        await self.at(timedelta(minutes=12))
        r = await self.api.post(f"/api/v1/connections/{self.conns['umbrella-pharma']['id']}"
                                "/disconnect", headers=self.admin())
        r.raise_for_status()
        await self.deliver()

        await self.at(timedelta(0))
        r = await self.api.post("/api/v1/link-tokens", headers=self.admin(), json={
            "connection_id": north["id"],
            "redirect_uri": "https://app.acme-field.example/integrations/maintlink/callback"})
        r.raise_for_status()
        await self.requests()
        await self.deliver()

    async def requests(self) -> None:
        """What the developer's app does with its connection tokens."""
        paths = ["/api/v1/work-orders?page_size=50", "/api/v1/assets?page_size=100",
                 "/api/v1/parts", "/api/v1/work-orders?status=open",
                 "/api/v1/purchase-orders?page_size=20", "/api/v1/connection"]
        for customer, info in self.conns.items():
            token = {"Authorization": f"Bearer {info['token']}"}
            for path in paths[: 3 if customer != "contoso-energy" else len(paths)]:
                await self.api.get(path, headers=token)
        contoso = {"Authorization": f"Bearer {self.conns['contoso-energy']['token']}"}
        await self.api.get("/api/v1/work-orders/wo_does_not_exist", headers=contoso)
        await self.api.post("/api/v1/work-orders", headers=contoso, json={"title": ""})
        north = {"Authorization": f"Bearer {self.conns['northwind-foods']['token']}"}
        await self.api.get("/api/v1/work-orders", headers=north)
        await self.api.get(f"/api/v1/connections/{self.conns['northwind-foods']['id']}/status",
                           headers=north)


async def capture(base: str, key: str, demo: Demo, out: Path, chromium: str) -> list[Path]:
    from playwright.async_api import async_playwright

    north = demo.conns["northwind-foods"]["id"]
    shots: list[Path] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            laptop = await browser.new_context(viewport=LAPTOP, device_scale_factor=1)
            page = await laptop.new_page()

            async def shot(name: str, path: str | None, full: bool = True) -> None:
                """The page from its top, at most MAX_HEIGHT tall (small, readable PNGs)."""
                if path is not None:
                    await page.goto(base + path)
                await page.wait_for_load_state("networkidle")
                target = out / f"{name}.png"
                size = page.viewport_size or LAPTOP
                height = size["height"]
                if full:
                    tall = await page.evaluate("document.documentElement.scrollHeight")
                    height = min(int(tall), MAX_HEIGHT)
                await page.screenshot(path=str(target), full_page=full, clip={
                    "x": 0, "y": 0, "width": size["width"], "height": height})
                shots.append(target)

            await page.goto(base + "/dashboard/login")
            await page.get_by_label("Admin API key").fill("mlk_" + "•" * 8)
            await shot("sign-in", None, full=False)
            await page.get_by_label("Admin API key").fill(key)
            await page.get_by_role("button", name="Sign in").click()
            await page.wait_for_url("**/dashboard/connections")
            await shot("connections", "/dashboard/connections")
            await shot("connection-reauth-required", f"/dashboard/connections/{north}")
            await shot("webhooks", "/dashboard/webhooks")
            endpoints = await page.locator("tr[data-endpoint]").evaluate_all(
                "rows => rows.map(r => r.dataset.endpoint)")
            await page.goto(f"{base}/dashboard/webhooks/{endpoints[1]}")
            await page.locator("details").first.evaluate("d => { d.open = true; }")
            await shot("webhook-endpoint-failing", None)  # with an answer received open
            await shot("events", "/dashboard/events")
            first_event = await page.locator("tr[data-id]").first.get_attribute("data-id")
            await shot("event", f"/dashboard/events/{first_event}")
            await shot("api-requests", "/dashboard/requests")
            cookies = await laptop.cookies()
            await laptop.close()

            phone = await browser.new_context(viewport=PHONE, device_scale_factor=2,
                                              is_mobile=True, has_touch=True)
            await phone.add_cookies(cookies)
            page = await phone.new_page()
            await shot("connections-phone", "/dashboard/connections", full=False)
            await shot("connection-phone", f"/dashboard/connections/{north}", full=False)
            await phone.close()
        finally:
            await browser.close()
    return shots


async def main(out: Path, chromium: str) -> None:
    random.seed(7)
    with tempfile.TemporaryDirectory(prefix="maintlink-shots-") as tmp:
        settings = Settings(
            data_dir=Path(tmp), sandbox_enabled=False, environment="development",
            webhook_allow_http=True, webhook_allowed_networks="127.0.0.0/8",
            health_check_interval_seconds=86400, request_log_flush_seconds=0.2,
            webhook_retry_jitter=0.0)
        clock = Clock(timedelta(0))
        rt = build_runtime(settings)
        rt.clock = clock
        await migrate(rt.engine)
        await ensure_tables(rt)
        async with rt.engine.begin() as conn:
            _, _, key = await create_admin_key(conn, "Acme Field Services", "screenshots")
        state = SandboxState(seed=11, size=80, organization_name="Plant maintenance (CMMS)")
        app = create_app(settings, runtime=rt, auto_migrate=False)
        try:
            async with serve(create_sandbox_app(state)) as sandbox, \
                    serve(receiver_app()) as receiver, serve(app) as base, \
                    httpx.AsyncClient(base_url=base, timeout=30) as api:
                demo = Demo(rt, api, sandbox, receiver, clock, key)
                await demo.build()
                await app.state.request_log.flush()
                shots = await capture(base, key, demo, out, chromium)
                await demo.worker.aclose()
        finally:
            await rt.aclose()
    for path in shots:
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    asyncio.run(main(args.out.resolve(), args.chromium))
    sys.exit(0)
