"""Test helpers for webhook delivery: real HTTPS receivers on loopback, a store with an account,
and a clock the test moves by hand."""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import trustme
from aiohttp import web
from sqlalchemy import select

from maintlink.config import Settings
from maintlink.domain.accounts import create_admin_key
from maintlink.domain.endpoints import create_endpoint
from maintlink.domain.events import emit
from maintlink.runtime import Runtime, build_runtime
from maintlink.store.tables import attempts, deliveries, webhook_endpoints
from maintlink.webhooks.delivery import DeliveryWorker


class FakeClock:
    """``rt.clock`` that only moves when the test says so."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = (start or datetime.now(UTC)).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now

    def set(self, when: datetime) -> None:
        self.now = when


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering
    hang: bool = False  # never answer (until the receiver closes)
    stall_body: bool = False  # send the status line and part of the body, then nothing more


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic()
    path: str


Handler = Callable[[Received], Awaitable[Reply] | Reply]


class Receiver:
    """An HTTPS server on 127.0.0.1 with a certificate from ``ca``, recording every request.

    Answers with ``reply`` (or what ``handler`` returns for a request)."""

    def __init__(self, ca: trustme.CA, reply: Reply | None = None,
                 handler: Handler | None = None) -> None:
        self.ca = ca
        self.reply = reply or Reply()
        self.handler = handler
        self.received: list[Received] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._changed = asyncio.Condition()
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"https://127.0.0.1:{port}/hook"
        return self

    async def close(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        item = Received(dict(request.headers), body, time.monotonic(), request.path)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        async with self._changed:
            self.received.append(item)
            self._changed.notify_all()
        try:
            reply = self.reply
            if self.handler is not None:
                result = self.handler(item)
                reply = await result if asyncio.iscoroutine(result) else result  # type: ignore[assignment]
            if reply.stall_body:
                response = web.StreamResponse(status=reply.status, headers=reply.headers)
                response.content_length = len(reply.body) + 1000
                await response.prepare(request)
                await response.write(reply.body)
                await self._release.wait()
                return response
            if reply.hang:
                await self._release.wait()
            elif reply.delay:
                await asyncio.sleep(reply.delay)
            return web.Response(status=reply.status, body=reply.body, headers=reply.headers)
        finally:
            self.in_flight -= 1

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Wait until ``count`` requests arrived in all."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.received) >= count)
        return list(self.received)


@contextlib.asynccontextmanager
async def receiving(ca: trustme.CA, reply: Reply | None = None,
                    handler: Handler | None = None) -> AsyncIterator[Receiver]:
    receiver = await Receiver(ca, reply, handler).start()
    try:
        yield receiver
    finally:
        await receiver.close()


# --- store helpers ----------------------------------------------------------------------------


@dataclass
class Store:
    rt: Runtime
    clock: FakeClock
    account_id: str

    def worker(self, **kwargs: Any) -> DeliveryWorker:
        kwargs.setdefault("rng", random.Random(7))
        return DeliveryWorker(self.rt, kwargs.pop("worker_id", "test-worker"), **kwargs)


StoreFactory = Callable[..., Awaitable[Store]]


@contextlib.asynccontextmanager
async def store_factory(settings: Settings, ca_file: str) -> AsyncIterator[StoreFactory]:
    """Runtimes on the test's store with overridden settings, sharing one clock and account."""
    clock = FakeClock()
    made: list[Runtime] = []

    async def make(**overrides: Any) -> Store:
        rt = make_runtime(delivery_settings(settings, ca_file, **overrides), clock)
        made.append(rt)
        return Store(rt, clock, await new_account(rt))

    try:
        yield make
    finally:
        for rt in made:
            await rt.aclose()


def body_of(request: Received) -> dict[str, Any]:
    return orjson.loads(request.body)  # type: ignore[no-any-return]


def delivery_settings(settings: Settings, ca_file: str, **overrides: Any) -> Settings:
    """The test settings with loopback receivers allowed and the test CA trusted."""
    values: dict[str, Any] = {
        "webhook_ca_bundle": ca_file,
        "webhook_allowed_networks": "127.0.0.0/8",
        "webhook_timeout_seconds": 5.0,
    }
    values.update(overrides)
    return settings.model_copy(update=values)


def make_runtime(settings: Settings, clock: FakeClock | None = None) -> Runtime:
    rt = build_runtime(settings)
    if clock is not None:
        rt.clock = clock
    return rt


async def new_account(rt: Runtime, name: str = "acme") -> str:
    async with rt.engine.begin() as conn:
        account_id, _, _ = await create_admin_key(conn, name)
    return account_id


async def new_endpoint(rt: Runtime, account_id: str, url: str, **kwargs: Any) -> tuple[str, str]:
    """Returns (endpoint id, signing secret)."""
    async with rt.engine.begin() as conn:
        row, secret = await create_endpoint(conn, rt, account_id=account_id, url=url, **kwargs)
    return row.id, secret


async def emit_test(rt: Runtime, account_id: str, endpoint_id: str | None,
                    message: str = "hello") -> str:
    """A `webhook.test` event for one endpoint (None: for every endpoint of the account)."""
    async with rt.engine.begin() as conn:
        return await emit(conn, account_id=account_id, type="webhook.test",
                          data={"endpoint_id": endpoint_id or "all", "message": message},
                          only_endpoint_id=endpoint_id, now=rt.clock())


async def rows(rt: Runtime, query: Any) -> list[Any]:
    async with rt.engine.connect() as conn:
        return list((await conn.execute(query)).all())


async def delivery_rows(rt: Runtime, endpoint_id: str | None = None) -> list[Any]:
    query = select(deliveries).order_by(deliveries.c.created_at, deliveries.c.id)
    if endpoint_id is not None:
        query = query.where(deliveries.c.endpoint_id == endpoint_id)
    return await rows(rt, query)


async def attempt_rows(rt: Runtime, endpoint_id: str | None = None) -> list[Any]:
    query = select(attempts).order_by(attempts.c.attempt_number, attempts.c.id)
    if endpoint_id is not None:
        query = query.where(attempts.c.endpoint_id == endpoint_id)
    return await rows(rt, query)


async def endpoint_row(rt: Runtime, endpoint_id: str) -> Any:
    return (await rows(rt, select(webhook_endpoints)
                       .where(webhook_endpoints.c.id == endpoint_id)))[0]
