"""Background work, run by `maintlink worker` (or inside `maintlink serve`):

* webhook delivery (claims due deliveries; woken by NOTIFY or in-process),
* syncs (claims connections whose sync is due, a few at a time, each under a lease),
* health checks (claims connections whose check is due),
* periodic housekeeping (retention purges).

Every loop survives its own failures: a failing round is logged and retried next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete

from maintlink.api.ratelimit import WINDOW
from maintlink.runtime import Runtime
from maintlink.store.tables import idempotency_keys, rate_limit_windows
from maintlink.webhooks import wakeup

log = logging.getLogger("maintlink.worker")


@dataclass
class Job:
    name: str
    interval: float
    run: Callable[[], Awaitable[None]]


async def purge_rate_limit_windows(rt: Runtime) -> None:
    cutoff = int(time.time()) // WINDOW * WINDOW - WINDOW
    async with rt.engine.begin() as conn:
        await conn.execute(delete(rate_limit_windows).where(
            rate_limit_windows.c.window_start < cutoff))


async def purge_idempotency_keys(rt: Runtime) -> None:
    """Keys are honoured for 24 hours, like Stripe's."""
    cutoff = rt.clock() - timedelta(hours=24)
    async with rt.engine.begin() as conn:
        await conn.execute(delete(idempotency_keys).where(idempotency_keys.c.created_at < cutoff))


def default_jobs(rt: Runtime) -> list[Job]:
    from maintlink.webhooks.delivery import make_job as purge_events_job

    return [
        Job("purge-rate-limit-windows", 300, lambda: purge_rate_limit_windows(rt)),
        Job("purge-idempotency-keys", 3600, lambda: purge_idempotency_keys(rt)),
        purge_events_job(rt),
    ]


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{random.randrange(16**6):06x}"


class Worker:
    def __init__(
        self, rt: Runtime, jobs: list[Job] | None = None, *, worker_id: str | None = None,
        deliveries: bool = True, syncs: bool = True, health: bool = True,
    ) -> None:
        from maintlink.webhooks.delivery import DeliveryWorker

        self.rt = rt
        self.worker_id = (worker_id or worker_name())[:64]
        self.jobs = jobs if jobs is not None else default_jobs(rt)
        self.delivery = DeliveryWorker(rt, self.worker_id) if deliveries else None
        self.run_syncs = syncs
        self.run_health = health
        self._stop = asyncio.Event()
        self._syncing: set[asyncio.Task[object]] = set()

    async def _sleep(self, seconds: float, wake: asyncio.Event | None = None) -> None:
        waiters = [asyncio.ensure_future(self._stop.wait())]
        if wake is not None:
            waiters.append(asyncio.ensure_future(wake.wait()))
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        if wake is not None:
            wake.clear()

    async def _loop(self, job: Job) -> None:
        # Spread processes' ticks so they do not all hit the store at once.
        await self._sleep(random.uniform(0, min(job.interval, 5)))
        while not self._stop.is_set():
            try:
                await job.run()
            except Exception:
                log.exception("job %s failed", job.name)
            await self._sleep(job.interval)

    async def _sync_loop(self) -> None:
        from maintlink.domain.syncs import SyncRun, claim_due

        wake = wakeup.register()  # a sync requested through this process's API
        try:
            while not self._stop.is_set():
                free = self.rt.settings.sync_concurrency - len(self._syncing)
                if free > 0:
                    try:
                        ids = await claim_due(self.rt, self.worker_id, free)
                    except Exception:
                        log.exception("claiming syncs failed")
                        ids = []
                    for connection_id in ids:
                        task = asyncio.create_task(
                            SyncRun(self.rt, connection_id, self.worker_id).run(),
                            name=f"sync:{connection_id}")
                        self._syncing.add(task)
                        task.add_done_callback(self._sync_done)
                await self._sleep(1.0, wake)
        finally:
            wakeup.unregister(wake)

    def _sync_done(self, task: asyncio.Task[object]) -> None:
        self._syncing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("sync task failed", exc_info=task.exception())

    async def _health_loop(self) -> None:
        from maintlink.domain.health import check_connection, claim_health_checks

        while not self._stop.is_set():
            try:
                ids = await claim_health_checks(self.rt, 20)
                await asyncio.gather(*(self._check(check_connection, i) for i in ids))
            except Exception:
                log.exception("health checks failed")
            await self._sleep(5.0)

    async def _check(self, fn: Callable[..., Awaitable[None]], connection_id: str) -> None:
        try:
            await fn(self.rt, connection_id)
        except Exception:
            log.exception("health check of %s failed", connection_id)

    async def run(self) -> None:
        log.info("worker %s started", self.worker_id,
                 extra={"jobs": [j.name for j in self.jobs]})
        loops = [self._loop(j) for j in self.jobs]
        if self.delivery is not None:
            loops.append(self.delivery.run())
        if self.run_syncs:
            loops.append(self._sync_loop())
        if self.run_health:
            loops.append(self._health_loop())
        try:
            await asyncio.gather(*loops)
        finally:
            for task in list(self._syncing):
                task.cancel()  # its lease expires; another worker resumes the run
            with contextlib.suppress(BaseException):
                await asyncio.gather(*self._syncing, return_exceptions=True)
            if self.delivery is not None:
                await self.delivery.aclose()
        log.info("worker %s stopped", self.worker_id)

    def stop(self) -> None:
        self._stop.set()
        if self.delivery is not None:
            self.delivery.stop()
