"""Property-based run of the whole published OpenAPI document against a live server.

Any valid-looking instance URL the generator invents is routed to a real sandbox system on
loopback, so credential checks are real and no request leaves the machine.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from maintlink.app import create_app
from maintlink.config import Settings
from maintlink.crypto import generate_key
from maintlink.runtime import build_runtime
from tests.conftest import PG_ADMIN_URL, _drop_pg, make_admin_key, run_sync, serve_app


class _ToSandbox(httpx.AsyncBaseTransport):
    """Sends every provider request to the sandbox, whatever host it names."""

    def __init__(self, sandbox: str) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._target = httpx.URL(sandbox)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(
            scheme=self._target.scheme, host=self._target.host, port=self._target.port)
        request.headers["host"] = f"{self._target.host}:{self._target.port}"
        return await self._inner.handle_async_request(request)


class _Live:
    """maintlink and a sandbox, served from a thread with its own event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ready = threading.Event()
        self.stop: asyncio.Event | None = None
        self.url = ""
        self.key = ""
        self.token = ""
        self.connection_id = ""
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self.error = exc
            self.ready.set()

    async def _main(self) -> None:
        from maintlink.sandbox.app import SandboxState, create_sandbox_app

        self.stop = asyncio.Event()
        async with serve_app(create_sandbox_app(SandboxState(seed=1, size=20))) as sandbox:
            rt = build_runtime(self.settings)
            await rt.http.aclose()
            rt.http = httpx.AsyncClient(transport=_ToSandbox(sandbox), timeout=10)
            async with serve_app(create_app(self.settings, runtime=rt, auto_migrate=True)) as url:
                self.url = url
                self.key = await make_admin_key(self.settings, "acme")
                async with httpx.AsyncClient(base_url=url) as c:
                    api_key = (await c.post(f"{sandbox}/_sandbox/credentials")).json()["api_key"]
                    r = await c.post("/api/v1/connections",
                                     headers={"Authorization": f"Bearer {self.key}"},
                                     json={"customer_id": "c", "integration": "sandbox",
                                           "credentials": {"base_url": sandbox,
                                                           "api_key": api_key}})
                    r.raise_for_status()
                    self.token = r.json()["token"]
                    self.connection_id = r.json()["id"]
                self.ready.set()
                await self.stop.wait()
            await rt.aclose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[_Live]:
    tmp = tmp_path_factory.mktemp("schemathesis")
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp / 'm.db'}"
    else:
        template = request.getfixturevalue("pg_template")
        url = template.rsplit("/", 1)[0] + "/maintlink_schemathesis_" + template.rsplit("_", 1)[-1]
        run_sync(_fresh_pg(url))
    s = Settings(data_dir=tmp, database_url=url, secret_key=generate_key(),
                 sandbox_enabled=False, rate_limit_admin_per_minute=100_000,
                 rate_limit_connection_per_minute=100_000)
    live = _Live(s)
    live.thread.start()
    live.ready.wait(60)
    if live.error:
        raise live.error
    yield live
    loop_stop = live.stop
    if loop_stop is not None:
        # The event lives on the server's loop; setting it from here is safe for a flag.
        loop_stop._loop.call_soon_threadsafe(loop_stop.set)  # type: ignore[attr-defined]
    live.thread.join(30)
    shutil.rmtree(tmp, ignore_errors=True)
    if request.param == "postgresql":
        run_sync(_drop_pg(url.rsplit("/", 1)[1]))


async def _fresh_pg(url: str) -> None:
    import asyncpg

    name = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def _operations(live: _Live) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{live.url}/api/v1/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


_TOKEN_PATHS = ("/api/v1/connection/", "/api/v1/work-orders", "/api/v1/assets",
                "/api/v1/locations", "/api/v1/parts", "/api/v1/purchase-orders",
                "/api/v1/vendors", "/api/v1/users")


def _checker(operation: Any, auth: dict[str, str]) -> Any:
    @given(case=operation.as_strategy())
    @settings(max_examples=20, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case: Any) -> None:
        case.call_and_validate(headers=auth, excluded_checks=[positive_data_acceptance])

    return check


def test_api_conforms_and_never_fails(live: _Live) -> None:
    """Every operation, with generated valid and invalid input: no 5xx, every answer matches
    the published schema (status code, content type, headers, body). Schema-valid input may
    still be refused (credentials the system rejects, ids that do not exist), so the
    "valid data must be accepted" heuristic is the one check left out."""
    failures: list[str] = []
    operations = _operations(live)
    assert len(operations) > 20
    for operation in operations:
        path = operation.path + "/"
        token = live.token if path.startswith(_TOKEN_PATHS) else live.key
        try:
            _checker(operation, {"Authorization": f"Bearer {token}"})()
        except Exception as exc:
            failures.append(f"{operation.label}: {exc}"[:2000])
    assert not failures, "\n\n".join(failures)


def test_schema_is_served(live: _Live) -> None:
    spec = httpx.get(f"{live.url}/api/v1/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert "/api/v1/connections/{connection_id}/status" in spec["paths"]


