"""The API request log: what is recorded (and what never is), batching off the request path,
the buffer's bound, retention, the row cap, and searching it. On SQLite and PostgreSQL."""

# Fixtures come from dashboard_support by import; test parameters name them.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from maintlink.config import Settings
from maintlink.domain import request_log
from maintlink.domain.request_log import RequestLogWriter
from maintlink.store.db import create_engine
from maintlink.store.tables import api_keys
from maintlink.store.tables import request_log as table
from tests.conftest import bearer
from tests.web.dashboard_support import (  # noqa: F401 - fixtures
    Stack,
    eventually,
    pg_template,
    sqlite_template,
    stack,
)


async def logged(stack: Stack) -> list[Any]:
    await stack.flush_request_log()
    return await stack.rows(select(table).order_by(table.c.id))


async def test_every_authenticated_api_request_is_recorded_with_who_made_it(
    stack: Stack,
) -> None:
    north = await stack.connect("northwind")
    key_id = (await stack.rows(select(api_keys.c.id).order_by(api_keys.c.id)))[0].id
    account = (await stack.rows(select(api_keys.c.account_id).order_by(api_keys.c.id)))[0]
    await stack.api.get(f"/api/v1/connections/{north['id']}/status", headers={
        **bearer(stack.key), "X-Request-Id": "admin-call-1"})
    await stack.api.get("/api/v1/events", params={"connection_id": north["id"]},
                        headers=bearer(stack.key))
    await stack.api.get("/api/v1/work-orders?page_size=5", headers={
        **bearer(north["token"]), "X-Request-Id": "token-call-1"})
    # Not recorded: no valid credential, so no account; and pages outside /api.
    await stack.api.get("/api/v1/work-orders", headers=bearer("mlc_unknown"))
    await stack.api.get("/api/v1/work-orders")
    await stack.api.get("/healthz")
    # A connection needing reauthorization: the refusal is what support gets asked about.
    await stack.revoke(north["_sandbox_key"])
    await stack.check(north["id"])
    refused = await stack.api.get("/api/v1/work-orders", headers=bearer(north["token"]))
    assert refused.status_code == 401

    rows = await logged(stack)
    by_id = {r.request_id: r for r in rows}
    create = rows[0]
    assert (create.method, create.path, create.status) == ("POST", "/api/v1/connections", 201)
    assert create.key_id == key_id and create.connection_id is None
    assert all(r.account_id == account.account_id for r in rows)

    admin = by_id["admin-call-1"]
    assert (admin.method, admin.status, admin.key_id) == ("GET", 200, key_id)
    assert admin.connection_id == north["id"]  # from the route's path
    listed = next(r for r in rows if r.path == "/api/v1/events")
    assert listed.connection_id == north["id"]  # from the query filter

    data = by_id["token-call-1"]
    assert data.path == "/api/v1/work-orders"  # the query string is never kept
    assert data.connection_id == north["id"] and data.key_id is None
    assert data.duration_ms > 0 and data.at <= datetime.now(UTC)

    refusal = by_id[refused.headers["x-request-id"]]
    assert (refusal.status, refusal.connection_id) == (401, north["id"])
    assert len(rows) == 5
    assert {r.request_id for r in rows} >= {refused.headers["x-request-id"]}


async def test_headers_bodies_and_secrets_are_never_recorded(stack: Stack) -> None:
    north = await stack.connect("northwind")
    secret = "s3cr3t-value-that-must-not-leak"
    await stack.api.post("/api/v1/work-orders", headers={
        **bearer(north["token"]), "X-Custom": secret},
        json={"title": secret, "description": secret})
    await stack.api.get(f"/api/v1/work-orders?title={secret}", headers=bearer(north["token"]))
    rows = await logged(stack)
    assert {c.name for c in table.columns} == {
        "id", "account_id", "connection_id", "key_id", "request_id", "method", "path",
        "status", "duration_ms", "at"}
    for row in rows:
        values = " ".join(str(v) for v in row)
        assert secret not in values
        assert north["token"] not in values and stack.key not in values


async def test_requests_do_not_wait_for_the_store(settings: Settings, tmp_path: Path) -> None:
    """`capture` only appends to memory: with the store unreachable it neither blocks nor
    fails, and the rows are written once the store answers again."""
    broken = create_engine(f"sqlite+aiosqlite:///{tmp_path}/missing-dir/none/x.db")
    # Point the engine at a file whose directory vanished: every connect fails.
    (tmp_path / "missing-dir" / "none" / "x.db").unlink(missing_ok=True)
    (tmp_path / "missing-dir" / "none").rmdir()
    writer = RequestLogWriter(broken, settings.model_copy(update={"request_log_batch_rows": 2}))
    started = time.perf_counter()
    for i in range(5):
        writer.capture({"account_id": "acct_1"}, "GET", "/api/v1/x", 200, f"r{i}", 1.0)
    assert time.perf_counter() - started < 0.5
    with pytest.raises(Exception):  # noqa: B017 - whatever the driver raises
        await writer.flush()
    assert writer.pending == 5 and writer.dropped == 0  # nothing lost yet
    await broken.dispose()

    good = create_engine(settings.effective_database_url)
    try:
        writer.engine = good
        assert await writer.flush() == 5
        async with good.connect() as conn:
            ids = [r.request_id for r in await conn.execute(
                select(table.c.request_id).order_by(table.c.id))]
        assert ids == ["r0", "r1", "r2", "r3", "r4"]
    finally:
        await good.dispose()


async def test_a_full_batch_is_written_at_once_and_the_buffer_is_bounded(
    settings: Settings,
) -> None:
    engine = create_engine(settings.effective_database_url)
    s = settings.model_copy(update={"request_log_flush_seconds": 60,
                                    "request_log_batch_rows": 3,
                                    "request_log_buffer_rows": 100})
    writer = RequestLogWriter(engine, s)
    task = asyncio.create_task(writer.run())
    try:
        for i in range(3):
            writer.capture({"account_id": "acct_1"}, "GET", "/api/v1/x", 200, f"b{i}", 1.0)

        async def written() -> bool:
            return writer.written == 3
        await eventually(written, timeout=5)  # long before the 60 s interval

        writer.enabled = False
        writer.capture({"account_id": "acct_1"}, "GET", "/api/v1/x", 200, "off", 1.0)
        assert writer.pending == 0
    finally:
        writer.stop()
        await task

    bounded = RequestLogWriter(engine, s.model_copy(update={"request_log_batch_rows": 1000}))
    for i in range(150):
        bounded.capture({"account_id": "acct_1"}, "GET", "/api/v1/x", 200, f"c{i}", 1.0)
    assert bounded.pending == 100 and bounded.dropped == 50
    assert await bounded.flush() == 100
    async with engine.connect() as conn:
        kept = [r.request_id for r in await conn.execute(
            select(table.c.request_id).where(table.c.request_id.like("c%"))
            .order_by(table.c.id))]
    assert kept == [f"c{i}" for i in range(50, 150)]  # the newest are kept
    await engine.dispose()


async def test_stopping_writes_what_is_left(settings: Settings) -> None:
    engine = create_engine(settings.effective_database_url)
    writer = RequestLogWriter(engine, settings.model_copy(
        update={"request_log_flush_seconds": 60}))
    task = asyncio.create_task(writer.run())
    await asyncio.sleep(0.05)
    writer.capture({"account_id": "acct_1"}, "GET", "/api/v1/x", 200, "last", 1.0)
    writer.stop()
    await task
    async with engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(table))).scalar() == 1
    await engine.dispose()


async def test_retention_and_row_cap(settings: Settings) -> None:
    engine = create_engine(settings.effective_database_url)
    s = settings.model_copy(update={"request_log_retention_days": 7,
                                    "request_log_max_rows": 1000})
    now = datetime.now(UTC)
    old = [{"id": f"rq_0OLD{i:04d}", "account_id": "acct_1", "request_id": f"old{i}",
            "method": "GET", "path": "/api/v1/x", "status": 200, "duration_ms": 1.0,
            "at": now - timedelta(days=8)} for i in range(3)]
    writer = RequestLogWriter(engine, s.model_copy(update={"request_log_buffer_rows": 2000}))
    for i in range(1005):
        writer.capture({"account_id": "acct_1"}, "GET", "/api/v1/x", 200, f"new{i}", 1.0)
    try:
        async with engine.begin() as conn:
            await conn.execute(table.insert(), old)
        await writer.flush()
        async with engine.begin() as conn:
            removed = await request_log.purge(conn, s, now)
            assert removed == 3 + 5
            rows = [r.request_id for r in await conn.execute(
                select(table.c.request_id).order_by(table.c.id))]
        assert len(rows) == 1000 and rows[0] == "new5" and rows[-1] == "new1004"
    finally:
        await engine.dispose()


async def test_search_filters_and_account_scope(settings: Settings) -> None:
    engine = create_engine(settings.effective_database_url)
    writer = RequestLogWriter(engine, settings)
    samples = [("acct_a", "conn_1", "GET", 200, "q-1"), ("acct_a", "conn_1", "POST", 422, "q-2"),
               ("acct_a", "conn_2", "GET", 503, "q-3"), ("acct_a", None, "DELETE", 204, "q-4"),
               ("acct_b", "conn_9", "GET", 200, "q-5"), ("acct_b", None, "GET", 200, "q-1")]
    for account, connection, method, status, rid in samples:
        writer.capture({"account_id": account, "connection_id": connection}, method,
                       "/api/v1/x", status, rid, 2.0)
    await writer.flush()

    async def ids(account: str, **filters: Any) -> list[str]:
        async with engine.connect() as conn:
            rows = await request_log.list_requests(conn, account, after=None, limit=50,
                                                   **filters)
        return [r.request_id for r in rows]

    try:
        assert await ids("acct_a") == ["q-4", "q-3", "q-2", "q-1"]  # newest first
        assert await ids("acct_a", request_id="q-1") == ["q-1"]  # not acct_b's q-1
        assert await ids("acct_a", request_id="q-") == []  # exact, never a prefix
        assert await ids("acct_a", connection_id="conn_1") == ["q-2", "q-1"]
        assert await ids("acct_a", connection_id="conn_9") == []  # acct_b's
        assert await ids("acct_a", status_class="4xx") == ["q-2"]
        assert await ids("acct_a", status_class="5xx") == ["q-3"]
        assert await ids("acct_a", method="delete") == ["q-4"]
        async with engine.connect() as conn:
            page = await request_log.list_requests(conn, "acct_a", after=None, limit=2)
            rest = await request_log.list_requests(conn, "acct_a", after=page[-1].id, limit=2)
        assert [r.request_id for r in rest] == ["q-2", "q-1"]
        view = request_log.request_view(page[0])
        assert view["object"] == "api_request" and view["request_id"] == "q-4"
    finally:
        await engine.dispose()


async def test_made_up_connection_ids_in_queries_are_not_attributed(stack: Stack) -> None:
    r = await stack.api.get("/api/v1/events", params={"connection_id": "c" * 300},
                            headers=bearer(stack.key))
    assert r.status_code in (200, 422)
    rows = await logged(stack)
    assert rows[-1].connection_id is None and rows[-1].path == "/api/v1/events"


async def test_the_app_flushes_on_its_own(stack: Stack) -> None:
    await stack.api.get("/api/v1/integrations", headers=bearer(stack.key))

    async def written() -> bool:
        return bool(await stack.rows(select(table.c.id)))
    await eventually(written, timeout=5)  # the writer flushes every 0.2 s in these tests


async def test_unknown_versions_and_failures_before_auth_are_not_attributed(
    stack: Stack,
) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as client:
        await client.get("/api/v9/work-orders", headers=bearer(stack.key))
    assert await logged(stack) == []


async def test_an_unstorable_path_does_not_block_the_log(settings: Settings) -> None:
    engine = create_engine(settings.effective_database_url)
    writer = RequestLogWriter(engine, settings)
    writer.capture({"account_id": "acct_1"}, "GET", "/api/v1/\udcff/\x00x", 404, "odd", 1.0)
    writer.capture({"account_id": "acct_1"}, "GET", "/api/v1/fine", 200, "fine", 1.0)
    try:
        assert await writer.flush() == 2
        async with engine.connect() as conn:
            paths = [r.path for r in await conn.execute(
                select(table.c.path).order_by(table.c.id))]
        assert paths == ["/api/v1/?/x", "/api/v1/fine"]
    finally:
        await engine.dispose()
