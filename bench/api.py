"""API overhead: ``GET /api/v1/connections/{id}/status`` against a bare route on the same server.

    .venv/bin/python bench/api.py [--store sqlite|postgresql|both] [--duration 10]
                                  [--concurrency 32] [--rounds 3] [--warmup 3]

Set-up, per store (everything in its own process, nothing in this one but the orchestration):

* the sandbox system (``python -m maintlink sandbox --port P``);
* a fresh store: a new SQLite file, or the PostgreSQL database ``maintlink_bench`` dropped,
  created and migrated (``python -m maintlink migrate``);
* maintlink itself, ``python -m maintlink api --port P`` (uvicorn, one process), with a fresh
  ``MAINTLINK_SECRET_KEY``, ``MAINTLINK_ENVIRONMENT=production``, ``MAINTLINK_LOG_LEVEL=warning``
  and rate limits so high that the limiter counts every request but never refuses one;
* an admin key from ``python -m maintlink admin create-key`` and a real sandbox connection
  created with ``POST /api/v1/connections`` (its token is the second credential).

Measured routes: ``GET /healthz`` (bare: the same middleware and app, no auth, no store), the
status route with the admin key, and the status route with the connection token. The load
generator is a closed loop in a separate process (this script, re-run as ``_loadgen``): aiohttp
with ``--concurrency`` keep-alive connections, each running one request after another; uvloop
if installed. Each run warms its connections up for 1 s, then counts the requests completed in
``--duration`` seconds and their latencies. After a global warm-up of every route, runs go
bare, status (admin), status (token), ``--rounds`` times, and the table shows the median per
route, so that noise from other processes hits both sides alike. ``ratio`` = status rps / bare
rps, target at least 0.5. The CPU columns (100 % = one core) are sampled from /proc during the
measured window: the server process, the load generator, PostgreSQL backends of the benchmark
database, and the whole machine (to spot interference). Server CPU ms per request is the figure
least moved by other processes on the machine; on PostgreSQL the transactions per request come
from ``pg_stat_database``. Whether the server runs on uvloop and httptools is read from its
memory maps and printed.

PostgreSQL comes from ``MAINTLINK_BENCH_PG_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``); if it is unreachable that store is skipped.
The script exits 0 whatever the ratio (benchmarks print, tests assert). Child processes and the
database are cleaned up on exit, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
PG_ADMIN_URL = os.environ.get(
    "MAINTLINK_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
PG_DATABASE = "maintlink_bench"
TARGET_RATIO = 0.5
HUGE_LIMIT = "1000000000"  # requests per minute: counted, never refused
LOADGEN_WARMUP = 1.0  # seconds of each run that are not measured
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

BARE = "bare /healthz"
STATUS_ADMIN = "status, admin key"
STATUS_TOKEN = "status, conn. token"
ROUTES = (BARE, STATUS_ADMIN, STATUS_TOKEN)


# --------------------------------------------------------------------------------------------
# CPU accounting from /proc (Linux)
# --------------------------------------------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds; 0 if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def loaded_modules(pid: int) -> dict[str, bool]:
    """Which of uvloop / httptools a running process has loaded (from its memory maps)."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return {}
    return {"uvloop": "/uvloop/loop." in maps, "httptools": "/httptools/parser/" in maps}


def machine_busy_seconds() -> float:
    """CPU seconds spent not idle by all cores together since boot."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return 0.0
    values = [int(v) for v in first[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / CLK_TCK


# --------------------------------------------------------------------------------------------
# The load generator (its own process)
# --------------------------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = math.ceil(q * len(sorted_values)) - 1  # nearest rank
    return sorted_values[min(len(sorted_values) - 1, max(0, index))]


async def _load(spec: dict[str, Any]) -> dict[str, Any]:
    import aiohttp

    url: str = spec["url"]
    headers: dict[str, str] = spec["headers"]
    concurrency: int = spec["concurrency"]
    duration: float = spec["duration"]
    watched: list[int] = spec.get("server_pids", [])
    pg_pids: list[int] = spec.get("pg_pids", [])

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors: list[str] = []
    window = [float("inf"), float("inf")]  # [start, end] of the measured window
    stop = [False]
    total = [0]  # every completed request, warm-up and tail included (store counters)

    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency,
                                     force_close=False, enable_cleanup_closed=False)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                     skip_auto_headers=("User-Agent",)) as session:

        async def worker() -> None:
            perf = time.perf_counter
            while not stop[0]:
                started = perf()
                try:
                    async with session.get(url, headers=headers) as response:
                        await response.read()
                        status = response.status
                except Exception as exc:  # count and go on: a benchmark must finish
                    if len(errors) < 5:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    status = -1
                ended = perf()
                total[0] += 1
                if window[0] <= ended <= window[1]:
                    statuses[status] = statuses.get(status, 0) + 1
                    latencies.append(ended - started)

        tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
        await asyncio.sleep(LOADGEN_WARMUP)
        cpu0 = [proc_cpu_seconds(p) for p in watched]
        pg0 = sum(proc_cpu_seconds(p) for p in pg_pids)
        machine0 = machine_busy_seconds()
        self0 = time.process_time()
        window[0] = time.perf_counter()
        window[1] = window[0] + duration
        await asyncio.sleep(duration)
        elapsed = time.perf_counter() - window[0]
        self1 = time.process_time()
        machine1 = machine_busy_seconds()
        pg1 = sum(proc_cpu_seconds(p) for p in pg_pids)
        cpu1 = [proc_cpu_seconds(p) for p in watched]
        stop[0] = True
        await asyncio.gather(*tasks)

    latencies.sort()
    ok = statuses.get(200, 0)
    return {
        "requests": len(latencies),
        "total": total[0],
        "ok": ok,
        "statuses": {str(k): v for k, v in statuses.items()},
        "errors": errors,
        "elapsed": elapsed,
        "rps": ok / duration,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "server_cpu": sum(b - a for a, b in zip(cpu0, cpu1, strict=True)) / elapsed,
        "pg_cpu": (pg1 - pg0) / elapsed,
        "loadgen_cpu": (self1 - self0) / elapsed,
        "machine_cpu": (machine1 - machine0) / elapsed,
    }


def loadgen_main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    result = asyncio.run(_load(spec))
    print(json.dumps(result))


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Processes:
    """Every child this script starts, stopped in reverse order by `close`."""

    children: list[tuple[str, subprocess.Popen[bytes], Path]] = field(default_factory=list)
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="maintlink-bench-")))

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log_path = self.tmp / f"{name}.log"
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                [PYTHON, "-m", "maintlink", *args], cwd=ROOT, env=env,
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us only; we stop the children
            )
        self.children.append((name, proc, log_path))
        return proc

    def log_of(self, proc: subprocess.Popen[bytes]) -> str:
        for _, p, path in self.children:
            if p is proc:
                with contextlib.suppress(OSError):
                    return path.read_text(errors="replace")
        return ""

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(5)

    def close(self) -> None:
        for _, proc, _ in reversed(self.children):
            self.stop(proc)
        self.children.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)


def run_cli(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run([PYTHON, "-m", "maintlink", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"maintlink {' '.join(args)} failed ({done.returncode}):\n"
                           f"{done.stdout}\n{done.stderr}")
    return done.stdout


def wait_http(url: str, proc: subprocess.Popen[bytes], procs: Processes,
              timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with {proc.returncode}:\n{procs.log_of(proc)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code < 500:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s:\n{procs.log_of(proc)}")


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------


def _pg_url(dbname: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + dbname


async def _pg(sql: str, *, fetch: bool = False) -> list[Any]:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=10)
    try:
        if fetch:
            return list(await conn.fetch(sql))
        await conn.execute(sql)
        return []
    finally:
        await conn.close()


def pg_recreate() -> None:
    asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)'))
    asyncio.run(_pg(f'CREATE DATABASE "{PG_DATABASE}"'))


def pg_drop() -> None:
    asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)'))


def pg_backend_pids() -> list[int]:
    rows = asyncio.run(_pg(
        f"SELECT pid FROM pg_stat_activity WHERE datname = '{PG_DATABASE}' "
        "AND pid <> pg_backend_pid()", fetch=True))
    return [int(r["pid"]) for r in rows]


def pg_counters() -> dict[str, int]:
    """Transactions and sessions of the benchmark database so far (cumulative statistics)."""
    rows = asyncio.run(_pg(
        "SELECT xact_commit + xact_rollback AS xacts, sessions, tup_inserted, tup_updated "
        f"FROM pg_stat_database WHERE datname = '{PG_DATABASE}'", fetch=True))
    return {k: int(v) for k, v in dict(rows[0]).items()} if rows else {}


def pg_reachable() -> str | None:
    try:
        asyncio.run(_pg("SELECT 1"))
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


# --------------------------------------------------------------------------------------------
# One store
# --------------------------------------------------------------------------------------------


@dataclass
class Target:
    store: str
    base: str
    server_pid: int
    connection_id: str
    admin_key: str
    token: str
    modules: dict[str, bool] = field(default_factory=dict)


@dataclass
class Run:
    route: str
    result: dict[str, Any]
    pg: dict[str, int] = field(default_factory=dict)


@contextlib.contextmanager
def started(store: str, procs: Processes, cache_seconds: float | None) -> Iterator[Target]:
    import httpx

    env = {k: v for k, v in os.environ.items() if not k.startswith("MAINTLINK_")}
    data_dir = procs.tmp / store
    data_dir.mkdir()
    if store == "sqlite":
        database_url = f"sqlite+aiosqlite:///{data_dir / 'maintlink.db'}"
    else:
        database_url = _pg_url(PG_DATABASE)
        pg_recreate()
    try:
        env.update({
            "PYTHONUNBUFFERED": "1",
            "MAINTLINK_DATA_DIR": str(data_dir),
            "MAINTLINK_DATABASE_URL": database_url,
            "MAINTLINK_ENVIRONMENT": "production",
            "MAINTLINK_LOG_LEVEL": "warning",
            "MAINTLINK_RATE_LIMIT_ADMIN_PER_MINUTE": HUGE_LIMIT,
            "MAINTLINK_RATE_LIMIT_CONNECTION_PER_MINUTE": HUGE_LIMIT,
        })
        if cache_seconds is not None:
            env["MAINTLINK_CACHE_SECONDS"] = f"{cache_seconds:g}"
        env["MAINTLINK_SECRET_KEY"] = run_cli(["admin", "generate-secret-key"], env).strip()
        if store == "postgresql":
            run_cli(["migrate"], env)
        admin_key = run_cli(["admin", "create-key", "--account", "bench"], env) \
            .strip().splitlines()[-1]

        sandbox_port, api_port = free_port(), free_port()
        sandbox_url = f"http://127.0.0.1:{sandbox_port}"
        sandbox = procs.start(f"sandbox-{store}",
                              ["sandbox", "--port", str(sandbox_port), "--size", "40"], env)
        wait_http(f"{sandbox_url}/_sandbox/credentials", sandbox, procs)
        server = procs.start(f"api-{store}", ["api", "--port", str(api_port)], env)
        base = f"http://127.0.0.1:{api_port}"
        wait_http(f"{base}/healthz", server, procs)

        sandbox_key = httpx.post(f"{sandbox_url}/_sandbox/credentials", timeout=10) \
            .raise_for_status().json()["api_key"]
        created = httpx.post(
            f"{base}/api/v1/connections", timeout=30,
            headers={"Authorization": f"Bearer {admin_key}"},
            json={"customer_id": "bench-customer", "integration": "sandbox",
                  "credentials": {"base_url": sandbox_url, "api_key": sandbox_key}},
        )
        if created.status_code != 201:
            raise RuntimeError(f"creating the connection: {created.status_code} {created.text}")
        body = created.json()
        yield Target(store, base, server.pid, body["id"], admin_key, body["token"])
        server_log = procs.log_of(server).strip()
        if server_log:
            print(f"[{store}] server output (warning level and above):\n"
                  + "\n".join(server_log.splitlines()[-20:]))
        procs.close()
    finally:
        procs.close()
        if store == "postgresql":
            pg_drop()


def request_of(target: Target, route: str) -> tuple[str, dict[str, str]]:
    if route == BARE:
        return f"{target.base}/healthz", {}
    key = target.admin_key if route == STATUS_ADMIN else target.token
    return (f"{target.base}/api/v1/connections/{target.connection_id}/status",
            {"Authorization": f"Bearer {key}"})


def load(target: Target, route: str, duration: float, concurrency: int) -> Run:
    url, headers = request_of(target, route)
    pg_pids = pg_backend_pids() if target.store == "postgresql" else []
    before = pg_counters() if target.store == "postgresql" else {}
    spec = {"url": url, "headers": headers, "concurrency": concurrency, "duration": duration,
            "server_pids": [target.server_pid], "pg_pids": pg_pids}
    done = subprocess.run([PYTHON, str(Path(__file__).resolve()), "_loadgen", json.dumps(spec)],
                          cwd=ROOT, capture_output=True, text=True, check=False,
                          timeout=duration + 120, start_new_session=True)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({done.returncode}):\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    pg: dict[str, int] = {}
    if target.store == "postgresql":
        time.sleep(1.2)  # backends flush their statistics once idle for a second
        after = pg_counters()
        pg = {k: after[k] - before.get(k, 0) for k in after}
        pg["requests"] = result["total"]
    return Run(route, result, pg)


def console() -> Any:
    from rich.console import Console

    # Piped output keeps the whole table: it is not cut to 80 columns.
    return Console(width=None if sys.stdout.isatty() else 160)


def bench_store(store: str, args: argparse.Namespace) -> list[Run]:
    out = console()
    procs = Processes()
    runs: list[Run] = []
    with started(store, procs, args.cache_seconds) as target:
        out.print(f"[bold]{store}[/bold]: maintlink at {target.base}, connection "
                      f"{target.connection_id}; warming up {args.warmup:g} s per route")
        for route in ROUTES:
            load(target, route, args.warmup, args.concurrency)
        target.modules = loaded_modules(target.server_pid)
        if target.modules:
            out.print("  server process: event loop "
                      + ("uvloop" if target.modules["uvloop"] else "asyncio (uvloop not loaded)")
                      + ", HTTP parser "
                      + ("httptools" if target.modules["httptools"] else "h11"))
        for round_no in range(1, args.rounds + 1):
            for route in ROUTES:
                run = load(target, route, args.duration, args.concurrency)
                runs.append(run)
                r = run.result
                bad = {k: v for k, v in r["statuses"].items() if k != "200"}
                out.print(
                    f"  round {round_no}/{args.rounds} {route:<20} {r['rps']:8.0f} rps  "
                    f"p50 {r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms  "
                    f"srv CPU {r['server_cpu']:4.0%} ({cpu_per_request(run):.2f} ms/req)  "
                    f"gen CPU {r['loadgen_cpu']:4.0%}  box CPU {r['machine_cpu']:4.0%}"
                    + (f"  [red]non-200: {bad} {r['errors']}[/red]" if bad else "")
                )
    return runs


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def cpu_per_request(run: Run) -> float:
    """Milliseconds of server CPU per answered request: what the route costs the server,
    whatever else the machine runs."""
    r = run.result
    return r["server_cpu"] / r["rps"] * 1000 if r["rps"] else float("nan")


def median_of(runs: list[Run], route: str, key: str) -> float:
    return statistics.median(r.result[key] for r in runs if r.route == route)


def report(results: dict[str, list[Run]], args: argparse.Namespace) -> None:
    from rich.table import Table

    out = console()
    table = Table(title=f"maintlink API: status route vs bare route (median of {args.rounds} "
                  f"alternating runs of {args.duration:g} s, {args.concurrency} connections)")
    columns = ("store", "route", "rps", "p50 ms", "p99 ms", "ratio", "srv CPU",
               "srv CPU ms/req", "gen CPU", "PG CPU", "box CPU", "PG xact/req", "non-200")
    for name in columns:
        table.add_column(name, justify="left" if name in ("store", "route") else "right",
                         no_wrap=True)
    verdicts: list[str] = []
    for store, runs in results.items():
        bare_rps = median_of(runs, BARE, "rps")
        bare_cpu = statistics.median(cpu_per_request(r) for r in runs if r.route == BARE)
        for route in ROUTES:
            mine = [r for r in runs if r.route == route]
            rps = median_of(runs, route, "rps")
            cpu = statistics.median(cpu_per_request(r) for r in mine)
            ratio = "" if route == BARE else f"{rps / bare_rps:.2f}" if bare_rps else "n/a"
            xacts = ""
            if store == "postgresql":
                per = [r.pg["xacts"] / r.pg["requests"] for r in mine if r.pg.get("requests")]
                xacts = f"{statistics.median(per):.2f}" if per else "n/a"
            non_200 = sum(r.result["requests"] - r.result["ok"] for r in mine)
            table.add_row(
                store, route, f"{rps:,.0f}",
                f"{median_of(runs, route, 'p50_ms'):.1f}",
                f"{median_of(runs, route, 'p99_ms'):.1f}", ratio,
                f"{median_of(runs, route, 'server_cpu'):.0%}", f"{cpu:.2f}",
                f"{median_of(runs, route, 'loadgen_cpu'):.0%}",
                f"{median_of(runs, route, 'pg_cpu'):.0%}" if store == "postgresql" else "",
                f"{median_of(runs, route, 'machine_cpu'):.0%}",
                xacts, str(non_200),
            )
            if route != BARE and bare_rps:
                ok = rps / bare_rps >= TARGET_RATIO
                verdicts.append(
                    f"{store:<10} {route:<20} ratio {rps / bare_rps:.2f}: "
                    + ("[green]meets[/green]" if ok else "[red]below[/red]")
                    + f" the target (at least {TARGET_RATIO}); server CPU per request "
                    f"{bare_cpu:.2f} ms bare, {cpu:.2f} ms status (ratio {bare_cpu / cpu:.2f} "
                    "when the server has a core to itself)"
                )
        table.add_section()
    out.print(table)
    out.print(f"ratio = status rps / bare rps, target at least {TARGET_RATIO}.")
    for line in verdicts:
        out.print(line)
    out.print(
        "srv = the maintlink server process, gen = the load generator, PG = the PostgreSQL "
        "backends of the benchmark database, box = the whole machine; CPU in % of one core "
        f"({os.cpu_count()} cores = {100 * (os.cpu_count() or 1)} %), measured window only. "
        "PG xact/req = transactions per request (pg_stat_database). When box CPU is near the "
        "top while srv CPU is well below 100 %, other processes share the machine: the rps "
        "move with them, srv CPU ms/req much less."
    )


def describe_setup(args: argparse.Namespace) -> str:
    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    uvloop = importlib.util.find_spec("uvloop") is not None
    return (
        f"Load generator: aiohttp {version('aiohttp')} closed loop in its own process, "
        f"{args.concurrency} keep-alive connections, one request in flight each"
        f"{', on uvloop' if uvloop else ''}.\n"
        f"Server: `maintlink api` (uvicorn {version('uvicorn')}, one process), Python "
        f"{platform.python_version()}, SQLAlchemy {version('sqlalchemy')}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} before start.\n"
        "Read cache (MAINTLINK_CACHE_SECONDS): "
        + ("the server's default" if args.cache_seconds is None
           else f"{args.cache_seconds:g} s" + (" (off)" if args.cache_seconds == 0 else ""))
        + "."
    )


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "_loadgen":
        loadgen_main(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--duration", type=float, default=10.0,
                        help="seconds measured per run (default 10)")
    parser.add_argument("--concurrency", type=int, default=32,
                        help="keep-alive connections of the load generator (default 32)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating bare/status rounds; the median is shown (default 3)")
    parser.add_argument("--warmup", type=float, default=3.0,
                        help="seconds of warm-up per route before measuring (default 3)")
    parser.add_argument("--cache-seconds", type=float, default=None,
                        help="the server's MAINTLINK_CACHE_SECONDS (default: its own default; "
                        "0 makes every request read its key or token and the connection from "
                        "the store)")
    args = parser.parse_args()

    def on_sigterm(_signo: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    sys.path.insert(0, str(ROOT / "src"))
    stores = ["sqlite", "postgresql"] if args.store == "both" else [args.store]
    print(describe_setup(args), flush=True)
    results: dict[str, list[Run]] = {}
    try:
        for store in stores:
            if store == "postgresql":
                problem = pg_reachable()
                if problem:
                    print(f"PostgreSQL unreachable at {PG_ADMIN_URL}: {problem}; skipped.")
                    continue
            results[store] = bench_store(store, args)
    except KeyboardInterrupt:
        print("\nInterrupted; cleaned up.", file=sys.stderr)
    if results:
        report(results, args)


if __name__ == "__main__":
    main()
