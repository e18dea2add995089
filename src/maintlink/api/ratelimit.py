"""Per-token request budgets in fixed one-minute windows.

With SQLite maintlink runs as one process, so counting in memory is exact. With
PostgreSQL several API processes share the budget through `rate_limit_windows`: an atomic
upsert hands each process a small lease of the budget, which it then counts in memory.
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
    """The budget lives in `rate_limit_windows`; each process takes it in small leases.

    A lease is one upsert that adds `lease` requests to the window's shared count and grants
    what is left of the limit; the process then counts those requests in memory. Processes
    together never admit more than the limit. A process may hold up to `lease - 1` unused
    requests while another is refused, so with N processes the admitted total can fall short
    of the limit by (N - 1) x (lease - 1); the lease is a fiftieth of the limit (at most
    100), so that is 2 % per extra process, and limits under 100 are counted one by one.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._last_sweep = 0.0
        self._sweep_lock = asyncio.Lock()
        self._held: dict[str, _Lease] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    @staticmethod
    def lease_size(limit: int) -> int:
        return max(1, min(100, limit // 50))

    async def hit(self, bucket: str, limit: int) -> Budget:
        now = time.time()
        start, reset = _window(now)
        held = self._held.get(bucket)
        if not _current(held, start):
            lock = self._locks.setdefault(bucket, asyncio.Lock())
            async with lock:  # one lease at a time per bucket; the others wait for it
                held = self._held.get(bucket)
                if not _current(held, start):
                    held = await self._lease(bucket, start, limit)
                    self._held[bucket] = held
        assert held is not None
        if held.left == 0:
            return Budget(limit, -1, reset)
        held.left -= 1
        used = min(limit, held.counted - held.left)
        if now - self._last_sweep > WINDOW:
            await self._sweep(start)
        return Budget(limit, limit - used, reset)

    async def _lease(self, bucket: str, start: int, limit: int) -> _Lease:
        size = self.lease_size(limit)
        stmt = pg_insert(rate_limit_windows).values(bucket=bucket, window_start=start, count=size)
        stmt = stmt.on_conflict_do_update(
            index_elements=["bucket", "window_start"],
            set_={"count": rate_limit_windows.c.count + size},
        ).returning(rate_limit_windows.c.count)
        async with self.engine.begin() as conn:
            counted = int((await conn.execute(stmt)).scalar_one())
        granted = max(0, min(size, limit - (counted - size)))
        return _Lease(start, granted, min(counted, limit), refused=granted == 0)

    async def _sweep(self, current: int) -> None:
        if self._sweep_lock.locked():
            return
        async with self._sweep_lock:
            self._last_sweep = time.time()
            self._held = {k: v for k, v in self._held.items() if v.window == current}
            self._locks = {k: v for k, v in self._locks.items() if k in self._held}
            async with self.engine.begin() as conn:
                await conn.execute(
                    delete(rate_limit_windows).where(rate_limit_windows.c.window_start < current)
                )


@dataclass
class _Lease:
    window: int
    left: int  # requests this process may still admit in the window
    counted: int  # the shared count once the lease was taken (all processes), capped at limit
    refused: bool  # the shared count had reached the limit: nobody gets more this window


def _current(held: _Lease | None, start: int) -> bool:
    """Whether `held` answers for window `start` without asking the store."""
    return held is not None and held.window == start and (held.left > 0 or held.refused)


def limiter_for(engine: AsyncEngine) -> RateLimiter:
    return MemoryRateLimiter() if engine.dialect.name == "sqlite" else StoreRateLimiter(engine)
