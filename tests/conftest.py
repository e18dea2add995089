"""Fixtures that start real parts: a store on SQLite and PostgreSQL, maintlink and the
sandbox system served over HTTP on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn

from maintlink.config import Settings
from maintlink.crypto import generate_key
from maintlink.store.db import create_engine, migrate
from maintlink.store.tables import metadata

PG_ADMIN_URL = os.environ.get(
    "MAINTLINK_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REQUIRE_PG = (
    os.environ.get("CI") == "true" or os.environ.get("MAINTLINK_TEST_REQUIRE_POSTGRES") == "1"
)
STORES = ["sqlite", "postgresql"]


def run_sync(coro: Any) -> Any:
    """Run a coroutine to completion from sync code, even inside a running loop."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _worker_id(request: pytest.FixtureRequest) -> str:
    return getattr(request.config, "workerinput", {}).get("workerid", "main")


def _pg_url(dbname: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + dbname


async def _pg_reachable() -> str | None:
    try:
        conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    await conn.close()
    return None


async def _recreate_pg(dbname: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{dbname}"')
    finally:
        await conn.close()


async def _drop_pg(dbname: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    finally:
        await conn.close()


async def _migrate(url: str) -> None:
    engine = create_engine(url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def pg_template(request: pytest.FixtureRequest) -> Iterator[str]:
    """One migrated PostgreSQL database per test process; tests truncate it."""
    problem = run_sync(_pg_reachable())
    if problem:
        message = f"PostgreSQL unreachable at {PG_ADMIN_URL}: {problem}"
        if REQUIRE_PG:
            pytest.fail(message)
        pytest.skip(message)
    # The pid keeps concurrent test runs on one machine out of each other's databases.
    dbname = f"maintlink_test_{_worker_id(request)}_{os.getpid()}"
    run_sync(_recreate_pg(dbname))
    url = _pg_url(dbname)
    run_sync(_migrate(url))
    yield url
    run_sync(_drop_pg(dbname))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    run_sync(_migrate(f"sqlite+aiosqlite:///{path}"))
    return path


async def _truncate_pg(url: str) -> None:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
        await conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()


@pytest.fixture(params=STORES)
async def database_url(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[str]:
    """A migrated, empty store: each test runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "maintlink.db"
        shutil.copy(template, path)
        yield f"sqlite+aiosqlite:///{path}"
    else:
        url: str = request.getfixturevalue("pg_template")
        await _truncate_pg(url)
        yield url.replace("postgresql://", "postgresql+asyncpg://")


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database_url=database_url,
        secret_key=generate_key(),
        sandbox_enabled=False,
        environment="production",
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def serve_app(app: Any, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port; yields its base URL."""
    config = uvicorn.Config(app, host=host, port=0, log_level="warning", access_log=False,
                            lifespan="on", log_config=None)
    server = uvicorn.Server(config)
    # Leave signals to pytest: the test server must not capture Ctrl-C.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server stopped during start-up")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def sandbox_url() -> AsyncIterator[str]:
    """A sandbox system over real HTTP, small data set."""
    from maintlink.sandbox.app import SandboxState, create_sandbox_app

    state = SandboxState(seed=7, size=40)
    async with serve_app(create_sandbox_app(state)) as url:
        yield url


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[str]:
    from maintlink.app import create_app

    async with serve_app(create_app(settings, auto_migrate=False)) as url:
        yield url


@pytest.fixture
async def client(api: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api, timeout=30) as c:
        yield c


async def make_admin_key(settings: Settings, account: str) -> str:
    from maintlink.domain.accounts import create_admin_key

    engine = create_engine(settings.effective_database_url)
    try:
        async with engine.begin() as conn:
            _, _, key = await create_admin_key(conn, account)
    finally:
        await engine.dispose()
    return key


@pytest.fixture
async def admin_key(settings: Settings) -> str:
    return await make_admin_key(settings, "acme")


@pytest.fixture
async def other_admin_key(settings: Settings) -> str:
    return await make_admin_key(settings, "globex")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def new_sandbox_key(sandbox_url: str) -> str:
    async with httpx.AsyncClient() as c:
        r = await c.post(f"{sandbox_url}/_sandbox/credentials")
        r.raise_for_status()
        return str(r.json()["api_key"])


async def create_connection(
    client: httpx.AsyncClient, admin_key: str, sandbox_url: str, customer: str = "cust-1"
) -> dict[str, Any]:
    key = await new_sandbox_key(sandbox_url)
    r = await client.post(
        "/api/v1/connections",
        headers=bearer(admin_key),
        json={"customer_id": customer, "integration": "sandbox",
              "credentials": {"base_url": sandbox_url, "api_key": key}},
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    body["_sandbox_key"] = key
    return body
