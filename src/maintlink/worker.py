"""Background work: periodic jobs run by `maintlink worker` (or inside `serve`).

Each job is an async function run in its own loop; a failing run is logged and retried
at the next tick, never taking the worker down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import delete

from maintlink.api.ratelimit import WINDOW
from maintlink.runtime import Runtime
from maintlink.store.tables import rate_limit_windows

log = logging.getLogger("maintlink.worker")


@dataclass
class Job:
    name: str
    interval: float
    run: Callable[[], Awaitable[None]]


async def purge_rate_limit_windows(rt: Runtime) -> None:
    import time

    cutoff = int(time.time()) // WINDOW * WINDOW - WINDOW
    async with rt.engine.begin() as conn:
        await conn.execute(delete(rate_limit_windows).where(
            rate_limit_windows.c.window_start < cutoff))


def default_jobs(rt: Runtime) -> list[Job]:
    return [Job("purge-rate-limit-windows", 300, lambda: purge_rate_limit_windows(rt))]


class Worker:
    def __init__(self, rt: Runtime, jobs: list[Job] | None = None) -> None:
        self.rt = rt
        self.jobs = jobs if jobs is not None else default_jobs(rt)
        self._stop = asyncio.Event()

    async def _loop(self, job: Job) -> None:
        # Spread processes' ticks so they do not all hit the store at once.
        await self._sleep(random.uniform(0, min(job.interval, 5)))
        while not self._stop.is_set():
            try:
                await job.run()
            except Exception:
                log.exception("job %s failed", job.name)
            await self._sleep(job.interval)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def run(self) -> None:
        log.info("worker started", extra={"jobs": [j.name for j in self.jobs]})
        await asyncio.gather(*(self._loop(j) for j in self.jobs))
        log.info("worker stopped")

    def stop(self) -> None:
        self._stop.set()
