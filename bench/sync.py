"""Initial-sync throughput, memory flatness and the cost of a no-change incremental sync.

    .venv/bin/python bench/sync.py [--records 100000] [--big 400000]
                                   [--store postgresql|sqlite] [--page-size N]

For each size (``--records``, then ``--big``):

* the sandbox simulator runs in its own process, sized (in work orders, the other entities
  scale with it) so that all entities together hold at least that many records;
* a fresh store (PostgreSQL database ``maintlink_bench_sync`` dropped and created, or a new
  SQLite file) and a fresh worker process, in which maintlink runs one initial sync
  (``claim_due`` + ``SyncRun.run``) of a connection created through the domain; the RSS of
  that process is sampled from /proc/self/statm every 5 ms during the sync;
* right after it, an incremental sync with no change at the source: its duration, the HTTP
  requests it sends (counted by an event hook on ``rt.http``) and the records it writes;
* the baseline: the same pages from the same simulator, with the same httpx client and page
  size, written by a plain loop of batched INSERTs into a bare table of the same store.

A summary table compares the figures with the targets: sync/plain >= 0.5, peak RSS at
``--big`` less than 50 MB above the peak at ``--records``, no record written by the
incremental sync. Processes and the database are cleaned up, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _children import Children, exit_when_parent_goes, pg_admin
from maintlink.sandbox import data as sandbox_data

PG_ADMIN_URL = os.environ.get(
    "MAINTLINK_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
PG_DATABASE = "maintlink_bench_sync"
SEED = 42
HISTORY_DAYS = 3650
RSS_SAMPLE_SECONDS = 0.005
TARGET_RATIO = 0.5
TARGET_GROWTH_MB = 50.0
MB = 1024 * 1024


# --- the sandbox, in its own process ---------------------------------------------------------


def size_for(records: int) -> int:
    """The smallest sandbox size (work orders) whose entities add up to `records`."""
    size = max(0, int(records / 2.45) - 50)
    while sum(sandbox_data.entity_counts(size).values()) < records:
        size += 1
    return size



def sandbox_main(size: int) -> None:
    """Child: generate, serve on a free port, print {"port", "generate_seconds"}, serve on."""
    exit_when_parent_goes()
    from maintlink.sandbox.server import build_sandbox_server
    from maintlink.sandbox.state import DEMO_API_KEY, SandboxState

    started = time.perf_counter()
    state = SandboxState(seed=SEED, size=size, default_api_keys=(DEMO_API_KEY,))
    generate_seconds = time.perf_counter() - started
    # proto=TCP: asyncio sets TCP_NODELAY only on such sockets (see maintlink.sandbox.server).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    server = build_sandbox_server(state, "127.0.0.1", 0, handle_signals=False)

    async def serve() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the sandbox did not start")
            await asyncio.sleep(0.01)
        print(
            json.dumps({"port": sock.getsockname()[1], "generate_seconds": generate_seconds}),
            flush=True,
        )
        await task

    asyncio.run(serve())


# --- the maintlink side, in a worker process (one per size) ----------------------------------


class RssSampler:
    """Peak resident set size of this process, sampled from /proc/self/statm in a thread.

    `cpu` is the sampler's own CPU time, to take out of the process's.
    """

    PAGE = os.sysconf("SC_PAGE_SIZE")

    def __init__(self, interval: float = RSS_SAMPLE_SECONDS) -> None:
        self.interval = interval
        self._fd = os.open("/proc/self/statm", os.O_RDONLY)
        self.baseline = self.peak = self.current()
        self.cpu = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def current(self) -> int:
        return int(os.pread(self._fd, 128, 0).split()[1]) * self.PAGE

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.current())
        self.cpu = time.thread_time()

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())
        os.close(self._fd)


@dataclass
class Counters:
    """What the worker's HTTP client and engine did; `snapshot` and `-` give a phase's share."""

    requests: int = 0
    statements: int = 0
    bytes_in: int = 0
    # Send times of work-order pages while tracing: an array, so tracing costs ~8 bytes a page.
    trace: array[float] | None = None

    def snapshot(self) -> Counters:
        return Counters(self.requests, self.statements, self.bytes_in)

    def __sub__(self, other: Counters) -> Counters:
        return Counters(
            self.requests - other.requests,
            self.statements - other.statements,
            self.bytes_in - other.bytes_in,
        )


def page_cycle(times: array[float]) -> tuple[float, float]:
    """Median seconds between work-order page requests, over the first and the last tenth:
    equal when the cost of a page does not grow with the records already stored."""
    gaps = [b - a for a, b in itertools.pairwise(times)]
    if not gaps:
        return 0.0, 0.0
    tenth = max(1, len(gaps) // 10)
    return statistics.median(gaps[:tenth]), statistics.median(gaps[-tenth:])


async def report_progress(counters: Counters, page_size: int, expected: int) -> None:
    """Every 10 s: about how many records the running sync has fetched, and its rate."""
    start = last_time = time.perf_counter()
    first = last = counters.requests
    while True:
        await asyncio.sleep(10)
        now, pages = time.perf_counter(), counters.requests
        rate = (pages - last) * page_size / (now - last_time)
        print(
            f"    {now - start:5.0f} s: ~{(pages - first) * page_size:,} of {expected:,} "
            f"records, {rate:,.0f} rec/s over the last 10 s",
            file=sys.stderr,
            flush=True,
        )
        last_time, last = now, pages


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


async def plain_copy(
    rt: Any,
    api_url: str,
    api_key: str,
    entities: tuple[str, ...],
    page_size: int,
    since: datetime,
) -> int:
    """The baseline: each page fetched as the connector does, inserted as is."""
    from sqlalchemy import Column, Integer, MetaData, String, Table

    from maintlink.store.types import JSONType

    plain = Table(
        "bench_plain",
        MetaData(),
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("entity", String(32), nullable=False),
        Column("remote_id", String(200), nullable=False),
        Column("raw", JSONType, nullable=False),
    )
    async with rt.engine.begin() as conn:
        await conn.run_sync(plain.metadata.create_all)
    headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
    total = 0
    for entity in entities:
        url = f"{api_url}/{entity.replace('_', '-')}"
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": page_size}
            if cursor:
                params["cursor"] = cursor
            else:
                params["updated_since"] = _iso(since)
            response = await rt.http.get(
                url, params=params, headers=headers, timeout=rt.settings.provider_timeout_seconds
            )
            response.raise_for_status()
            body = response.json()
            rows = [{"entity": entity, "remote_id": str(r["id"]), "raw": r} for r in body["data"]]
            if rows:
                async with rt.engine.begin() as conn:
                    await conn.execute(plain.insert(), rows)
            total += len(rows)
            cursor = body.get("next_cursor")
            if not cursor:
                break
    return total


async def settle(rt: Any) -> None:
    """Flush the store's dirty pages, so a timed phase does not pay for the previous one."""
    from sqlalchemy import text

    statement = "CHECKPOINT" if rt.dialect == "postgresql" else "PRAGMA wal_checkpoint(TRUNCATE)"
    with contextlib.suppress(Exception):
        async with rt.engine.connect() as conn:
            await conn.execute(text(statement))
            await conn.commit()


async def worker(cfg: dict[str, Any]) -> dict[str, Any]:
    import logging

    import httpx
    from sqlalchemy import event, func, select

    from maintlink.config import Settings
    from maintlink.connectors.sandbox import DEFAULT_PAGE_SIZE, SandboxConnector
    from maintlink.crypto import generate_key
    from maintlink.domain.accounts import create_admin_key
    from maintlink.domain.connections import create_connection, validate_credentials
    from maintlink.domain.syncs import SyncRun, claim_due, request_sync
    from maintlink.runtime import build_runtime
    from maintlink.store.db import migrate
    from maintlink.store.tables import records, syncs

    logging.getLogger("maintlink").setLevel(logging.WARNING)
    settings = Settings(
        database_url=cfg["database_url"],
        data_dir=Path(cfg["data_dir"]),
        secret_key=generate_key(),
        sandbox_enabled=False,
        environment="production",
        log_level="warning",
    )
    rt = build_runtime(settings)
    counters = Counters()

    async def count_request(request: httpx.Request) -> None:
        counters.requests += 1
        if counters.trace is not None and request.url.path.endswith("/work-orders"):
            counters.trace.append(time.perf_counter())

    async def count_response(response: httpx.Response) -> None:
        counters.bytes_in += int(response.headers.get("content-length", 0))

    rt.http.event_hooks["request"].append(count_request)
    rt.http.event_hooks["response"].append(count_response)

    @event.listens_for(rt.engine.sync_engine, "before_cursor_execute")
    def count_statement(*_: Any) -> None:
        counters.statements += 1

    sandbox = cfg["sandbox_url"]
    page_size = cfg["page_size"] or DEFAULT_PAGE_SIZE
    out: dict[str, Any] = {}
    try:
        await migrate(rt.engine)
        async with rt.engine.begin() as conn:
            account_id, _, _ = await create_admin_key(conn, "bench")
        api_key = (await rt.http.post(f"{sandbox}/_sandbox/credentials")).json()["api_key"]
        credentials = {"base_url": sandbox, "api_key": api_key}
        conn_settings: dict[str, Any] = {"sync_interval_minutes": 15, "history_days": HISTORY_DAYS}
        if cfg["page_size"]:
            conn_settings["page_size"] = cfg["page_size"]
        info = await validate_credentials(rt, "sandbox", credentials, conn_settings)
        async with rt.engine.begin() as conn:
            row, _ = await create_connection(
                conn,
                rt,
                account_id=account_id,
                customer_external_id="bench",
                integration="sandbox",
                credentials=credentials,
                settings=conn_settings,
                account_info=info,
            )
        connection_id = row.id
        entities = SandboxConnector.entities
        # Warm the sandbox: its per-entity sort index is built on the first listing.
        for entity in entities:
            await rt.http.get(
                f"{sandbox}/api/v1/{entity.replace('_', '-')}",
                params={"limit": 1},
                headers={"Authorization": f"Bearer {api_key}"},
            )

        async def run_sync(kind: str) -> tuple[float, Any]:
            started = time.perf_counter()
            if await claim_due(rt, "bench", 1) != [connection_id]:
                raise RuntimeError("the connection was not due for a sync")
            sync_id = await SyncRun(rt, connection_id, "bench").run()
            seconds = time.perf_counter() - started
            async with rt.engine.connect() as conn:
                sync = (await conn.execute(select(syncs).where(syncs.c.id == sync_id))).one()
            if sync.status != "completed" or sync.kind != kind:
                raise RuntimeError(
                    f"{kind} sync ended {sync.status} ({sync.kind}): "
                    f"{sync.error_code} {sync.error_message}"
                )
            return seconds, sync

        # 1. The initial sync, RSS sampled.
        await settle(rt)
        gc.collect()
        before = counters.snapshot()
        print(f"  initial sync of {cfg['expected']:,} records ...", file=sys.stderr, flush=True)
        counters.trace = array("d")
        progress = asyncio.create_task(report_progress(counters, page_size, cfg["expected"]))
        cpu = time.process_time()
        try:
            with RssSampler() as rss:
                seconds, sync = await run_sync("initial")
        finally:
            progress.cancel()
        cpu = time.process_time() - cpu - rss.cpu
        trace, counters.trace = counters.trace or array("d"), None
        done = counters - before
        async with rt.engine.connect() as conn:
            stored = (
                await conn.execute(
                    select(func.count())
                    .select_from(records)
                    .where(records.c.connection_id == connection_id)
                )
            ).scalar_one()
        if stored != cfg["expected"]:
            raise RuntimeError(
                f"the sync stored {stored} records, the sandbox has {cfg['expected']}"
            )
        out["sync"] = {
            "seconds": seconds,
            "cpu": cpu,
            "records": stored,
            "requests": done.requests,
            "statements": done.statements,
            "page_cycle": page_cycle(trace),
            "rss_before": rss.baseline,
            "rss_peak": rss.peak,
            "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        }

        # 2. An incremental sync right after, nothing changed at the source.
        async with rt.engine.begin() as conn:
            await request_sync(conn, account_id, connection_id, rt.clock())
        before = counters.snapshot()
        mark = rt.clock()
        seconds, sync = await run_sync("incremental")
        done = counters - before
        async with rt.engine.connect() as conn:
            touched = (
                await conn.execute(
                    select(func.count())
                    .select_from(records)
                    .where(records.c.connection_id == connection_id, records.c.modified_at >= mark)
                )
            ).scalar_one()
        out["incremental"] = {
            "seconds": seconds,
            "requests": done.requests,
            "statements": done.statements,
            "bytes_in": done.bytes_in,
            "written": sum(sum(c.values()) for c in (sync.entities or {}).values()),
            "rows_modified": touched,
        }

        # 3. The baseline.
        print("  plain copy ...", file=sys.stderr, flush=True)
        await settle(rt)
        before = counters.snapshot()
        started, cpu = time.perf_counter(), time.process_time()
        copied = await plain_copy(
            rt,
            f"{sandbox}/api/v1",
            api_key,
            entities,
            page_size,
            rt.clock() - timedelta(days=HISTORY_DAYS),
        )
        done = counters - before
        out["plain"] = {
            "seconds": time.perf_counter() - started,
            "cpu": time.process_time() - cpu,
            "records": copied,
            "requests": done.requests,
            "statements": done.statements,
        }
        out["page_size"] = page_size
    finally:
        await rt.aclose()
    return out


def worker_main(raw: str) -> None:
    exit_when_parent_goes()
    result = asyncio.run(worker(json.loads(raw)))
    print("RESULT " + json.dumps(result), flush=True)


# --- stores ----------------------------------------------------------------------------------



def fresh_store(store: str, workdir: Path, label: str) -> str:
    if store == "sqlite":
        return f"sqlite+aiosqlite:///{workdir / f'{label}.db'}"
    asyncio.run(
        pg_admin(PG_ADMIN_URL,
            f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)',
            f'CREATE DATABASE "{PG_DATABASE}"',
        )
    )
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + PG_DATABASE


def drop_store(store: str) -> None:
    if store == "postgresql":
        with contextlib.suppress(Exception):
            drop = f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)'
            asyncio.run(pg_admin(PG_ADMIN_URL, drop))


# --- the orchestrator ------------------------------------------------------------------------



def _rss_of(pid: int) -> int:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/statm", "rb") as f:
        return int(f.read().split()[1]) * RssSampler.PAGE
    return 0


def run_size(
    children: Children, requested: int, store: str, workdir: Path, page_size: int | None, label: str
) -> dict[str, Any]:
    import httpx

    size = size_for(requested)
    print(
        f"[{label}] sandbox with {size:,} work orders (>= {requested:,} records) ...",
        file=sys.stderr,
        flush=True,
    )
    sandbox = children.start("--_sandbox", str(size))
    try:
        assert sandbox.stdout is not None
        line = sandbox.stdout.readline()
        if not line:
            raise RuntimeError("the sandbox process died during start-up")
        started = json.loads(line)
        url = f"http://127.0.0.1:{started['port']}"
        stats = httpx.get(f"{url}/_sandbox/stats", timeout=60).json()
        served = sum(v for k, v in stats.items() if k != "deleted")
        if served < requested:
            raise RuntimeError(f"the sandbox holds {served} records, fewer than {requested}")
        database_url = fresh_store(store, workdir, label)
        cfg = {
            "sandbox_url": url,
            "database_url": database_url,
            "expected": served,
            "page_size": page_size,
            "data_dir": str(workdir),
        }
        proc = children.start("--_worker", json.dumps(cfg))
        try:
            assert proc.stdout is not None
            output = proc.stdout.read().decode()
            if proc.wait() != 0:
                raise RuntimeError(f"the {label} worker failed (exit {proc.returncode})")
        finally:
            children.stop(proc)
        result: dict[str, Any] = json.loads(output.rsplit("RESULT ", 1)[1])
        result.update(
            size=size,
            served=served,
            generate_seconds=started["generate_seconds"],
            sandbox_rss=_rss_of(sandbox.pid),
        )
        return result
    finally:
        children.stop(sandbox)


def _mb(value: float) -> str:
    return f"{value / MB:,.1f} MB"


def report(results: dict[str, dict[str, Any]], store: str) -> None:
    from rich.console import Console
    from rich.table import Table

    def ok(good: bool) -> str:
        return "[green]yes[/green]" if good else "[red]NO[/red]"

    labels = list(results)
    table = Table(
        title=f"maintlink initial sync vs plain copy ({store}, "
        f"page size {results[labels[0]]['page_size']})"
    )
    table.add_column("metric")
    for label in labels:
        table.add_column(f"{label}: {results[label]['served']:,} records", justify="right")
    table.add_column("target", justify="right")
    table.add_column("met", justify="center")

    def row(
        name: str,
        get: Callable[[dict[str, Any]], str],
        target: str = "",
        met: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        cells = [get(results[label]) for label in labels]
        verdict = ok(all(met(results[label]) for label in labels)) if met else ""
        table.add_row(name, *cells, target, verdict)

    def rate(part: str) -> Callable[[dict[str, Any]], float]:
        return lambda r: float(r[part]["records"] / r[part]["seconds"])

    def cpu(part: str) -> Callable[[dict[str, Any]], str]:
        def cell(r: dict[str, Any]) -> str:
            seconds = r[part]["cpu"]
            return f"{seconds:,.1f} s ({1e6 * seconds / r[part]['records']:.0f} us/record)"

        return cell

    def ratio(r: dict[str, Any]) -> float:
        return rate("sync")(r) / rate("plain")(r)

    def growth(r: dict[str, Any]) -> int:
        return int(r["sync"]["rss_peak"] - r["sync"]["rss_before"])

    row("sandbox size (work orders)", lambda r: f"{r['size']:,}")
    row("initial sync: time", lambda r: f"{r['sync']['seconds']:,.1f} s")
    row("initial sync: records/s", lambda r: f"{rate('sync')(r):,.0f}")
    row("initial sync: HTTP requests", lambda r: f"{r['sync']['requests']:,}")
    row(
        "initial sync: SQL statements / page",
        lambda r: f"{r['sync']['statements'] / r['sync']['requests']:.1f}",
    )
    row(
        "ms per work-order page, first -> last 10%",
        lambda r: "{:.1f} -> {:.1f}".format(*(1000 * x for x in r["sync"]["page_cycle"])),
        "flat",
    )
    row("initial sync: CPU of the worker process", cpu("sync"))
    row("plain copy: time", lambda r: f"{r['plain']['seconds']:,.1f} s")
    row("plain copy: records/s", lambda r: f"{rate('plain')(r):,.0f}")
    row("plain copy: CPU of the worker process", cpu("plain"))
    row(
        "ratio sync / plain",
        lambda r: f"{ratio(r):.2f}",
        f">= {TARGET_RATIO}",
        lambda r: ratio(r) >= TARGET_RATIO,
    )
    row("sync process RSS before sync", lambda r: _mb(r["sync"]["rss_before"]))
    row("sync process peak RSS (statm)", lambda r: _mb(r["sync"]["rss_peak"]))
    row("sync process peak RSS (ru_maxrss)", lambda r: _mb(r["sync"]["ru_maxrss"]))
    row("RSS growth during the sync", lambda r: _mb(growth(r)))
    row("incremental (no change): time", lambda r: f"{r['incremental']['seconds']:.3f} s")
    row(
        "incremental: HTTP requests",
        lambda r: (
            f"{r['incremental']['requests']} ({r['incremental']['bytes_in'] / 1024:,.0f} KiB)"
        ),
        f"{len(results[labels[0]]['entities'])} (1 per entity)",
        lambda r: r["incremental"]["requests"] <= len(r["entities"]),
    )
    row(
        "incremental: records written",
        lambda r: (
            f"{r['incremental']['written']} (rows touched {r['incremental']['rows_modified']})"
        ),
        "0",
        lambda r: r["incremental"]["written"] == 0 and r["incremental"]["rows_modified"] == 0,
    )
    row("sandbox process RSS (not counted)", lambda r: _mb(r["sandbox_rss"]))
    if len(labels) == 2:
        small, big = (results[label] for label in labels)
        extra = big["sync"]["rss_peak"] - small["sync"]["rss_peak"]
        table.add_section()
        table.add_row(
            f"peak RSS {labels[1]} - peak RSS {labels[0]}",
            _mb(extra),
            "",
            f"< {TARGET_GROWTH_MB:.0f} MB",
            ok(extra < TARGET_GROWTH_MB * MB),
        )
    console = Console()
    console.width = max(console.width, 112)  # piped output: rich assumes 80 columns
    console.print(table)
    console.print(
        "RSS: resident set of the sync's worker process (a fresh process per size), "
        f"sampled from /proc/self/statm every {RSS_SAMPLE_SECONDS * 1000:.0f} ms; "
        "ru_maxrss is the kernel's high-water mark for the same process."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--records",
        type=int,
        default=100_000,
        help="records in the sandbox for the main run (default 100000)",
    )
    parser.add_argument(
        "--big",
        type=int,
        default=400_000,
        help="records for the memory-flatness run; 0 skips it (default 400000)",
    )
    parser.add_argument("--store", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument(
        "--page-size",
        type=int,
        default=None,
        help="connection setting page_size (default: the connector's)",
    )
    parser.add_argument("--_sandbox", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--_worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._sandbox is not None:
        sandbox_main(args._sandbox)
        return
    if args._worker is not None:
        worker_main(args._worker)
        return

    # A plain `kill` cleans up like Ctrl-C does (children also get SIGTERM if this one dies).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in background
    sizes = {"records": args.records}
    if args.big:
        sizes["big"] = args.big
    children = Children(__file__)
    workdir = Path(tempfile.mkdtemp(prefix="maintlink-bench-sync-"))
    results: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    from maintlink.connectors.sandbox import SandboxConnector

    try:
        for label, requested in sizes.items():
            result = run_size(children, requested, args.store, workdir, args.page_size, label)
            result["entities"] = list(SandboxConnector.entities)
            results[label] = result
            sync, plain = result["sync"], result["plain"]
            print(
                f"[{label}] sync {sync['records'] / sync['seconds']:,.0f} rec/s, plain "
                f"{plain['records'] / plain['seconds']:,.0f} rec/s, peak RSS "
                f"{_mb(sync['rss_peak'])}",
                file=sys.stderr,
                flush=True,
            )
    except KeyboardInterrupt:
        print("interrupted; cleaning up", file=sys.stderr)
        sys.exit(130)
    finally:
        children.stop_all()
        drop_store(args.store)
        shutil.rmtree(workdir, ignore_errors=True)
    report(results, args.store)
    print(f"total {time.perf_counter() - started:,.0f} s")


if __name__ == "__main__":
    main()
