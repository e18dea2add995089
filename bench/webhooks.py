"""Webhook delivery: saturation throughput, the HTTP ceiling, latency at a steady rate, signing.

    .venv/bin/python bench/webhooks.py [--store postgresql|sqlite|both] [--events 3000]
                                       [--rate 200] [--duration 15] [--workers 1,2]
                                       [--concurrency 8] [--emit-batch 10]
                                       [--emitter auto|process|inline] [--repeat 3]
                                       [--receiver lean|aiohttp]

Set-up: a receiver in its own process (an HTTPS server on 127.0.0.1 with a certificate from
a throw-away trustme CA, answering 200 at once, recording the arrival time.time() of every
``webhook-id``; ``--receiver lean``, the default, parses with ``httptools`` in an asyncio
protocol, ``--receiver aiohttp`` is an aiohttp web application); a fresh store (PostgreSQL
database ``maintlink_bench_webhooks`` dropped and created and migrated, or a new SQLite file)
holding one account and one endpoint pointing at the receiver, created with
``endpoints.create_endpoint``; ``DeliveryWorker`` s run in this process with
``webhook_ca_bundle`` = the CA and ``webhook_allowed_networks`` = 127.0.0.0/8.

Events are ``sync.completed`` events written by ``events.emit``. On PostgreSQL they are emitted
by a separate process (as ``maintlink api`` next to ``maintlink worker``: wake-ups by NOTIFY);
on SQLite inside this process (``maintlink serve``: in-process wake-ups, the only kind SQLite
has). ``--emitter`` overrides that.

1. Saturation: ``--events`` events, ``--emit-batch`` per transaction, emitted as fast as
   possible while the worker(s) run (``--workers 1,2``: one run per count, the workers sharing
   this process and its engine). Deliveries per second from the first commit until the last
   delivery is recorded as succeeded (the worker counts attempts after their transaction
   commits); then the store is checked: every delivery succeeded, one successful attempt each,
   and the receiver saw each webhook-id exactly once. This rate cannot exceed the emitter's.
   Then a backlog drain: the same events emitted before one worker starts, timed from its
   start (the worker alone). The ratio target is on the drain; the drain and the ceiling
   each run ``--repeat`` times (3), alternated, and the best of each counts.
2. Ceiling: the same receiver driven by a bare asyncio POST loop: the worker's aiohttp session
   (``urls.make_connector``, same limits, TLS context and connection reuse), the same body and
   headers, ``--concurrency`` requests in flight (the endpoint's cap), no store, no signing.
   Timed from a cold start like the worker: building the TLS context and session and opening
   the connections count, as they do for the worker (which also connects to the store).
3. Latency: ``--rate`` events/s for ``--duration`` s, one event per transaction (up to four
   transactions at once, so a slow commit does not lower the rate); latency from time.time()
   right after the emitting commit to time.time() at arrival in the receiver. Deliveries not
   received ``--latency-grace`` s after the last commit count as infinitely late, which keeps
   the run short when the worker cannot keep up.
4. Sign + verify ops/s of maintlink and of ``standardwebhooks`` (``bench/signing.py``).
5. The ceiling loop with aiohttp and with httpx's AsyncClient, same concurrency and requests.

Child processes and the database are cleaned up on exit, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httptools

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent / "src"))

from _children import Children, exit_when_parent_goes, pg_admin  # noqa: E402 (bench/)

PG_ADMIN_URL = os.environ.get(
    "MAINTLINK_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
PG_DATABASE = "maintlink_bench_webhooks"
TARGET_RATIO = 0.5
TARGET_P50_MS = 10.0
TARGET_P99_MS = 50.0
EVENT_TYPE = "sync.completed"
STALL_SECONDS = 30.0  # no delivery recorded for this long: give up


# --- child processes ---------------------------------------------------------------------------




def _read_line(proc: subprocess.Popen[bytes], prefix: str) -> str:
    """The next stdout line of ``proc`` starting with ``prefix`` (the prefix removed)."""
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(
                f"child process {proc.pid} exited (code {proc.wait()}) "
                f"before printing {prefix.strip()}"
            )
        text = line.decode()
        if text.startswith(prefix):
            return text[len(prefix) :].strip()


def _run_loop(main: Awaitable[None], fast: bool = False) -> None:
    """Run ``main``; on uvloop if ``fast`` and available (the receiver is a fixture)."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if fast:
        with contextlib.suppress(ImportError):
            import uvloop

            factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main)  # type: ignore[arg-type]


# --- the receiver, in its own process ----------------------------------------------------------


class _Counts:
    """What the receiver saw: requests, duplicate webhook-ids, body bytes, first arrivals."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.requests = self.duplicates = self.bytes = 0

    def hook(self, msg_id: str, size: int, at: float) -> None:
        self.requests += 1
        self.bytes += size
        if msg_id in self.arrivals:
            self.duplicates += 1
        else:
            self.arrivals[msg_id] = at

    def stats(self, arrivals: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "requests": self.requests, "duplicates": self.duplicates, "bytes": self.bytes
        }
        if arrivals:
            out["arrivals"] = self.arrivals
        return out

    def reset(self) -> None:
        self.arrivals.clear()
        self.requests = self.duplicates = self.bytes = 0


_OK = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 2\r\n\r\nok"
)


class _LeanReceiver(asyncio.Protocol):
    """One HTTP/1.1 keep-alive connection of the lean receiver, parsed by ``httptools``
    (llhttp, uvicorn's parser): the least CPU per request we know how to spend on loopback,
    so that the receiver takes as little as it can of the cores the worker and PostgreSQL
    share with it."""

    def __init__(self, counts: _Counts) -> None:
        self.counts = counts
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self._url = b""
        self._msg_id = b""
        self._size = 0
        self._at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment] (uvloop's is no subclass)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url, self._msg_id, self._size, self._at = b"", b"", 0, time.time()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 10 and name.lower() == b"webhook-id":
            self._msg_id = value

    def on_body(self, body: bytes) -> None:
        self._size += len(body)

    def on_message_complete(self) -> None:
        assert self.transport is not None
        path, _, query = self._url.partition(b"?")
        method = self.parser.get_method()
        if method == b"POST" and path == b"/_reset":
            self.counts.reset()
            self.transport.write(_OK)
        elif method == b"GET" and path == b"/_stats":
            payload = json.dumps(self.counts.stats(b"arrivals=1" in query)).encode()
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload)
            )
        elif method == b"POST":
            self.counts.hook(self._msg_id.decode("latin-1"), self._size, self._at)
            self.transport.write(_OK)
        else:
            self.transport.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
        if not self.parser.should_keep_alive():
            self.transport.close()


def receiver_main(raw: str) -> None:
    """Child: an HTTPS server answering 200 at once; prints ``PORT <n>``, serves until SIGTERM.

    ``GET /_stats`` returns the counts (and, with ``?arrivals=1``, the first arrival time of each
    webhook-id); ``POST /_reset`` forgets everything. ``kind`` ``lean`` serves with an
    ``httptools`` protocol, ``aiohttp`` with an aiohttp web application."""
    exit_when_parent_goes()
    cfg = json.loads(raw)
    counts = _Counts()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cfg["cert"], cfg["key"])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)

    async def serve_lean() -> Callable[[], Awaitable[None]]:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _LeanReceiver(counts), sock=sock, ssl=context
        )

        async def stop() -> None:
            server.close()

        return stop

    async def serve_aiohttp() -> Callable[[], Awaitable[None]]:
        from aiohttp import web

        async def hook(request: web.Request) -> web.Response:
            at = time.time()
            body = await request.read()
            counts.hook(request.headers.get("webhook-id", ""), len(body), at)
            return web.Response(text="ok")

        async def stats(request: web.Request) -> web.Response:
            return web.json_response(counts.stats(bool(request.query.get("arrivals"))))

        async def reset(_request: web.Request) -> web.Response:
            counts.reset()
            return web.Response(text="ok")

        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_get("/_stats", stats)
        app.router.add_post("/_reset", reset)
        app.router.add_post("/{tail:.*}", hook)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        await web.SockSite(runner, sock, ssl_context=context).start()
        return runner.cleanup

    async def serve() -> None:
        stop_serving = await (serve_lean() if cfg["kind"] == "lean" else serve_aiohttp())
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(f"PORT {sock.getsockname()[1]}", flush=True)
        await stop.wait()
        await stop_serving()

    _run_loop(serve(), fast=True)


class ReceiverControl:
    """The parent's view of the receiver process: its URL, counts and arrivals."""

    def __init__(self, base: str, ssl_context: ssl.SSLContext) -> None:
        self.base = base
        self.url = f"{base}/hook"
        self._ssl = ssl_context

    async def _call(self, method: str, path: str) -> Any:
        import aiohttp

        async with (
            aiohttp.ClientSession() as session,
            session.request(method, f"{self.base}{path}", ssl=self._ssl) as resp,
        ):
            resp.raise_for_status()
            return await (resp.json() if path.startswith("/_stats") else resp.text())

    async def reset(self) -> None:
        await self._call("POST", "/_reset")

    async def stats(self, arrivals: bool = False) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "GET", "/_stats?arrivals=1" if arrivals else "/_stats"
        )
        return result


# --- emitting events ---------------------------------------------------------------------------


def _event_data(n: int) -> dict[str, Any]:
    from maintlink.domain.event_types import EXAMPLES

    data = dict(EXAMPLES[EVENT_TYPE])
    data["sync_id"] = f"sync_bench{n:010d}"
    return data


async def emit_burst(rt: Any, account_id: str, count: int, batch: int) -> dict[str, Any]:
    """``count`` events as fast as possible, ``batch`` per transaction."""
    from maintlink.domain.events import emit

    first = last = 0.0
    done = 0
    while done < count:
        size = min(batch, count - done)
        async with rt.engine.begin() as conn:
            for i in range(done, done + size):
                await emit(
                    conn,
                    account_id=account_id,
                    type=EVENT_TYPE,
                    data=_event_data(i),
                    customer_id="cus_bench",
                )
        last = time.time()
        first = first or last
        done += size
    return {"events": done, "first_commit": first, "last_commit": last}


async def emit_steady(rt: Any, account_id: str, rate: float, duration: float) -> dict[str, Any]:
    """``rate`` events per second for ``duration`` s on a fixed schedule, one per transaction,
    each started on time even if earlier ones are still committing (as concurrent API requests
    would); the commit time of each (time.time() right after its commit)."""
    from maintlink.domain.events import emit

    count = max(1, int(rate * duration))
    commits: dict[str, float] = {}
    late = 0.0
    slots = asyncio.Semaphore(4)  # at most this many emitting transactions at once

    async def one(i: int) -> None:
        async with slots:
            async with rt.engine.begin() as conn:
                event_id = await emit(
                    conn,
                    account_id=account_id,
                    type=EVENT_TYPE,
                    data=_event_data(i),
                    customer_id="cus_bench",
                )
            commits[event_id] = time.time()

    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter() + 0.05
    for i in range(count):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            late = max(late, -delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return {
        "events": count,
        "commits": commits,
        "seconds": time.perf_counter() - start,
        "max_behind": late,
    }


async def run_emit(rt: Any, account_id: str, plan: dict[str, Any]) -> dict[str, Any]:
    if plan["mode"] == "burst":
        return await emit_burst(rt, account_id, plan["events"], plan["batch"])
    return await emit_steady(rt, account_id, plan["rate"], plan["duration"])


def emitter_main(raw: str) -> None:
    """Child: a runtime on the store; prints READY, emits on ``go`` (stdin), prints RESULT."""
    exit_when_parent_goes()
    cfg = json.loads(raw)

    async def main() -> None:
        from sqlalchemy import text

        from maintlink.runtime import build_runtime

        rt = build_runtime(
            settings_for(cfg["database_url"], Path(cfg["data_dir"]), cfg["secret_key"])
        )
        try:
            async with rt.engine.connect() as conn:  # connect before the clock starts
                await conn.execute(text("SELECT 1"))
            _event_data(0)
            print("READY", flush=True)
            await asyncio.to_thread(sys.stdin.readline)
            cpu = time.process_time()
            result = await run_emit(rt, cfg["account_id"], cfg["plan"])
            result["cpu"] = time.process_time() - cpu
            print("RESULT " + json.dumps(result), flush=True)
        finally:
            await rt.aclose()

    _run_loop(main())


class Emitter:
    """Emits a plan in a child process (``process``) or as a task of this loop (``inline``)."""

    def __init__(
        self, mode: str, children: Children, ctx: StoreContext, plan: dict[str, Any]
    ) -> None:
        self.mode = mode
        self.children = children
        self.ctx = ctx
        self.plan = plan
        self._proc: subprocess.Popen[bytes] | None = None
        self._task: asyncio.Task[dict[str, Any]] | None = None
        self._done = False

    async def prepare(self) -> None:
        if self.mode != "process":
            return
        cfg = {
            "database_url": self.ctx.database_url,
            "data_dir": str(self.ctx.workdir),
            "secret_key": self.ctx.secret_key,
            "account_id": self.ctx.account_id,
            "plan": self.plan,
        }
        self._proc = self.children.start("--_emitter", json.dumps(cfg))
        await asyncio.to_thread(_read_line, self._proc, "READY")

    def go(self) -> None:
        if self._proc is not None:
            assert self._proc.stdin is not None
            self._proc.stdin.write(b"go\n")
            self._proc.stdin.flush()
        else:
            self._task = asyncio.create_task(
                run_emit(self.ctx.rt, self.ctx.account_id, self.plan), name="emitter"
            )

    def failed(self) -> bool:
        if self._done:
            return False
        if self._proc is not None:
            return self._proc.poll() not in (None, 0)
        return self._task is not None and self._task.done() and self._task.exception() is not None

    async def result(self) -> dict[str, Any]:
        if self._proc is not None:
            line = await asyncio.to_thread(_read_line, self._proc, "RESULT ")
            self._done = True
            self.children.stop(self._proc)
            return json.loads(line)  # type: ignore[no-any-return]
        assert self._task is not None
        result = await self._task
        self._done = True
        return result

    async def cancel(self) -> None:
        if self._proc is not None:
            self.children.stop(self._proc)
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task


# --- the store ---------------------------------------------------------------------------------


def settings_for(database_url: str, workdir: Path, secret_key: str, **extra: Any) -> Any:
    from maintlink.config import Settings

    return Settings(
        data_dir=workdir,
        database_url=database_url,
        secret_key=secret_key,
        environment="production",
        sandbox_enabled=False,
        **extra,
    )



async def fresh_store(store: str, workdir: Path) -> str:
    from maintlink.store.db import create_engine, migrate

    if store == "sqlite":
        url = f"sqlite+aiosqlite:///{workdir / 'webhooks.db'}"
    else:
        await pg_admin(PG_ADMIN_URL,
            f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)',
            f'CREATE DATABASE "{PG_DATABASE}"',
        )
        url = (
            "postgresql+asyncpg://"
            + PG_ADMIN_URL.split("://", 1)[1].rsplit("/", 1)[0]
            + "/"
            + PG_DATABASE
        )
    engine = create_engine(url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()
    return url


async def drop_store(store: str) -> None:
    if store == "postgresql":
        with contextlib.suppress(Exception):
            await pg_admin(PG_ADMIN_URL, f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')


@dataclass
class SqlCounter:
    """Round trips of an engine: statements, transactions and pool checkouts."""

    statements: int = 0
    transactions: int = 0
    checkouts: int = 0

    def attach(self, engine: Any) -> SqlCounter:
        from sqlalchemy import event

        def statement(*_: Any) -> None:
            self.statements += 1

        def begin(*_: Any) -> None:
            self.transactions += 1

        def checkout(*_: Any) -> None:
            self.checkouts += 1

        event.listen(engine.sync_engine, "before_cursor_execute", statement)
        event.listen(engine.sync_engine, "begin", begin)
        event.listen(engine.sync_engine.pool, "checkout", checkout)
        return self

    def snapshot(self) -> tuple[int, int, int]:
        return self.statements, self.transactions, self.checkouts


def sql_used(
    ctx: StoreContext, before: tuple[int, int, int], workers: list[Any]
) -> tuple[int, ...]:
    """Statements, transactions and checkouts since ``before``: the engine's, plus the
    statements the workers sent on their own asyncpg connections (PostgreSQL), each of which
    is a transaction of its own and needs no checkout."""
    direct = sum(getattr(w, "direct_statements", 0) for w in workers)
    engine = [b - a for a, b in zip(before, ctx.sql.snapshot(), strict=True)]
    return engine[0] + direct, engine[1] + direct, engine[2]


@dataclass
class StoreContext:
    store: str
    database_url: str
    workdir: Path
    secret_key: str
    rt: Any
    account_id: str
    endpoint_id: str
    sql: SqlCounter = field(default_factory=SqlCounter)


async def clear_outbox(rt: Any) -> None:
    """Empty events, deliveries and attempts between phases."""
    from sqlalchemy import text

    async with rt.engine.begin() as conn:
        if rt.dialect == "postgresql":
            await conn.execute(text("TRUNCATE attempts, deliveries, events"))
        else:
            for table in ("attempts", "deliveries", "events"):
                await conn.execute(text(f"DELETE FROM {table}"))
    if rt.dialect == "postgresql":
        async with rt.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("ANALYZE attempts, deliveries, events"))


async def store_check(rt: Any) -> dict[str, Any]:
    """Delivery statuses and the attempt log, straight from the store."""
    from sqlalchemy import distinct, func, select

    from maintlink.store.tables import attempts, deliveries

    async with rt.engine.connect() as conn:
        statuses = {
            row[0]: int(row[1])
            for row in await conn.execute(
                select(deliveries.c.status, func.count()).group_by(deliveries.c.status)
            )
        }
        count, ok, distinct_deliveries, highest = (
            await conn.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(attempts.c.success), 0),
                    func.count(distinct(attempts.c.delivery_id)),
                    func.coalesce(func.max(attempts.c.attempt_number), 0),
                )
            )
        ).one()
    return {
        "statuses": statuses,
        "attempts": int(count),
        "successful_attempts": int(ok),
        "attempted_deliveries": int(distinct_deliveries),
        "max_attempt_number": int(highest),
    }


def check_passed(check: dict[str, Any], expected: int) -> bool:
    return (
        check["statuses"] == {"succeeded": expected}
        and check["attempts"] == expected
        and check["successful_attempts"] == expected
        and check["attempted_deliveries"] == expected
        and check["max_attempt_number"] == 1
        and check["received"] == expected
        and check["duplicates"] == 0
    )


# --- the HTTP ceiling --------------------------------------------------------------------------


def ceiling_request(i: int) -> dict[str, str]:
    """The headers the worker sends, with a fixed signature (no signing here)."""
    return {
        "webhook-id": f"msg_ceiling_{i:08d}",
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=",
        "Maintlink-Version": "v1",
        "Content-Type": "application/json",
        "User-Agent": "maintlink-webhooks/0.1",
    }


async def _post_loop(
    total: int, concurrency: int, post: Callable[[int], Awaitable[int]]
) -> None:
    """``total`` POSTs, ``concurrency`` in flight."""
    counter = iter(range(total))
    failures = 0

    async def loop() -> None:
        nonlocal failures
        for i in counter:
            if not 200 <= await post(i) < 300:
                failures += 1

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    if failures:
        raise RuntimeError(f"{failures} ceiling requests failed")


class _Timed:
    """Wall and CPU time of this process from entry to exit: requests per second and CPU
    seconds per request for ``total`` requests."""

    def __init__(self, total: int) -> None:
        self.total = total

    def __enter__(self) -> _Timed:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.rate = self.total / (time.perf_counter() - self._wall)
        self.cpu = (time.process_time() - self._cpu) / self.total


async def ceiling_aiohttp(
    settings: Any, url: str, body: bytes, total: int, concurrency: int
) -> tuple[float, float]:
    """The worker's own session set-up (``DeliveryWorker._session_for_delivery``), timed from
    a cold start as the worker is: TLS context, session and connections included."""
    import aiohttp

    from maintlink.webhooks import urls

    with _Timed(total) as timed:
        connector = urls.make_connector(
            allowed_networks=urls.parse_allowed_networks(settings.webhook_allowed_networks),
            ssl_context=urls.make_ssl_context(settings.webhook_ca_bundle),
            limit=settings.webhook_worker_concurrency,
            limit_per_host=settings.webhook_endpoint_concurrency,
        )
        timeout = aiohttp.ClientTimeout(total=settings.webhook_timeout_seconds)
        async with aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False
        ) as session:

            async def post(i: int) -> int:
                async with session.post(
                    url,
                    data=body,
                    headers=ceiling_request(i),
                    allow_redirects=False,
                    timeout=timeout,
                ) as resp:
                    await resp.read()
                    return resp.status

            await _post_loop(total, concurrency, post)
    return timed.rate, timed.cpu


async def ceiling_httpx(
    settings: Any, url: str, body: bytes, total: int, concurrency: int
) -> tuple[float, float]:
    import httpx

    from maintlink.webhooks import urls

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with _Timed(total) as timed:
        async with httpx.AsyncClient(
            verify=urls.make_ssl_context(settings.webhook_ca_bundle),
            limits=limits,
            trust_env=False,
            follow_redirects=False,
            timeout=settings.webhook_timeout_seconds,
        ) as client:

            async def post(i: int) -> int:
                resp = await client.post(url, content=body, headers=ceiling_request(i))
                return resp.status_code

            await _post_loop(total, concurrency, post)
    return timed.rate, timed.cpu


# --- the phases --------------------------------------------------------------------------------


async def running(worker: Any) -> asyncio.Task[None]:
    """Start ``worker.run()`` and wait until its wake-ups are armed."""
    task = asyncio.create_task(worker.run(), name=f"worker:{worker.worker_id}")
    async with asyncio.timeout(15):
        while not worker.ready.is_set():
            if task.done():
                task.result()
            await asyncio.sleep(0.005)
    return task


async def stop_workers(workers: list[Any], tasks: list[asyncio.Task[None]]) -> None:
    for worker in workers:
        worker.stop()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(20):
            await asyncio.gather(*tasks, return_exceptions=True)


async def wait_recorded(
    workers: list[Any], expected: int, emitter: Emitter, deadline: float | None = None
) -> float | None:
    """time.time() when the workers have recorded ``expected`` attempts in all; None if
    ``deadline`` (time.monotonic()) passed first."""
    seen, last_progress = 0, time.monotonic()
    while True:
        done = sum(w.attempted for w in workers)
        if done >= expected:
            return time.time()
        if deadline is not None and time.monotonic() > deadline:
            return None
        if done != seen:
            seen, last_progress = done, time.monotonic()
        elif time.monotonic() - last_progress > STALL_SECONDS:
            raise RuntimeError(f"stalled at {done} of {expected} recorded attempts")
        if emitter.failed():
            raise RuntimeError("the emitter failed")
        await asyncio.sleep(0.002)


async def saturation(
    ctx: StoreContext,
    children: Children,
    receiver: ReceiverControl,
    args: argparse.Namespace,
    n_workers: int,
    emit_mode: str,
    backlog: bool = False,
) -> dict[str, Any]:
    """Deliveries per second while the events are being emitted, from the first commit to the
    last recorded delivery; with ``backlog``, of a backlog emitted before the workers start,
    from their start (the worker alone, whatever the emitter's speed)."""
    from maintlink.webhooks.delivery import DeliveryWorker

    await clear_outbox(ctx.rt)
    await receiver.reset()
    expected = args.events  # one endpoint: one delivery per event
    emitter = Emitter(
        emit_mode, children, ctx, {"mode": "burst", "events": args.events, "batch": args.emit_batch}
    )
    await emitter.prepare()
    workers = [DeliveryWorker(ctx.rt, f"bench-{n_workers}-{i}") for i in range(n_workers)]
    tasks: list[asyncio.Task[None]] = []
    try:
        if backlog:
            emitter.go()
            emitted = await emitter.result()
            cpu, sql = time.process_time(), ctx.sql.snapshot()
            started = time.time()
            tasks = [asyncio.create_task(w.run()) for w in workers]
        else:
            tasks = [await running(w) for w in workers]
            cpu, sql = time.process_time(), ctx.sql.snapshot()
            emitter.go()
        finished = await wait_recorded(workers, expected, emitter)
        assert finished is not None
        cpu = time.process_time() - cpu
        sql = sql_used(ctx, sql, workers)
        if not backlog:
            emitted = await emitter.result()
            started = emitted["first_commit"]
    finally:
        await emitter.cancel()
        await stop_workers(workers, tasks)
    check = await store_check(ctx.rt)
    stats = await receiver.stats()
    check.update(received=stats["requests"], duplicates=stats["duplicates"])
    seconds = finished - started
    return {
        "workers": n_workers,
        "deliveries": expected,
        "seconds": seconds,
        "rate": expected / seconds,
        "emit_seconds": emitted["last_commit"] - emitted["first_commit"],
        "tail_seconds": finished - emitted["last_commit"],
        "check": check,
        "ok": check_passed(check, expected),
        "cpu_ms": cpu / expected * 1000,
        "sql_per_delivery": [n / expected for n in sql],
        "emitter_cpu_ms": emitted.get("cpu", 0.0) / expected * 1000,
    }


def emitter_rate(result: dict[str, Any]) -> float:
    """Events per second the emitter committed in a saturation run."""
    return float(result["deliveries"]) / max(float(result["emit_seconds"]), 1e-9)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile of sorted ``values``."""
    if not values:
        return float("nan")
    rank = max(1, min(len(values), int(-(-p * len(values) // 100))))
    return values[rank - 1]


async def latency(
    ctx: StoreContext,
    children: Children,
    receiver: ReceiverControl,
    args: argparse.Namespace,
    emit_mode: str,
) -> dict[str, Any]:
    """Commit -> receipt latency at a steady rate. Deliveries that have not arrived
    ``args.latency_grace`` s after the last commit count as infinitely late."""
    from maintlink.webhooks.delivery import DeliveryWorker

    await clear_outbox(ctx.rt)
    await receiver.reset()
    emitter = Emitter(
        emit_mode, children, ctx, {"mode": "steady", "rate": args.rate, "duration": args.duration}
    )
    await emitter.prepare()
    worker = DeliveryWorker(ctx.rt, "bench-latency")
    task = await running(worker)
    try:
        cpu, sql = time.process_time(), ctx.sql.snapshot()
        emitter.go()
        emitted = await emitter.result()
        done = await wait_recorded(
            [worker], emitted["events"], emitter, time.monotonic() + args.latency_grace
        )
        cpu = time.process_time() - cpu
        sql = sql_used(ctx, sql, [worker])
        recorded = worker.attempted
    finally:
        await emitter.cancel()
        await stop_workers([worker], [task])
    stats = await receiver.stats(arrivals=True)
    arrivals: dict[str, float] = stats["arrivals"]
    commits: dict[str, float] = emitted["commits"]
    lat = sorted((arrivals[e] - c) * 1000 for e, c in commits.items() if e in arrivals)
    missing = len(commits) - len(lat)
    lat += [float("inf")] * missing
    check = await store_check(ctx.rt)
    check.update(received=stats["requests"], duplicates=stats["duplicates"])
    return {
        "events": emitted["events"],
        "seconds": emitted["seconds"],
        "achieved_rate": emitted["events"] / emitted["seconds"],
        "max_behind_ms": emitted["max_behind"] * 1000,
        "missing": missing,
        "p50": percentile(lat, 50),
        "p90": percentile(lat, 90),
        "p99": percentile(lat, 99),
        "max": lat[-1] if lat else float("nan"),
        "min": lat[0] if lat else float("nan"),
        "check": check,
        "ok": done is not None and check_passed(check, emitted["events"]),
        "cpu_ms": cpu / max(1, recorded) * 1000,
        "sql_per_delivery": [n / max(1, recorded) for n in sql],
    }


async def run_store(
    store: str,
    children: Children,
    receiver: ReceiverControl,
    args: argparse.Namespace,
    workdir: Path,
    ca_file: str,
    body: bytes,
) -> dict[str, Any]:
    from maintlink.crypto import generate_key
    from maintlink.domain.accounts import create_admin_key
    from maintlink.domain.endpoints import create_endpoint
    from maintlink.runtime import build_runtime

    emit_mode = (
        args.emitter
        if args.emitter != "auto"
        else ("process" if store == "postgresql" else "inline")
    )
    store_dir = workdir / store
    store_dir.mkdir()
    database_url = await fresh_store(store, store_dir)
    secret_key = generate_key()
    settings = settings_for(
        database_url,
        store_dir,
        secret_key,
        webhook_ca_bundle=ca_file,
        webhook_allowed_networks="127.0.0.0/8",
        webhook_endpoint_concurrency=args.concurrency,
    )
    rt = build_runtime(settings)
    out: dict[str, Any] = {
        "emitter": emit_mode,
        "load_before": os.getloadavg()[0],
        "wakeups": "NOTIFY" if store == "postgresql" else "in-process",
    }
    try:
        async with rt.engine.begin() as conn:
            account_id, _, _ = await create_admin_key(conn, "bench")
            endpoint, _ = await create_endpoint(conn, rt, account_id=account_id, url=receiver.url)
        ctx = StoreContext(
            store,
            database_url,
            store_dir,
            secret_key,
            rt,
            account_id,
            endpoint.id,
            SqlCounter().attach(rt.engine),
        )
        out["ceilings"] = []
        out["ceiling"] = out["ceiling_cpu_ms"] = 0.0

        async def ceiling() -> None:
            log(
                f"[{store}] ceiling: {args.events:,} bare aiohttp POSTs, "
                f"{args.concurrency} in flight ..."
            )
            await receiver.reset()
            rate, cpu = await ceiling_aiohttp(
                settings, receiver.url, body, args.events, args.concurrency
            )
            out["ceilings"].append(rate)
            if rate > out["ceiling"]:
                out["ceiling"], out["ceiling_cpu_ms"] = rate, cpu * 1000
            log(f"[{store}]   {rate:,.0f} requests/s")

        async def run(n: int, backlog: bool) -> dict[str, Any]:
            what = "a backlog emitted first" if backlog else "emitted meanwhile"
            log(
                f"[{store}] saturation: {args.events:,} events ({what}), {args.emit_batch} per "
                f"transaction ({emit_mode} emitter), {n} worker(s) ..."
            )
            result = await saturation(ctx, children, receiver, args, n, emit_mode, backlog)
            result["backlog"] = backlog
            # Within 10 % of the emitter's rate, the worker kept up with it: the emitter
            # was the bound, not the worker.
            bound = (
                f"; the emitter's {emitter_rate(result):,.0f} events/s bound it"
                if not backlog and result["rate"] >= 0.9 * emitter_rate(result)
                else ""
            )
            log(
                f"[{store}]   {result['rate']:,.0f} deliveries/s "
                f"(ratio {result['rate'] / out['ceiling']:.2f}{bound}), store check "
                f"{'ok' if result['ok'] else 'FAILED: ' + json.dumps(result['check'])}"
            )
            return result

        await ceiling()
        out["saturation"] = [await run(n, False) for n in args.workers]
        # The worker alone against the ceiling: both run --repeat times, alternated, and the
        # best of each counts, so that a burst of load from other processes does not decide
        # the ratio.
        drains = [await run(1, True)]
        for _ in range(args.repeat - 1):
            await ceiling()
            drains.append(await run(1, True))
        out["drains"] = [d["rate"] for d in drains]
        out["saturation"].append(max(drains, key=lambda d: float(d["rate"])))
        log(f"[{store}] latency: {args.rate:g} events/s for {args.duration:g} s ...")
        out["latency"] = lat = await latency(ctx, children, receiver, args, emit_mode)
        log(
            f"[{store}]   p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, max {lat['max']:.1f} ms"
        )
    finally:
        await rt.aclose()
        await drop_store(store)
    out["load_after"] = os.getloadavg()[0]
    return out


# --- signing (bench/signing.py) ----------------------------------------------------------------


def signing_throughput(seconds: float, repeat: int) -> dict[str, float]:
    spec = importlib.util.spec_from_file_location("bench_signing", BENCH_DIR / "signing.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from maintlink.webhooks.signing import generate_secret

    secret = generate_secret()
    body = mod.make_body(1024)
    timestamp = int(time.time())
    assert mod.ours(secret, body, timestamp)("msg_check") == mod.theirs(secret, body, timestamp)(
        "msg_check"
    )
    ops = {
        "maintlink": mod.ours(secret, body, timestamp),
        "standardwebhooks": mod.theirs(secret, body, timestamp),
    }
    return mod.best_alternating(ops, seconds, repeat)  # type: ignore[no-any-return]


# --- the report --------------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def report(
    results: dict[str, dict[str, Any]],
    signing: dict[str, float],
    clients: dict[str, float],
    args: argparse.Namespace,
    body_bytes: int,
) -> None:
    from rich.console import Console
    from rich.table import Table

    def verdict(good: bool) -> str:
        return "[green]yes[/green]" if good else "[red]NO[/red]"

    stores = list(results)
    names = {"postgresql": "PostgreSQL", "sqlite": "SQLite"}
    table = Table(
        title=f"maintlink webhook delivery: 1 endpoint, {args.concurrency} requests "
        f"in flight, {body_bytes} B bodies, HTTPS on loopback"
    )
    table.add_column("metric")
    for store in stores:
        table.add_column(names[store], justify="right")
    table.add_column("target (PostgreSQL)", justify="right")
    table.add_column("met", justify="center")

    def row(
        name: str,
        get: Callable[[dict[str, Any]], str],
        target: str = "",
        met: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        cells = [get(results[s]) for s in stores]
        pg = results.get("postgresql")
        table.add_row(name, *cells, target, verdict(met(pg)) if met and pg else "")

    row("emitter (wake-ups)", lambda r: f"{r['emitter']} ({r['wakeups']})")
    row(
        "load average (1 min) before -> after",
        lambda r: f"{r['load_before']:.1f} -> {r['load_after']:.1f}",
        f"< {os.cpu_count()} (idle box)",
        lambda r: max(r["load_before"], r["load_after"]) < (os.cpu_count() or 1),
    )
    row(
        f"HTTP ceiling (bare aiohttp loop), best of {args.repeat}",
        lambda r: (
            f"{r['ceiling']:,.0f} req/s (" + " / ".join(f"{c:,.0f}" for c in r["ceilings"]) + ")"
        ),
    )
    row("  CPU of this process per request", lambda r: f"{r['ceiling_cpu_ms']:.2f} ms")
    for i, first in enumerate(results[stores[0]]["saturation"]):

        def sat(r: dict[str, Any], i: int = i) -> dict[str, Any]:
            return r["saturation"][i]  # type: ignore[no-any-return]

        n, backlog = first["workers"], first["backlog"]
        label = f"{n} worker{'s' if n > 1 else ''}"
        # The target is on the worker alone: with events emitted meanwhile, the rate cannot
        # exceed the emitter's.
        main = n == 1 and backlog
        table.add_section()
        if backlog:
            row(
                f"backlog drain, {label}: {args.events:,} events, best of {args.repeat}",
                lambda r, s=sat: (
                    f"{s(r)['rate']:,.0f} deliveries/s ("
                    + " / ".join(f"{d:,.0f}" for d in r["drains"])
                    + ")"
                ),
            )
            row("  worker start -> last recorded", lambda r, s=sat: f"{s(r)['seconds']:.2f} s")
        else:
            row(
                f"saturation, {label}: {args.events:,} events",
                lambda r, s=sat: f"{s(r)['rate']:,.0f} deliveries/s",
            )
            row("  first commit -> last recorded", lambda r, s=sat: f"{s(r)['seconds']:.2f} s")
            row(
                "  emitting took / queue drained after",
                lambda r, s=sat: f"{s(r)['emit_seconds']:.2f} s / {s(r)['tail_seconds']:.2f} s",
            )
            row(
                "  the emitter's rate (the bound here)",
                lambda r, s=sat: f"{emitter_rate(s(r)):,.0f} events/s",
            )
        row(
            "  SQL per delivery: statements / txns / checkouts",
            lambda r, s=sat: (
                "{:.2f} / {:.2f} / {:.2f}".format(*s(r)["sql_per_delivery"])
                + (" (+emitter)" if r["emitter"] == "inline" and not s(r)["backlog"] else "")
            ),
        )
        row(
            "  CPU per delivery: this process / emitter",
            lambda r, s=sat: (
                f"{s(r)['cpu_ms']:.2f} / "
                + (f"{s(r)['emitter_cpu_ms']:.2f} ms" if r["emitter"] == "process" else "(inline)")
            ),
        )
        row(
            f"  ratio to the ceiling ({label}, "
            + ("backlog)" if backlog else "while emitting)"),
            lambda r, s=sat: f"{s(r)['rate'] / r['ceiling']:.2f}",
            f">= {TARGET_RATIO}" if main else "",
            (lambda r, s=sat: s(r)["rate"] / r["ceiling"] >= TARGET_RATIO) if main else None,
        )
        row(
            "  store: succeeded / attempts / received",
            lambda r, s=sat: (
                f"{s(r)['check']['statuses'].get('succeeded', 0):,} / "
                f"{s(r)['check']['attempts']:,} / {s(r)['check']['received']:,}"
            ),
            "all, once each",
            lambda r, s=sat: bool(s(r)["ok"]),
        )
    table.add_section()
    row(
        f"latency: {args.rate:g} events/s for {args.duration:g} s",
        lambda r: f"{r['latency']['events']:,} events ({r['latency']['achieved_rate']:.0f}/s)",
    )

    def ms(value: float) -> str:
        return f"> {args.latency_grace:g} s late" if value == float("inf") else f"{value:,.1f} ms"

    row(
        "  commit -> receipt p50",
        lambda r: ms(r["latency"]["p50"]),
        f"<= {TARGET_P50_MS:g} ms",
        lambda r: r["latency"]["p50"] <= TARGET_P50_MS,
    )
    row("  p90", lambda r: ms(r["latency"]["p90"]))
    row(
        "  p99",
        lambda r: ms(r["latency"]["p99"]),
        f"<= {TARGET_P99_MS:g} ms",
        lambda r: r["latency"]["p99"] <= TARGET_P99_MS,
    )
    row("  min / max", lambda r: f"{ms(r['latency']['min'])} / {ms(r['latency']['max'])}")
    row(
        "  SQL per delivery: statements / txns / checkouts",
        lambda r: (
            "{:.2f} / {:.2f} / {:.2f}".format(*r["latency"]["sql_per_delivery"])
            + (" (+emitter)" if r["emitter"] == "inline" else "")
        ),
    )
    row("  CPU per delivery: this process", lambda r: f"{r['latency']['cpu_ms']:.2f} ms")
    row(
        "  received; not delivered in time",
        lambda r: f"{r['latency']['check']['received']:,}; {r['latency']['missing']:,}",
        "all, once each",
        lambda r: bool(r["latency"]["ok"]) and r["latency"]["missing"] == 0,
    )

    other = Table(title="signing and HTTP client (store-independent)")
    other.add_column("metric")
    other.add_column("maintlink / aiohttp", justify="right")
    other.add_column("standardwebhooks / httpx", justify="right")
    other.add_column("ratio", justify="right")
    other.add_row(
        "sign + verify, 1 KiB body, one secret",
        f"{signing['maintlink']:,.0f} ops/s",
        f"{signing['standardwebhooks']:,.0f} ops/s",
        f"{signing['maintlink'] / signing['standardwebhooks']:.2f}x",
    )
    other.add_row(
        f"ceiling POST loop, {args.concurrency} in flight, {args.events:,} requests",
        f"{clients['aiohttp']:,.0f} req/s",
        f"{clients['httpx']:,.0f} req/s",
        f"{clients['aiohttp'] / clients['httpx']:.2f}x",
    )
    other.add_row(
        "  CPU of this process per request",
        f"{clients['aiohttp_cpu_ms']:.2f} ms",
        f"{clients['httpx_cpu_ms']:.2f} ms",
        f"{clients['httpx_cpu_ms'] / clients['aiohttp_cpu_ms']:.2f}x less",
    )

    receiver_kind = (
        "an httptools protocol" if args.receiver == "lean" else "an aiohttp web application"
    )
    loop_name = type(asyncio.get_running_loop()).__module__.split(".")[0]
    loop_name = "uvloop" if loop_name == "uvloop" else "asyncio's own loop"
    console = Console()
    console.width = max(console.width, 132)  # piped output: rich assumes 80 columns
    console.print(table)
    console.print(other)
    console.print(
        "Saturation: deliveries/s from the first emitting commit until the last delivery's "
        f"attempt transaction committed ({args.emit_batch} events per emitting transaction); "
        "backlog drain: the same events emitted before the worker starts, timed from its "
        "start (the worker alone; the ratio target applies to it). The drain and the ceiling "
        f"each run {args.repeat} time{'s' if args.repeat != 1 else ''}, alternated; the best "
        "of each counts. Ratio: "
        "deliveries/s over the "
        "ceiling's requests/s (same receiver, client, connection reuse and concurrency). "
        "SQL per delivery: statements, transactions and "
        "pool checkouts of the store's engine in this process, plus the statements the "
        "workers send on their own asyncpg connections on PostgreSQL (one transaction each, "
        "no checkout). CPU: time.process_time() of the process over "
        "the phase, per delivery; the store server's CPU is not included. Latency: "
        "time.time() after the emitting commit -> time.time() when the receiver starts "
        f"reading the request. The receiver is a separate process ({receiver_kind} on "
        "uvloop); the workers and the "
        f"ceiling loop run in this process on {loop_name}, as `maintlink worker` does "
        "(--loop). "
        f"{os.cpu_count()} CPUs; a load average above that means other processes competed."
    )


# --- main --------------------------------------------------------------------------------------


def make_body() -> bytes:
    """A body of the size the worker sends: a rendered ``sync.completed`` event."""
    from maintlink.domain.events import render
    from maintlink.store.types import utcnow

    row = {
        "id": "evt_01JD7Q6C7D8E9F0G1H2J3K4L5M",
        "type": EVENT_TYPE,
        "created_at": utcnow(),
        "connection_id": None,
        "customer_id": "cus_bench",
        "sequence": None,
        "data": json.loads(json.dumps(_event_data(0))),
    }
    return render(row, "v1").encode()


async def run_all(args: argparse.Namespace, children: Children, workdir: Path) -> None:
    import trustme

    from maintlink.webhooks import urls

    started = time.perf_counter()
    log("sign + verify: maintlink vs standardwebhooks ...")
    signing = signing_throughput(args.sign_seconds, 8)

    ca = trustme.CA()
    ca_file, cert_file, key_file = (str(workdir / n) for n in ("ca.pem", "cert.pem", "key.pem"))
    ca.cert_pem.write_to_path(ca_file)
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(key_file)
    with open(cert_file, "wb") as f:
        for blob in cert.cert_chain_pems:
            f.write(blob.bytes())
    proc = children.start(
        "--_receiver", json.dumps({"cert": cert_file, "key": key_file, "kind": args.receiver})
    )
    port = int(await asyncio.to_thread(_read_line, proc, "PORT "))
    receiver = ReceiverControl(f"https://127.0.0.1:{port}", urls.make_ssl_context(ca_file))
    body = make_body()

    from maintlink.config import Settings

    client_settings = Settings(
        webhook_ca_bundle=ca_file,
        webhook_allowed_networks="127.0.0.0/8",
        webhook_endpoint_concurrency=args.concurrency,
    )
    log(f"HTTP clients: aiohttp vs httpx, {args.concurrency} in flight ...")
    clients: dict[str, float] = {"aiohttp": 0.0, "httpx": 0.0}
    for _ in range(2):  # alternate, best of two each
        for name, fn in (("aiohttp", ceiling_aiohttp), ("httpx", ceiling_httpx)):
            await receiver.reset()
            rate, cpu = await fn(client_settings, receiver.url, body, args.events, args.concurrency)
            if rate > clients[name]:
                clients[name], clients[f"{name}_cpu_ms"] = rate, cpu * 1000
    log(f"  aiohttp {clients['aiohttp']:,.0f} req/s, httpx {clients['httpx']:,.0f} req/s")

    results: dict[str, dict[str, Any]] = {}
    for store in args.stores:
        results[store] = await run_store(store, children, receiver, args, workdir, ca_file, body)
    report(results, signing, clients, args, len(body))
    print(f"total {time.perf_counter() - started:,.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=("postgresql", "sqlite", "both"), default="both")
    parser.add_argument(
        "--events",
        type=int,
        default=10000,
        help="events for the saturation run (and ceiling requests)",
    )
    parser.add_argument(
        "--emit-batch",
        type=int,
        default=10,
        help="events per emitting transaction in the saturation run",
    )
    parser.add_argument(
        "--rate", type=float, default=200.0, help="events per second in the latency run"
    )
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of the latency run")
    parser.add_argument(
        "--latency-grace",
        type=float,
        default=20.0,
        help="seconds after the last commit of the latency run to wait for "
        "deliveries; later ones count as infinitely late",
    )
    parser.add_argument(
        "--workers", default="1", help="comma-separated worker counts for saturation runs, e.g. 1,2"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=8,
        help="webhook_endpoint_concurrency, and the ceiling's requests in flight",
    )
    parser.add_argument(
        "--emitter",
        choices=("auto", "process", "inline"),
        default="auto",
        help="auto: a separate process on PostgreSQL, inline on SQLite",
    )
    parser.add_argument(
        "--sign-seconds", type=float, default=0.2,
        help="length of one signing run (best of 8 per side, alternating)"
    )
    parser.add_argument(
        "--loop", choices=("uvloop", "asyncio"), default="uvloop",
        help="event loop of the workers and the ceiling loop: uvloop (as `maintlink worker` "
        "runs when uvloop is installed) or asyncio's own",
    )
    parser.add_argument(
        "--repeat", type=int, default=3,
        help="backlog drains, each after a ceiling measurement; the best of each counts",
    )
    parser.add_argument(
        "--receiver", choices=("lean", "aiohttp"), default="lean",
        help="the receiver process: an httptools protocol (lean, the default) or an aiohttp "
        "web application; both on uvloop",
    )
    parser.add_argument("--_receiver", help=argparse.SUPPRESS)
    parser.add_argument("--_emitter", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args._receiver is not None:
        receiver_main(args._receiver)
        return
    if args._emitter is not None:
        emitter_main(args._emitter)
        return
    args.stores = ["postgresql", "sqlite"] if args.store == "both" else [args.store]
    args.workers = [int(n) for n in args.workers.split(",") if n.strip()]

    # A plain `kill` cleans up like Ctrl-C does (children also get SIGTERM if this one dies).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in background
    children = Children(__file__)
    workdir = Path(tempfile.mkdtemp(prefix="maintlink-bench-webhooks-"))
    try:
        _run_loop(run_all(args, children, workdir), fast=args.loop == "uvloop")
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        sys.exit(130)
    finally:
        children.stop_all()
        if "postgresql" in args.stores:
            asyncio.run(drop_store("postgresql"))
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
