"""Per-token request budgets in fixed one-minute windows.

With SQLite maintlink runs as one process, so counting in memory is exact. With
PostgreSQL several API processes share the budget through one upsert per request on
`rate_limit_windows`, which is atomic under concurrency.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from maintlink.errors import MaintlinkError
from maintlink.store.tables import rate_limit_windows

WINDOW = 60


@dataclass(frozen=True)
class Budget:
    limit: int
    remaining: int
    reset: int  # seconds until the window ends

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset),
        }


class RateLimiter:
    async def hit(self, bucket: str, limit: int) -> Budget:
        raise NotImplementedError

    async def check(self, bucket: str, limit: int) -> Budget:
        budget = await self.hit(bucket, limit)
        if budget.remaining < 0:
            over = Budget(limit, 0, budget.reset)
            raise MaintlinkError(
                "RATE_LIMIT_EXCEEDED",
                f"More than {limit} requests this minute; retry in {budget.reset} s.",
                details={"limit": limit, "window_seconds": WINDOW},
                headers={"Retry-After": str(budget.reset), **over.headers()},
            )
        return budget


def _window(now: float) -> tuple[int, int]:
    start = int(now) // WINDOW * WINDOW
    return start, max(1, start + WINDOW - int(now))


class MemoryRateLimiter(RateLimiter):
    def __init__(self) -> None:
        self._counts: dict[str, tuple[int, int]] = {}

    async def hit(self, bucket: str, limit: int) -> Budget:
        start, reset = _window(time.time())
        window, count = self._counts.get(bucket, (start, 0))
        count = count + 1 if window == start else 1
        self._counts[bucket] = (start, count)
        if len(self._counts) > 100_000:  # drop stale buckets now and then
            self._counts = {k: v for k, v in self._counts.items() if v[0] == start}
        return Budget(limit, limit - count, reset)


class StoreRateLimiter(RateLimiter):
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._last_sweep = 0.0
        self._sweep_lock = asyncio.Lock()

    async def hit(self, bucket: str, limit: int) -> Budget:
        now = time.time()
        start, reset = _window(now)
        stmt = pg_insert(rate_limit_windows).values(bucket=bucket, window_start=start, count=1)
        stmt = stmt.on_conflict_do_update(
            index_elements=["bucket", "window_start"],
            set_={"count": rate_limit_windows.c.count + 1},
        ).returning(rate_limit_windows.c.count)
        async with self.engine.begin() as conn:
            count = int((await conn.execute(stmt)).scalar_one())
        if now - self._last_sweep > WINDOW:
            await self._sweep(start)
        return Budget(limit, limit - count, reset)

    async def _sweep(self, current: int) -> None:
        if self._sweep_lock.locked():
            return
        async with self._sweep_lock:
            self._last_sweep = time.time()
            async with self.engine.begin() as conn:
                await conn.execute(
                    delete(rate_limit_windows).where(rate_limit_windows.c.window_start < current)
                )


def limiter_for(engine: AsyncEngine) -> RateLimiter:
    return MemoryRateLimiter() if engine.dialect.name == "sqlite" else StoreRateLimiter(engine)
