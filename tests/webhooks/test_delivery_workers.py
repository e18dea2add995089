"""Delivery workers running for real: wake-ups, crashes, competing workers, a dead endpoint."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
import standardwebhooks
import trustme
from sqlalchemy import event as sa_event

from maintlink.config import Settings
from maintlink.domain.events import NOTIFY_CHANNEL, emit
from maintlink.webhooks.delivery import PREFETCH, DeliveryWorker
from maintlink.webhooks.delivery_pg import RECORD_SUCCESSES_SQL, claim_sql, success_batch
from tests.webhooks.receivers import (
    Received,
    Reply,
    Store,
    StoreFactory,
    attempt_rows,
    delivery_rows,
    emit_test,
    new_endpoint,
    receiving,
    store_factory,
)

# A worker process of its own, as `maintlink worker` would run one, configured by environment.
WORKER_PROCESS = """
import asyncio, sys
from maintlink.config import Settings
from maintlink.runtime import build_runtime
from maintlink.webhooks.delivery import DeliveryWorker

async def main() -> None:
    rt = build_runtime(Settings())
    await DeliveryWorker(rt, sys.argv[1], poll_interval=0.1).run()

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
async def make_store(settings: Settings, ca_file: str) -> AsyncIterator[StoreFactory]:
    async with store_factory(settings, ca_file) as make:
        yield make


async def running(worker: DeliveryWorker) -> asyncio.Task[None]:
    """Start ``worker.run()`` and wait until its wake-ups are armed."""
    task = asyncio.create_task(worker.run())
    async with asyncio.timeout(10):
        while not worker.ready.is_set():
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
    return task


async def stopped(worker: DeliveryWorker, task: asyncio.Task[None]) -> None:
    worker.stop()
    async with asyncio.timeout(10):
        await task


async def test_a_new_event_wakes_the_worker(make_store: StoreFactory, ca: trustme.CA) -> None:
    """With a 30 s poll, only the wake-up (NOTIFY / in-process) can explain a quick delivery."""
    s = await make_store()
    async with receiving(ca) as rx:
        ep, secret = await new_endpoint(s.rt, s.account_id, rx.url)
        worker = s.worker(poll_interval=30)
        task = await running(worker)
        try:
            await asyncio.sleep(0.1)  # let its first, empty, claim pass
            event_id = await emit_test(s.rt, s.account_id, ep)
            [request] = await rx.wait_for(1, timeout=5)
        finally:
            await stopped(worker, task)
    assert request.headers["webhook-id"] == event_id
    standardwebhooks.Webhook(secret).verify(request.body, request.headers)


async def test_the_listener_reconnects(
    make_store: StoreFactory, ca: trustme.CA, database_url: str
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    s = await make_store()
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
    find = (
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND query ILIKE 'LISTEN%'"
    )
    async with receiving(ca) as rx:
        ep, _ = await new_endpoint(s.rt, s.account_id, rx.url)
        worker = s.worker(poll_interval=30)
        task = await running(worker)
        admin = await asyncpg.connect(dsn)
        try:
            [first] = [r["pid"] for r in await admin.fetch(find)]
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", first)
            async with asyncio.timeout(10):  # it notices the loss and listens again
                while (await admin.fetch(find)) in ([], [{"pid": first}]):
                    await asyncio.sleep(0.05)
                while not worker.ready.is_set():
                    await asyncio.sleep(0.01)
            await emit_test(s.rt, s.account_id, ep)
            await rx.wait_for(1, timeout=5)
        finally:
            await admin.close()
            await stopped(worker, task)


async def test_one_wake_up_per_transaction_and_none_lost_to_a_savepoint(
    make_store: StoreFactory, database_url: str
) -> None:
    """Bulk emits send NOTIFY once per transaction; a rolled-back savepoint that sent one
    does not stop the rest of the transaction from waking the workers."""
    if not database_url.startswith("postgresql"):
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    s = await make_store()
    ep, _ = await new_endpoint(s.rt, s.account_id, "https://receiver.example/hook")
    listener = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    heard: list[str] = []
    await listener.add_listener(NOTIFY_CHANNEL, lambda *args: heard.append(args[2]))
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        statements.append(statement)

    sa_event.listen(s.rt.engine.sync_engine, "before_cursor_execute", seen)

    async def emitted(conn: Any) -> None:
        await emit(conn, account_id=s.account_id, type="webhook.test",
                   data={"endpoint_id": ep, "message": "m"}, only_endpoint_id=ep, now=s.clock())

    async def wait_heard(count: int) -> None:
        async with asyncio.timeout(5):
            while len(heard) < count:
                await asyncio.sleep(0.01)

    try:
        for round_ in (1, 2):
            async with s.rt.engine.begin() as conn:
                for _ in range(5):
                    await emitted(conn)
            await wait_heard(round_)
        assert sum(st.startswith("NOTIFY") for st in statements) == 2
        async with s.rt.engine.begin() as conn:
            with contextlib.suppress(RuntimeError):
                async with conn.begin_nested():
                    await emitted(conn)
                    raise RuntimeError("rolled back")
            await emitted(conn)
        await wait_heard(3)
    finally:
        sa_event.remove(s.rt.engine.sync_engine, "before_cursor_execute", seen)
        await listener.close()


async def test_kill_9_mid_delivery_then_another_worker_delivers(
    make_store: StoreFactory, ca: trustme.CA, settings: Settings, ca_file: str
) -> None:
    s = await make_store()
    calls = 0

    def first_hangs(_request: Received) -> Reply:
        nonlocal calls
        calls += 1
        return Reply(hang=True) if calls == 1 else Reply(200)

    async with receiving(ca, handler=first_hangs) as rx:
        ep, secret = await new_endpoint(s.rt, s.account_id, rx.url)
        event_id = await emit_test(s.rt, s.account_id, ep)
        env = {
            **os.environ,
            "MAINTLINK_DATABASE_URL": settings.effective_database_url,
            "MAINTLINK_SECRET_KEY": settings.secret_key or "",
            "MAINTLINK_DATA_DIR": str(settings.data_dir),
            "MAINTLINK_ENVIRONMENT": "production",
            "MAINTLINK_WEBHOOK_CA_BUNDLE": ca_file,
            "MAINTLINK_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
            "MAINTLINK_WEBHOOK_TIMEOUT_SECONDS": "30",
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", WORKER_PROCESS, "doomed", env=env
        )
        try:
            await rx.wait_for(1, timeout=30)  # the doomed worker is mid-request
        finally:
            proc.send_signal(signal.SIGKILL)
            assert await proc.wait() == -signal.SIGKILL

        [delivery] = await delivery_rows(s.rt)
        assert (delivery.status, delivery.lease_owner) == ("delivering", "doomed")
        assert await attempt_rows(s.rt) == []
        async with s.worker(worker_id="survivor") as survivor:
            s.clock.set(delivery.lease_expires_at - timedelta(seconds=1))
            assert await survivor.run_once() == 0  # the lease still holds
            s.clock.set(delivery.lease_expires_at + timedelta(seconds=1))
            assert await survivor.run_once() == 1
        first, second = rx.received

    assert first.headers["webhook-id"] == second.headers["webhook-id"] == event_id
    assert first.body == second.body
    standardwebhooks.Webhook(secret).verify(second.body, second.headers)
    [delivery] = await delivery_rows(s.rt)
    assert (delivery.status, delivery.attempt_count) == ("succeeded", 1)
    [attempt] = await attempt_rows(s.rt)  # the killed worker recorded nothing
    assert attempt.attempt_number == 1 and attempt.success == 1


async def test_two_workers_never_deliver_the_same_delivery_twice(
    make_store: StoreFactory, ca: trustme.CA
) -> None:
    s = await make_store(webhook_endpoint_concurrency=4)
    other = await make_store(webhook_endpoint_concurrency=4)  # its own engine and pool
    counter = iter(range(10**6))

    def jittery(_request: Received) -> Reply:
        return Reply(200, delay=(next(counter) % 5) / 1000)

    async with receiving(ca, handler=jittery) as rx:
        endpoints = [(await new_endpoint(s.rt, s.account_id, f"{rx.url}/{i}"))[0] for i in range(3)]
        workers = [
            s.worker(worker_id="w1", batch_size=5),
            DeliveryWorker(other.rt, "w2", batch_size=5),
        ]
        tasks = [await running(w) for w in workers]
        try:
            for _ in range(40):  # emitted while both compete, each to the three endpoints
                await emit_test(s.rt, s.account_id, None)
            expected = 40 * len(endpoints)
            await rx.wait_for(expected, timeout=30)
            async with asyncio.timeout(10):
                while any(d.status != "succeeded" for d in await delivery_rows(s.rt)):
                    await asyncio.sleep(0.05)
        finally:
            for worker, task in zip(workers, tasks, strict=True):
                await stopped(worker, task)
        await asyncio.sleep(0.1)
        received = collections.Counter((r.headers["webhook-id"], r.path) for r in rx.received)

    assert len(received) == expected and set(received.values()) == {1}
    tries = await attempt_rows(s.rt)
    assert len(tries) == expected and len({a.delivery_id for a in tries}) == expected
    assert all(a.success == 1 and a.attempt_number == 1 for a in tries)
    assert sum(w.attempted for w in workers) == expected
    assert rx.max_in_flight <= 2 * 3 * 4  # two workers x three endpoints x the cap


async def emit_due(s: Store, endpoint_id: str, count: int) -> None:
    """``count`` events for ``endpoint_id`` in one transaction: as many due deliveries."""
    async with s.rt.engine.begin() as conn:
        for _ in range(count):
            await emit(conn, account_id=s.account_id, type="webhook.test",
                       data={"endpoint_id": endpoint_id, "message": "m"},
                       only_endpoint_id=endpoint_id, now=s.clock())


async def test_a_claim_reads_its_window_of_due_rows_whatever_the_statistics(
    make_store: StoreFactory, database_url: str
) -> None:
    """Statistics taken while the table was empty make a bitmap scan of every due row look
    cheapest; the claim must still walk the due index in order and stop after its window."""
    if not database_url.startswith("postgresql"):
        pytest.skip("the claim statement and its planner settings are PostgreSQL's")
    s = await make_store()
    ep, _ = await new_endpoint(s.rt, s.account_id, "https://receiver.example/hook")
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute("ANALYZE deliveries")
        backlog = await admin.fetchval("SELECT count(*) FROM deliveries")
        for _ in range(4):  # a backlog well past the window, still "empty" to the planner
            await emit_due(s, ep, 100)
        backlog += 400
    finally:
        await admin.close()
    worker = s.worker()
    try:
        now = s.clock()
        conn = await worker._links()[0]._connection()  # the claiming session, as configured
        tx = conn.transaction()
        await tx.start()
        try:
            [[plan]] = await conn.fetch(
                "EXPLAIN (ANALYZE, FORMAT JSON) " + claim_sql(worker._window, False),
                now, now + timedelta(seconds=60), worker.worker_id, [], [], [],
                worker._hold_max, 10, False,
            )
        finally:
            await tx.rollback()
    finally:
        await worker.aclose()

    scans = deliveries_scans(plan)
    due = [n for n in scans if n.get("Index Name") == "ix_deliveries_pending_due"]
    assert due and due[0]["Node Type"] == "Index Scan", scans
    assert due[0]["Actual Rows"] <= worker._window < backlog
    assert not [n for n in scans if n["Node Type"] in ("Seq Scan", "Bitmap Heap Scan")]


def successes(jobs: list[Any], at: Any) -> str:
    """``RECORD_SUCCESSES_SQL``'s batch: a 200 for each of ``jobs``."""
    return success_batch([
        {"id": j.id, "attempt_number": 1, "status_code": 200, "attempt_id": f"att_{j.id}",
         "attempted_at": at, "duration_ms": 1, "error": None, "response_body": ""}
        for j in jobs
    ])


def deliveries_scans(plan: str) -> list[dict[str, Any]]:
    """The scans of ``deliveries`` in an EXPLAIN (FORMAT JSON) plan."""
    scans: list[dict[str, Any]] = []

    def walk(node: dict[str, Any]) -> None:
        if node.get("Relation Name") == "deliveries" and "Scan" in node["Node Type"]:
            scans.append(node)
        for child in node.get("Plans", []):
            walk(child)

    walk(json.loads(plan)[0]["Plan"])
    return scans


async def test_a_success_batch_finds_its_rows_by_id_not_by_walking_the_leases(
    make_store: StoreFactory, database_url: str
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("the recording statement and its planner settings are PostgreSQL's")
    s = await make_store()
    ep, _ = await new_endpoint(s.rt, s.account_id, "https://receiver.example/hook")
    await emit_due(s, ep, 60)
    worker = s.worker()
    try:
        leased = await worker._claim(60)  # many leased rows, few of them in the batch
        assert len(leased) == 60
        now = s.clock()
        batch = leased[:3]
        conn = await worker._links()[1][0]._connection()  # a recording session, as configured
        tx = conn.transaction()
        await tx.start()
        try:
            [[plan]] = await conn.fetch(
                "EXPLAIN (ANALYZE, FORMAT JSON) " + RECORD_SUCCESSES_SQL,
                worker.worker_id, now, successes(batch, now), [j.id for j in batch],
            )
        finally:
            await tx.rollback()
    finally:
        await worker.aclose()
    scans = deliveries_scans(plan)
    assert scans and all(n.get("Index Name") == "pk_deliveries" for n in scans), scans
    assert sum(n["Actual Rows"] * n.get("Actual Loops", 1) for n in scans) == len(batch)


async def test_a_success_batch_stays_linear_in_the_failing_endpoints_whatever_its_kept_plan(
    make_store: StoreFactory, database_url: str
) -> None:
    """PostgreSQL keeps a generic plan for the recording statement after a few runs. One made
    while ``webhook_endpoints`` held a single row must not, once there are many failing
    endpoints, join them and the batch in a nested loop (batch x failing endpoints: tens of
    milliseconds a batch, which slowed every healthy endpoint)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("the recording statement and its planner settings are PostgreSQL's")
    s = await make_store()
    ep, _ = await new_endpoint(s.rt, s.account_id, "https://receiver.example/hook")
    await emit_due(s, ep, 20)
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
    admin = await asyncpg.connect(dsn)
    worker = s.worker()
    try:
        # Statistics of one endpoint, kept: no analyse may replace them during the test.
        await admin.execute("ALTER TABLE webhook_endpoints SET (autovacuum_enabled = false)")
        await admin.execute("ANALYZE webhook_endpoints")
        leased = await worker._claim(20)
        assert len(leased) == 20
        now = s.clock()

        def execute(jobs: list[Any]) -> str:
            # EXECUTE takes no bound parameters: the arguments as literals.
            def lit(value: str) -> str:
                return "'" + value.replace("'", "''") + "'"

            ids = "ARRAY[" + ", ".join(lit(j.id) for j in jobs) + "]::text[]"
            return (f"EXECUTE record_kept({lit(worker.worker_id)}, {lit(now.isoformat())}, "
                    f"{lit(successes(jobs, now))}, {ids})")

        conn = await worker._links()[1][0]._connection()  # a recording session, as configured
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        await conn.execute(
            f"PREPARE record_kept(text, timestamptz, json, text[]) AS {RECORD_SUCCESSES_SQL}"
        )
        tx = conn.transaction()
        await tx.start()
        try:  # the generic plan is made and kept now, with one endpoint in the statistics
            await conn.execute(execute(leased[:1]))
        finally:
            await tx.rollback()
        for i in range(300):  # failing endpoints, unknown to the kept plan
            await new_endpoint(s.rt, s.account_id, f"https://receiver.example/{i}")
        await admin.execute("UPDATE webhook_endpoints SET failing_since = now() WHERE id <> $1", ep)
        tx = conn.transaction()
        await tx.start()
        try:
            [[plan]] = await conn.fetch("EXPLAIN (ANALYZE, FORMAT JSON) " + execute(leased))
        finally:
            await tx.rollback()
    finally:
        await worker.aclose()
        await admin.execute("ALTER TABLE webhook_endpoints RESET (autovacuum_enabled)")
        await admin.close()
    # Every row each node of the endpoints' update handled, over all its loops: a plan that
    # reads the batch again for every failing endpoint (or the reverse) handles thousands.
    handled = update_work(plan, "webhook_endpoints")
    assert 0 < handled <= 2 * (301 + len(leased)), plan


def update_work(plan: str, relation: str) -> int:
    """Rows handled, over all loops, by the nodes under the update of ``relation`` in an
    EXPLAIN (ANALYZE, FORMAT JSON) plan."""

    def rows(node: dict[str, Any]) -> int:
        own = node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)
        own += node.get("Rows Removed by Join Filter", 0)
        return own * node.get("Actual Loops", 1) + sum(rows(c) for c in node.get("Plans", []))

    def find(node: dict[str, Any]) -> int:
        if node["Node Type"] == "ModifyTable" and node.get("Relation Name") == relation:
            return sum(rows(c) for c in node.get("Plans", []))
        return sum(find(c) for c in node.get("Plans", []))

    return find(json.loads(plan)[0]["Plan"])


async def test_a_dead_endpoint_does_not_slow_a_healthy_one(
    make_store: StoreFactory, ca: trustme.CA
) -> None:
    s = await make_store(webhook_timeout_seconds=10, webhook_endpoint_concurrency=2)
    async with receiving(ca, Reply(hang=True)) as dead, receiving(ca) as healthy:
        ep_dead, _ = await new_endpoint(s.rt, s.account_id, dead.url)
        ep_ok, _ = await new_endpoint(s.rt, s.account_id, healthy.url)
        for _ in range(10):  # the dead endpoint's deliveries come first in the queue
            await emit_test(s.rt, s.account_id, ep_dead)
        for _ in range(10):
            await emit_test(s.rt, s.account_id, ep_ok)
        worker = s.worker(batch_size=4, shutdown_grace=0)
        task = await running(worker)
        try:
            await healthy.wait_for(10, timeout=8)
            # Every healthy delivery arrived while the dead endpoint still hangs on its first two.
            assert dead.in_flight == 2 and len(dead.received) == 2
            assert await attempt_rows(s.rt, ep_dead) == []
            async with asyncio.timeout(5):
                while len(await attempt_rows(s.rt, ep_ok)) < 10:
                    await asyncio.sleep(0.02)
        finally:
            await stopped(worker, task)  # abandons the two hanging requests
        assert dead.max_in_flight == 2 and healthy.max_in_flight <= 2

    assert {d.status for d in await delivery_rows(s.rt, ep_ok)} == {"succeeded"}
    # Stopping put the abandoned deliveries straight back in the queue, untried.
    left = await delivery_rows(s.rt, ep_dead)
    assert {(d.status, d.lease_owner, d.attempt_count) for d in left} == {("pending", None, 0)}


async def test_a_dead_endpoint_holds_a_bounded_number_of_leases(
    make_store: StoreFactory, ca: trustme.CA
) -> None:
    """Claims take a few times the cap ahead, and no more: the rest stays free for others."""
    cap = 2
    s = await make_store(webhook_timeout_seconds=10, webhook_endpoint_concurrency=cap)
    async with receiving(ca, Reply(hang=True)) as dead:
        ep, _ = await new_endpoint(s.rt, s.account_id, dead.url)
        for _ in range(PREFETCH * cap + 8):
            await emit_test(s.rt, s.account_id, ep)
        worker = s.worker(shutdown_grace=0)
        task = await running(worker)
        try:
            await dead.wait_for(cap, timeout=8)
            leased = [d for d in await delivery_rows(s.rt, ep) if d.status == "delivering"]
            assert len(leased) == PREFETCH * cap
            assert dead.in_flight == cap
        finally:
            await stopped(worker, task)
    assert {d.status for d in await delivery_rows(s.rt, ep)} == {"pending"}


async def test_rate_limit_per_endpoint(make_store: StoreFactory, ca: trustme.CA) -> None:
    s = await make_store()
    async with receiving(ca) as rx:
        ep, _ = await new_endpoint(s.rt, s.account_id, rx.url, rate_limit_per_second=5)
        for _ in range(12):
            await emit_test(s.rt, s.account_id, ep)
        worker = s.worker()
        started = time.monotonic()
        task = await running(worker)
        try:
            got = await rx.wait_for(12, timeout=10)
        finally:
            await stopped(worker, task)
    # A burst of five, then five a second: the twelfth cannot be sent, so not received,
    # much under 1.4 s after the worker started. (Receipt times of the others say little
    # on a loaded machine: a busy receiver may take several requests in one go.)
    assert len(got) == 12
    assert got[-1].at - started >= 1.2
