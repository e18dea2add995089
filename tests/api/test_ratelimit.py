from __future__ import annotations

import asyncio

import httpx
import pytest

from maintlink.app import create_app
from maintlink.config import Settings
from tests.conftest import bearer, create_connection, serve_app


async def test_admin_key_limit_with_headers(settings: Settings, admin_key: str) -> None:
    limited = settings.model_copy(update={"rate_limit_admin_per_minute": 5})
    async with serve_app(create_app(limited, auto_migrate=False)) as url:
        async with httpx.AsyncClient(base_url=url) as c:
            answers = [await c.get("/api/v1/integrations", headers=bearer(admin_key))
                       for _ in range(7)]
    assert [r.status_code for r in answers] == [200] * 5 + [429] * 2
    assert answers[0].headers["ratelimit-limit"] == "5"
    assert answers[0].headers["ratelimit-remaining"] == "4"
    over = answers[5]
    err = over.json()["error"]
    assert err["code"] == "RATE_LIMIT_EXCEEDED"
    assert 1 <= int(over.headers["retry-after"]) <= 60
    assert over.headers["ratelimit-remaining"] == "0"
    assert int(over.headers["ratelimit-reset"]) == int(over.headers["retry-after"])


async def test_connection_token_limit_is_per_connection(
    settings: Settings, admin_key: str, sandbox_url: str
) -> None:
    limited = settings.model_copy(update={"rate_limit_connection_per_minute": 3})
    async with serve_app(create_app(limited, auto_migrate=False)) as url:
        async with httpx.AsyncClient(base_url=url) as c:
            a = await create_connection(c, admin_key, sandbox_url, "a")
            b = await create_connection(c, admin_key, sandbox_url, "b")
            codes_a = [(await c.get("/api/v1/connection", headers=bearer(a["token"]))).status_code
                       for _ in range(4)]
            code_b = (await c.get("/api/v1/connection", headers=bearer(b["token"]))).status_code
    assert codes_a == [200, 200, 200, 429]
    assert code_b == 200


async def test_limit_is_shared_by_several_api_processes(
    settings: Settings, admin_key: str
) -> None:
    """Two servers on one store share one budget (exact on PostgreSQL; SQLite is one process
    by design, so there each server counts alone and the check is skipped)."""
    if settings.is_sqlite:
        pytest.skip("SQLite serves one process; the shared budget is a PostgreSQL feature")
    limited = settings.model_copy(update={"rate_limit_admin_per_minute": 10})
    async with serve_app(create_app(limited, auto_migrate=False)) as u1, \
            serve_app(create_app(limited, auto_migrate=False)) as u2:
        async with httpx.AsyncClient() as c:
            answers = await asyncio.gather(*[
                c.get(f"{(u1, u2)[i % 2]}/api/v1/integrations", headers=bearer(admin_key))
                for i in range(16)
            ])
    codes = sorted(r.status_code for r in answers)
    assert codes.count(200) == 10 and codes.count(429) == 6


async def test_leased_budget_across_processes(settings: Settings) -> None:
    """On PostgreSQL each process takes the shared budget in leases (here 4 at a time): two
    processes together never admit more than the limit, nor less than the limit minus one
    process's unused lease; one process alone sees `remaining` go down one by one."""
    if settings.is_sqlite:
        pytest.skip("SQLite counts in memory (one process)")
    from maintlink.api.ratelimit import StoreRateLimiter
    from maintlink.store.db import create_engine

    engine = create_engine(settings.effective_database_url)
    try:
        limit = 200
        first, second = StoreRateLimiter(engine), StoreRateLimiter(engine)
        assert first.lease_size(limit) == 4
        alone = [(await first.hit("k:alone", limit)).remaining for _ in range(10)]
        budgets = await asyncio.gather(*[
            (first, second)[i % 2].hit("k:shared", limit) for i in range(300)
        ])
    finally:
        await engine.dispose()
    assert alone == list(range(limit - 1, limit - 11, -1))
    admitted = sum(1 for b in budgets if b.remaining >= 0)
    assert limit - 3 <= admitted <= limit
    assert all(b.remaining < 0 for b in budgets[-50:])
