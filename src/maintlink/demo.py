"""`maintlink demo`: the whole product on one screen.

Starts maintlink on the embedded default with the sandbox systems and a local webhook
receiver, connects two customers, shows every webhook arriving verified, then revokes one
customer's credentials and shows the connection turn `reauth_required`, with the link the
customer would open to reconnect. Reconnecting through that link shows up too.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route

from maintlink import logs
from maintlink.app import create_app
from maintlink.config import Settings
from maintlink.domain.accounts import create_admin_key
from maintlink.receiver.app import create_receiver_app
from maintlink.receiver.queue import EventQueue, iterate
from maintlink.runtime import build_runtime
from maintlink.store.db import migrate
from maintlink.worker import Worker

RECEIVER_PATH = "/webhooks"
# (customer, integration, path of its simulator on the sandbox server)
CUSTOMERS = (("northwind-foods", "sandbox", ""), ("contoso-energy", "maintainx", "/maintainx"))


def demo_settings(base: Settings, receiver_port: int) -> Settings:
    """The demo relaxes the webhook URL rules for loopback only, and checks health often."""
    return base.model_copy(update={
        "webhook_allow_http": True,
        "webhook_allowed_networks": "127.0.0.0/8",
        "health_check_interval_seconds": 5.0,
        "sandbox_size": min(base.sandbox_size, 120),
        "log_level": "warning",
    })


class Demo:
    def __init__(self, settings: Settings, console: Console, receiver_port: int,
                 until: str | None) -> None:
        self.settings = settings
        self.console = console
        self.receiver_port = receiver_port
        self.until = until
        self.base = f"http://{settings.host}:{settings.port}"
        self.sandbox = f"http://{settings.host}:{settings.sandbox_port}"
        self.receiver = f"http://127.0.0.1:{receiver_port}"
        self.names: dict[str, str] = {}
        self.seen: dict[str, int] = {}
        self.done = asyncio.Event()
        self.reauth_seen = asyncio.Event()
        self.all_synced = asyncio.Event()
        self.synced: set[str] = set()
        self.key = ""

    async def run(self) -> None:
        s = self.settings
        logs.configure(s.log_level, s.log_format)
        rt = build_runtime(s)
        await migrate(rt.engine)
        async with rt.engine.begin() as conn:
            _, _, self.key = await create_admin_key(conn, "demo", "demo")
        queue = EventQueue(s.data_dir / "demo-events.sqlite3", gap_timeout=2.0)
        servers: list[uvicorn.Server] = []
        tasks: list[asyncio.Task[Any]] = []
        worker = Worker(rt)

        def serve(app: Any, port: int) -> None:
            server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                                   log_config=None, access_log=False,
                                                   lifespan="on"))
            server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
            servers.append(server)
            tasks.append(asyncio.create_task(server.serve()))

        serve(create_app(s, runtime=rt, auto_migrate=False), s.port)
        from maintlink.sandbox.server import build_sandbox_server
        from maintlink.sandbox.state import SandboxState

        sandbox = build_sandbox_server(
            SandboxState(seed=s.sandbox_seed, size=s.sandbox_size), "127.0.0.1",
            s.sandbox_port, handle_signals=False, simulators=True)
        servers.append(sandbox)
        tasks.append(asyncio.create_task(sandbox.serve()))
        tasks.append(asyncio.create_task(worker.run()))
        try:
            async with httpx.AsyncClient(base_url=self.base, timeout=30) as client:
                await self._wait_up(client)
                secret = await self._endpoint(client)
                receiver = create_receiver_app([secret], queue, path=RECEIVER_PATH)
                serve(Starlette(routes=[Route("/connected", self._connected),
                                        Mount("/", app=receiver)]), self.receiver_port)
                self._intro()
                tasks.append(asyncio.create_task(self._consume(queue)))
                connections = [await self._connect(client, *c) for c in CUSTOMERS]
                await self._wait_for(self.all_synced, "initial syncs")
                victim = connections[0]
                self.console.print(Panel(
                    f"Revoking [bold]{self.names[victim['id']]}[/bold]'s API key in the "
                    "sandbox system, as an administrator at the customer might.",
                    title="Breaking a connection"))
                await client.post(
                    f"{self.sandbox}/_sandbox/credentials/{victim['_key']}/revoke")
                await self._wait_for(self.reauth_seen, "reauthorization needed")
                await self._reconnect_hint(client, victim)
                if self.until == "reauth":
                    return
                await self.done.wait()
        finally:
            worker.stop()
            for server in servers:
                server.should_exit = True
            # Servers and the worker stop by themselves; cancel only what is still running.
            _, pending = await asyncio.wait(tasks, timeout=5)
            for task in pending:
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*tasks, return_exceptions=True)
            queue.close()
            await rt.aclose()

    async def _wait_up(self, client: httpx.AsyncClient) -> None:
        for _ in range(300):
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.05)
        raise RuntimeError("maintlink did not start")

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    async def _endpoint(self, client: httpx.AsyncClient) -> str:
        r = await client.post("/api/v1/webhook-endpoints", headers=self._auth(), json={
            "url": f"{self.receiver}{RECEIVER_PATH}", "description": "demo receiver"})
        r.raise_for_status()
        return str(r.json()["secret"])

    def _intro(self) -> None:
        self.console.rule("[bold]maintlink demo")
        table = Table.grid(padding=(0, 2))
        table.add_row("API", f"{self.base}/api/v1   docs: {self.base}/api/v1/docs")
        table.add_row("Dashboard", f"{self.base}/dashboard   (admin key below)")
        table.add_row("Sandbox system", self.sandbox)
        table.add_row("Webhook receiver", f"{self.receiver}{RECEIVER_PATH}")
        table.add_row("Admin key", f"[bold]{self.key}[/bold]")
        self.console.print(table)
        self.console.print(
            "[yellow]Demo only:[/yellow] webhooks may go to plain http:// on loopback "
            "(127.0.0.0/8). Real deployments require public https:// URLs.")
        self.console.rule("webhooks, as they arrive and are verified")

    async def _connect(
        self, client: httpx.AsyncClient, customer: str, integration: str, path: str
    ) -> dict[str, Any]:
        system = f"{self.sandbox}{path}"
        key = (await client.post(f"{system}/_sandbox/credentials",
                                 json={"name": customer})).json()["api_key"]
        r = await client.post("/api/v1/connections", headers=self._auth(), json={
            "customer_id": customer, "integration": integration,
            "credentials": {"base_url": system, "api_key": key},
            "settings": {"history_days": 3650, "sync_interval_minutes": 5}})
        r.raise_for_status()
        conn = {**r.json(), "_key": key}
        self.names[conn["id"]] = customer
        return conn

    async def _consume(self, queue: EventQueue) -> None:
        async for delivery in iterate(queue, poll_interval=0.2):
            event = delivery.event
            name = self.names.get(event.get("connection_id") or "", "account")
            detail = _summary(event)
            self.console.print(
                f"[green]✓ verified[/green] {time.strftime('%H:%M:%S')}  "
                f"[bold]{event['type']:<38}[/bold] {name:<16} "
                f"seq {event.get('sequence') or '-':<3} {detail}")
            if event["type"] == "sync.completed" and event.get("connection_id"):
                self.synced.add(event["connection_id"])
                if len(self.synced) == len(CUSTOMERS):
                    self.all_synced.set()
            if event["type"] == "connection.reauthorization_required":
                self.reauth_seen.set()
            if event["type"] == "connection.reauthorized" and self.until == "reconnected":
                self.done.set()

    async def _wait_for(self, event: asyncio.Event, what: str) -> None:
        try:
            async with asyncio.timeout(120):
                await event.wait()
        except TimeoutError:
            raise RuntimeError(f"timed out waiting for {what}") from None

    async def _reconnect_hint(self, client: httpx.AsyncClient, victim: dict[str, Any]) -> None:
        status = (await client.get(f"/api/v1/connections/{victim['id']}/status",
                                   headers=self._auth())).json()
        r = await client.get("/api/v1/work-orders",
                             headers={"Authorization": f"Bearer {victim['token']}"})
        lines = [
            f"Status of {self.names[victim['id']]}: [bold red]{status['status']}[/bold red] "
            f"({status['status_reason']})",
            f"Its data requests now answer {r.status_code} {r.json()['error']['code']}.",
        ]
        link = await client.post("/api/v1/link-tokens", headers=self._auth(), json={
            "customer_id": self.names[victim["id"]], "connection_id": victim["id"],
            "redirect_uri": f"{self.receiver}/connected"})
        if link.status_code == 201:
            lines.append(f"Send the customer this link to reconnect:\n[bold]{link.json()['url']}"
                         "[/bold]")
            await client.post(f"{self.sandbox}/_sandbox/credentials/{victim['_key']}/restore")
            lines.append("(The sandbox key has been restored, so reconnecting with "
                         f"[bold]{victim['_key']}[/bold] works.)")
        lines.append(f"Or open the dashboard: {self.base}/dashboard/connections/{victim['id']}")
        self.console.print(Panel("\n".join(lines), title="Reauthorization required"))

    async def _connected(self, request: Request) -> HTMLResponse:
        """Where the connection flow sends the customer back: exchange the code."""
        code = request.query_params.get("code", "")
        async with httpx.AsyncClient(base_url=self.base, timeout=30) as client:
            r = await client.post("/api/v1/link-tokens/exchange", headers=self._auth(),
                                  json={"code": code})
        if r.status_code != 200:
            return HTMLResponse(f"<h1>Could not exchange the code</h1><pre>{r.text}</pre>", 400)
        body = r.json()
        self.console.print(Panel(
            f"Code exchanged: connection {body['connection_id']} has a new token "
            f"({body['token'][:8]}…). Same id, same data.", title="Reconnected"))
        return HTMLResponse("<h1>Reconnected</h1><p>You can close this tab.</p>")


def _summary(event: dict[str, Any]) -> str:
    data = event.get("data") or {}
    if event["type"] == "sync.completed":
        created = sum(c.get("created", 0) for c in data.get("entities", {}).values())
        return f"{data.get('kind')} sync, {created} records created"
    if event["type"] == "connection.reauthorization_required":
        return f"reason: {data.get('reason')}"
    if event["type"] == "connection.status_changed":
        return f"{data.get('previous_status')} -> {data.get('status')}"
    return ""


async def run_demo(
    settings: Settings, console: Console, *, receiver_port: int = 9000,
    until: str | None = None,
) -> None:
    s = demo_settings(settings, receiver_port)
    await asyncio.to_thread(Path(s.data_dir).mkdir, parents=True, exist_ok=True)
    await Demo(s, console, receiver_port, until).run()
