"""A maintlink app plus direct access to its runtime, to drive syncs and health checks
step by step (the worker loops call the same functions)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from maintlink.app import create_app
from maintlink.config import Settings
from maintlink.domain.health import check_connection
from maintlink.domain.syncs import SyncRun, claim_due
from maintlink.runtime import Runtime, build_runtime
from maintlink.store.types import utcnow
from tests.conftest import bearer, serve_app


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@dataclass
class Harness:
    rt: Runtime
    client: httpx.AsyncClient
    key: str
    sandbox: str
    clock: Clock
    sleeps: list[float]

    async def connect(self, customer: str = "cust-1", **extra: Any) -> dict[str, Any]:
        api_key = (await self.client.post(f"{self.sandbox}/_sandbox/credentials")).json()[
            "api_key"]
        body = {"customer_id": customer, "integration": "sandbox",
                "credentials": {"base_url": self.sandbox, "api_key": api_key},
                "settings": {"history_days": 3650}, **extra}
        r = await self.client.post("/api/v1/connections", headers=bearer(self.key), json=body)
        assert r.status_code == 201, r.text
        return {**r.json(), "_sandbox_key": api_key}

    async def sync(self, connection_id: str, worker: str = "w1") -> str | None:
        """Claim (as the worker loop does) and run one sync to the end."""
        assert connection_id in await claim_due(self.rt, worker, 10)
        return await SyncRun(self.rt, connection_id, worker, sleep=self._sleep).run()

    async def check(self, connection_id: str) -> None:
        await check_connection(self.rt, connection_id)

    async def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    async def events(self, connection_id: str) -> list[dict[str, Any]]:
        r = await self.client.get("/api/v1/events", headers=bearer(self.key),
                                  params={"connection_id": connection_id, "page_size": 500})
        return list(reversed(r.json()["data"]))

    async def sandbox_post_to(self, url: str, body: Any = None) -> Any:
        r = await self.client.post(url, json=body)
        assert r.status_code < 300, r.text
        return r.json()

    async def sandbox_post(self, path: str, body: Any = None) -> Any:
        r = await self.client.post(f"{self.sandbox}{path}", json=body)
        assert r.status_code < 300, r.text
        return r.json()


@pytest.fixture
async def harness(
    settings: Settings, admin_key: str, sandbox_url: str
) -> AsyncIterator[Harness]:
    clock = Clock()
    s = settings.model_copy(update={"sync_retry_backoff": "0,0,0"})
    rt = build_runtime(s)
    rt.clock = clock
    async with serve_app(create_app(s, runtime=rt, auto_migrate=False)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            yield Harness(rt, client, admin_key, sandbox_url, clock, [])
    await rt.aclose()
