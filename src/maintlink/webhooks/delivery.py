"""The delivery worker: claims due deliveries, signs and POSTs them, records every attempt.

How it keeps its promises:

* **At least once.** A delivery is claimed under a lease (``lease_owner``, ``lease_expires_at``)
  in one short transaction; its outcome is written with the attempt log in another, and only while
  the lease is still ours. A worker that dies mid-request leaves a ``delivering`` row whose lease
  runs out; any worker then claims it again. Nothing is recorded twice.
* **Many workers, one store.** PostgreSQL claims with ``FOR UPDATE SKIP LOCKED``, so workers on
  many machines never hold the same delivery at once; SQLite serialises writers, so the same
  ``UPDATE ... RETURNING`` is atomic there.
* **Fast.** PostgreSQL ``LISTEN maintlink_deliveries`` (SQLite: ``wakeup``) wakes the worker when
  an event commits; a poll every second is the safety net.
* **Isolation.** At most ``webhook_endpoint_concurrency`` requests per endpoint and
  ``webhook_worker_concurrency`` in all are in flight. A worker claims a few times an endpoint's
  cap ahead (``PREFETCH``) so that claims come in batches; an endpoint it holds that many of is
  left out of the claim, so a dead endpoint only ever occupies its own sender loops and a bounded
  number of leases.
* **Cheap.** Successes are recorded in batches of up to ``RECORD_BATCH``: a flusher task
  writes every success that arrived while the previous batch was being committed; on
  PostgreSQL a batch also waits up to ``RECORD_LINGER_SECONDS`` for company (a commit costs
  more than its rows), and more writers start only when a full batch is waiting (up to
  ``RECORD_WRITERS``). On PostgreSQL, claims and those batches are single statements on the
  worker's own asyncpg connections (``delivery_pg``), and claims look for run-out leases only
  every ``EXPIRED_CHECK_SECONDS`` and on every poll; failures, which decide retries and
  disabling, are recorded one by one through the engine. A claim signs its deliveries
  together (``_presign``), which is cheaper than one signature between two requests.

Outcomes: any 2xx succeeds; anything else fails with a kind (``FAILURE_KINDS``) and is retried on
the schedule in ``schedule.py`` until it is exhausted. 410 Gone, or failing continuously for
``webhook_disable_after_hours``, disables the endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import secrets
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import orjson
from sqlalchemy import (
    Row,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from maintlink.domain.endpoints import disable_endpoint, signing_secrets
from maintlink.domain.events import NOTIFY_CHANNEL
from maintlink.ids import new_id
from maintlink.runtime import Runtime
from maintlink.store.tables import attempts, deliveries, events, webhook_endpoints
from maintlink.webhooks import signing, urls, wakeup
from maintlink.webhooks.delivery_pg import (
    RECORD_SUCCESSES_SQL,
    PgLink,
    claim_sql,
    success_batch,
)
from maintlink.webhooks.schedule import retry_delay

if TYPE_CHECKING:
    from maintlink.worker import Job

__all__ = [
    "FAILURE_KINDS",
    "PREFETCH",
    "USER_AGENT",
    "DeliveryWorker",
    "Outcome",
    "make_job",
    "purge_expired",
]

log = logging.getLogger("maintlink.webhooks.delivery")

USER_AGENT = "maintlink-webhooks/0.1"

HTTP_STATUS = "HTTP_STATUS"
REDIRECT = "REDIRECT"
TIMEOUT = "TIMEOUT"
TLS_ERROR = "TLS_ERROR"
CONNECTION_ERROR = "CONNECTION_ERROR"
FORBIDDEN_ADDRESS = "FORBIDDEN_ADDRESS"
INVALID_URL = "INVALID_URL"
# Our side could not build the request (an undecryptable secret, say).
INTERNAL_ERROR = "INTERNAL_ERROR"
FAILURE_KINDS = frozenset(
    {
        HTTP_STATUS,
        REDIRECT,
        TIMEOUT,
        TLS_ERROR,
        CONNECTION_ERROR,
        FORBIDDEN_ADDRESS,
        INVALID_URL,
        INTERNAL_ERROR,
    }
)

# After a wake-up, look again this much later: SQLite's wake-up precedes the commit.
# (PostgreSQL delivers NOTIFY after the commit: no second look needed.)
RECHECK_DELAYS = (0.05, 0.25)
# A lease must outlast the request it covers, with this much to spare.
LEASE_MARGIN_SECONDS = 5.0
# Past the logged prefix, read at most this much more to keep the connection reusable.
DRAIN_BYTES = 64 * 1024
MAX_ERROR_CHARS = 2000
# A worker holds (has leased) at most this many times an endpoint's concurrency cap of its
# deliveries: enough for claims to come in batches of half that, few enough that a dead
# endpoint holds a bounded number of leases (extended when one waits long in its queue).
PREFETCH = 16
# Batches of successes being written at once (PostgreSQL): more batches form and commit
# while the first waits for its WAL flush.
RECORD_WRITERS = 3
# Successes recorded in one statement at most; a smaller batch waits up to the linger for
# more (PostgreSQL): a commit, with its WAL flush, costs more than the rows it writes.
RECORD_BATCH = 64
RECORD_LINGER_SECONDS = 0.01
# Leases that ran out (a crashed worker's deliveries) are looked for at most this often
# (seconds) on PostgreSQL, and on every poll: finding them means walking every leased row.
EXPIRED_CHECK_SECONDS = 1.0


@dataclass(slots=True)
class Outcome:
    """What one HTTP attempt came to."""

    success: bool
    status_code: int | None = None
    failure_kind: str | None = None
    error: str | None = None
    response_body: str | None = None
    retry_after: str | None = None
    duration_ms: int = 0

    def __post_init__(self) -> None:
        # Both are stored, and PostgreSQL text cannot hold NUL: one stray byte in an answer
        # would fail the record of every attempt in its batch, again at each lease expiry.
        if self.error is not None:
            self.error = self.error.replace("\x00", "\ufffd")
        if self.response_body is not None:
            self.response_body = self.response_body.replace("\x00", "\ufffd")


@dataclass(frozen=True, slots=True)
class _Endpoint:
    """What sending needs of an endpoint, as it was when its deliveries were claimed."""

    id: str
    url: str
    headers: Mapping[str, Any] | None
    api_version: str
    rate_limit_per_second: int | None
    secret_encrypted: str
    previous_secret_encrypted: str | None
    previous_secret_expires_at: datetime | None
    # Every request's headers but the three signing ones: the endpoint's static headers,
    # then ours (which win).
    base_headers: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        headers = {str(k): str(v) for k, v in (self.headers or {}).items()}
        headers.update(
            {
                "Maintlink-Version": self.api_version,
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
            }
        )
        object.__setattr__(self, "base_headers", headers)

    @classmethod
    def of(cls, row: Row[Any]) -> _Endpoint:
        return cls(
            id=row.id,
            url=row.url,
            headers=row.headers,
            api_version=row.api_version,
            rate_limit_per_second=row.rate_limit_per_second,
            secret_encrypted=row.secret_encrypted,
            previous_secret_encrypted=row.previous_secret_encrypted,
            previous_secret_expires_at=row.previous_secret_expires_at,
        )

    def secrets(self) -> dict[str, Any]:
        return {
            "secret_encrypted": self.secret_encrypted,
            "previous_secret_encrypted": self.previous_secret_encrypted,
            "previous_secret_expires_at": self.previous_secret_expires_at,
        }


@dataclass(slots=True)
class _Claimed:
    id: str
    event_id: str
    endpoint_id: str
    account_id: str
    # The stored body as the bytes sent and signed, encoded once for both.
    payload: bytes
    attempt_count: int
    trigger: str
    lease_expires_at: datetime
    endpoint: _Endpoint
    # (unix second, the request's headers) signed with the claim (``_presign``); used if
    # the request goes out within that second, else it is signed again.
    signed: tuple[int, dict[str, str]] | None = None


@dataclass(slots=True)
class _Success:
    """A successful attempt waiting for its batch to be recorded."""

    job: _Claimed
    started_at: datetime
    outcome: Outcome


class _TokenBucket:
    """``rate`` requests per second on average, bursts of up to ``rate`` (real time)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._tokens = float(rate)
        self._at = time.monotonic()

    async def take(self) -> None:
        while True:
            now = time.monotonic()
            self._tokens = min(float(self.rate), self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return
            await asyncio.sleep((1 - self._tokens) / self.rate)


def _set_event(event: asyncio.Event, *_args: object) -> None:
    event.set()


def _iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def _default_worker_id() -> str:
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{secrets.token_hex(4)}"


def postgres_dsn(url: URL) -> str:
    """A libpq-style DSN for asyncpg from the engine's SQLAlchemy URL."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


# --- the HTTP side ----------------------------------------------------------------------------


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc``, what it wraps (aiohttp's ``os_error``) and its causes, without cycles."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop(0)
        if item is None or any(item is s for s in seen):
            continue
        seen.append(item)
        todo += [getattr(item, "os_error", None), item.__cause__, item.__context__]
    return seen


def classify(exc: BaseException) -> tuple[str, str]:
    """The failure kind and a readable message for an exception raised while sending."""
    chain = _chain(exc)
    for item in chain:
        if isinstance(item, urls.ForbiddenAddressError):
            return FORBIDDEN_ADDRESS, str(item)
    for item in chain:
        if isinstance(item, aiohttp.ClientSSLError | ssl.SSLError | ssl.CertificateError):
            return TLS_ERROR, str(item) or type(item).__name__
    for item in chain:
        if isinstance(item, TimeoutError):
            return TIMEOUT, "no complete answer within the timeout"
    if isinstance(exc, aiohttp.InvalidURL | ValueError):  # yarl refuses the URL
        return INVALID_URL, f"invalid URL: {exc}"
    if isinstance(exc, aiohttp.ClientError | OSError):
        return CONNECTION_ERROR, str(exc) or type(exc).__name__
    return INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"


async def _read_prefix(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The first ``limit`` bytes of the answer; drain a little more so the connection can be
    reused, and drop the connection rather than read a huge body."""
    content = resp.content
    first = await content.read(limit)
    if content.at_eof():  # the usual small answer: whole after one read
        return first
    buf = bytearray(first)
    while first and len(buf) < limit:
        first = await content.read(limit - len(buf))
        buf += first
    drained = 0
    while not content.at_eof() and drained <= DRAIN_BYTES:
        chunk = await content.read(DRAIN_BYTES)
        if not chunk:
            break
        drained += len(chunk)
    if not content.at_eof():
        resp.close()
    return bytes(buf)


def _url_problem(url: str, allow_http: bool) -> str | None:
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        return "the endpoint URL cannot be parsed"
    if scheme == "http" and not allow_http:
        return "plain http:// is not allowed (MAINTLINK_WEBHOOK_ALLOW_HTTP is off)"
    if scheme not in ("http", "https"):
        return f"unsupported URL scheme {scheme!r}"
    return None


# --- the worker ---------------------------------------------------------------------------------


class DeliveryWorker:
    """One delivery worker. Run as many as needed, in one process or many.

    ``run()`` works until ``stop()``; ``run_once()`` claims one batch, delivers it and returns
    how many it claimed (tests drive the worker with it and a fake ``rt.clock``).
    """

    def __init__(
        self,
        rt: Runtime,
        worker_id: str | None = None,
        *,
        batch_size: int = 100,
        poll_interval: float = 1.0,
        shutdown_grace: float | None = None,
        rng: random.Random | None = None,
        listen: bool = True,
        prefetch: int = PREFETCH,
    ) -> None:
        self.rt = rt
        self.settings = rt.settings
        self.worker_id = (worker_id or _default_worker_id())[:64]
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        # In-flight requests are given this long to finish when stopping, then abandoned.
        self.shutdown_grace = (
            shutdown_grace
            if shutdown_grace is not None
            else self.settings.webhook_timeout_seconds + 1
        )
        self.rng = rng or random.Random()  # jitter, not security
        self.listen = listen
        self._allowed = urls.parse_allowed_networks(self.settings.webhook_allowed_networks)
        # Deliveries this worker holds a lease on: every write of them checks it.
        self._mine = and_(deliveries.c.lease_owner == self.worker_id,
                          deliveries.c.status == "delivering")
        # A lease must have this much left when its request starts (else it is extended).
        self._lease_slack = timedelta(
            seconds=self.settings.webhook_timeout_seconds + LEASE_MARGIN_SECONDS
        )
        self._timeout = aiohttp.ClientTimeout(total=self.settings.webhook_timeout_seconds)
        self._session: aiohttp.ClientSession | None = None
        cap = self.settings.webhook_endpoint_concurrency
        self._hold_max = max(1, prefetch) * cap
        # Due rows one claim looks at (PostgreSQL: a literal of the statement, so that its
        # plan is kept) and so the most it claims at once: what it may hold of one endpoint.
        # (Endpoints it holds enough of are left out of the candidates, not just skipped.)
        self._window = max(16, self._hold_max)
        self._expired_check_at = 0.0  # time.monotonic() of the next look for run-out leases
        # Claimed and not yet answered, per endpoint: queued or in flight. What
        # is only waiting for its record to commit no longer counts against the endpoint.
        self._held: dict[str, int] = {}
        self._unfinished = 0  # claimed and not yet recorded, all endpoints
        self._idle = asyncio.Event()  # nothing claimed is unrecorded
        self._idle.set()
        self._hold_limit: dict[str, int] = {}
        self._full: set[str] = set()  # endpoints left out of claims until they drain a little
        # Claimed deliveries waiting to be sent, per endpoint, and the loops sending them: at
        # most the endpoint's cap of loops, each with one request in flight at a time.
        self._queues: dict[str, deque[_Claimed]] = {}
        self._senders: dict[str, int] = {}
        self._sending = asyncio.Semaphore(self.settings.webhook_worker_concurrency)
        self._max_held = 2 * self.settings.webhook_worker_concurrency
        self._buckets: dict[str, _TokenBucket] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._claim_lock = asyncio.Lock()
        self._more = False  # the last claim may have left due deliveries behind
        self._saturated = False  # this worker holds all it may: claim again when it drains
        self._successes: list[_Success] = []
        self._flushers: set[asyncio.Task[None]] = set()
        self._flusher_starting = False  # a flusher was started and has not taken a batch yet
        self._lingering = False  # a flusher waits for its batch to fill
        self._batch_full = asyncio.Event()
        self._pg: tuple[PgLink, list[PgLink]] | None = None  # (claims, records)
        self._pg_direct = rt.dialect == "postgresql" and rt.engine.dialect.driver == "asyncpg"
        self._url_checks: dict[str, tuple[str, str] | None] = {}
        self._secrets: dict[tuple[str, str | None], list[bytes]] = {}
        self._stop = asyncio.Event()
        self._kick = asyncio.Event()
        self.ready = asyncio.Event()  # wake-ups are armed (SQLite: registered; PG: listening)
        self.attempted = 0  # attempts recorded by this worker

    # -- lifecycle --

    async def __aenter__(self) -> DeliveryWorker:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def stop(self) -> None:
        """Ask ``run()`` to finish (safe from a signal handler)."""
        self._stop.set()
        self._kick.set()

    async def aclose(self) -> None:
        if self._flushers:
            await asyncio.wait(set(self._flushers), timeout=self.settings.webhook_timeout_seconds)
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._pg is not None:
            (claims, records), self._pg = self._pg, None
            for link in (claims, *records):
                await link.aclose()

    @property
    def in_flight(self) -> int:
        """Deliveries claimed and not yet recorded."""
        return self._unfinished

    @property
    def direct_statements(self) -> int:
        """Statements sent on the worker's own asyncpg connections (PostgreSQL), each its own
        transaction; the engine's are counted by the engine's events."""
        if self._pg is None:
            return 0
        claims, records = self._pg
        return claims.statements + sum(link.statements for link in records)

    async def run(self) -> None:
        """Deliver until ``stop()``; then let in-flight requests finish (``shutdown_grace``)."""
        sqlite = self.rt.dialect != "postgresql"
        if sqlite:
            self._kick = wakeup.register()
            self.ready.set()
        listener = (
            asyncio.create_task(self._listen(), name=f"listen:{self.worker_id}")
            if self.listen and not sqlite
            else None
        )
        log.info("delivery worker %s started", self.worker_id)
        try:
            await self._loop()
        finally:
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener
            if sqlite:
                wakeup.unregister(self._kick)
            self.ready.clear()
            await self._drain()
            await self.aclose()
            log.info("delivery worker %s stopped", self.worker_id)

    async def _loop(self) -> None:
        recheck_delays = RECHECK_DELAYS if self.rt.dialect != "postgresql" else ()
        rechecks: list[float] = []
        polled = True  # the first claim and every poll also look for run-out leases
        while not self._stop.is_set():
            self._kick.clear()  # a kick during the claim stays set: no wake-up is lost
            try:
                claimed = await self._claim_and_dispatch(expired=polled)
            except Exception:
                log.exception("claiming deliveries failed")
                claimed = 0
                rechecks.clear()
            polled = False
            if claimed and self._more:
                rechecks.clear()
                await asyncio.sleep(0)  # more may be due: claim again once the tasks started
                continue
            delay = rechecks.pop(0) if rechecks else self.poll_interval
            try:
                await asyncio.wait_for(self._kick.wait(), delay)
                rechecks = list(recheck_delays)
            except TimeoutError:
                polled = True

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.shutdown_grace
        # Again until none is left: a sender may start a failure's recording meanwhile.
        while self._tasks and (left := deadline - loop.time()) > 0:
            await asyncio.wait(set(self._tasks), timeout=left)
        pending = set(self._tasks)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if self._flushers:
            await asyncio.wait(set(self._flushers), timeout=self.settings.webhook_timeout_seconds)
        # Whatever was cut short goes back to the queue now instead of when its lease ends.
        with contextlib.suppress(Exception):
            now = self.rt.clock()
            async with self.rt.engine.begin() as conn:
                await conn.execute(
                    update(deliveries)
                    .where(self._mine)
                    .values(
                        status="pending", lease_owner=None, lease_expires_at=None, updated_at=now
                    )
                )

    async def run_once(self) -> int:
        """Claim one batch, deliver it, and return how many deliveries were claimed."""
        claimed = await self._claim_and_dispatch(expired=True)
        if claimed:
            await self._idle.wait()
        return claimed

    # -- wake-ups (PostgreSQL) --

    def _on_notify(self, *_args: object) -> None:
        self._kick.set()

    async def _listen(self) -> None:
        """Hold a LISTEN connection; reconnect when it is lost."""
        import asyncpg

        dsn = postgres_dsn(self.rt.engine.url)
        backoff = 0.2
        while not self._stop.is_set():
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(dsn, timeout=10)
                lost = asyncio.Event()
                conn.add_termination_listener(functools.partial(_set_event, lost))
                await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
                backoff = 0.2
                self.ready.set()
                self._kick.set()  # events committed while we were not listening
                await self._watch(conn, lost)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("LISTEN %s connection failed: %s", NOTIFY_CHANNEL, exc)
            finally:
                self.ready.clear()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 2)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), backoff)
            backoff = min(backoff * 2, 5.0)

    async def _watch(self, conn: asyncpg.Connection, lost: asyncio.Event) -> None:
        # A dead network is silent: ping now and then instead of waiting for ever.
        while not self._stop.is_set() and not lost.is_set() and not conn.is_closed():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), 15)
                return
            await asyncio.wait_for(conn.fetchval("SELECT 1"), 5)

    # -- claiming --

    @staticmethod
    def _due(now: datetime, table: Any = deliveries) -> Any:
        d = table.c
        return or_(
            and_(d.status == "pending", d.next_attempt_at <= now),
            and_(d.status == "delivering", d.lease_expires_at < now),  # a crashed worker's
        )

    def _links(self) -> tuple[PgLink, list[PgLink]]:
        if self._pg is None:
            dsn = postgres_dsn(self.rt.engine.url)
            name = f"maintlink-delivery {self.worker_id}"[:63]
            # A claim lost in a server crash only means the row is pending again, so claims
            # do not wait for the WAL flush; recorded attempts do. The claim must walk the
            # due index in order and stop after its candidates, whatever the statistics say
            # (a table analysed while empty makes a bitmap scan of every due row look cheap).
            claim_settings = {
                "synchronous_commit": "off",
                "enable_bitmapscan": "off",
                "enable_seqscan": "off",
                "application_name": name,
            }
            # Recording finds each row by its id: never by scanning. PostgreSQL keeps a
            # generic plan of the recording statement after a few runs; one made while
            # webhook_endpoints held a row or two joined the batch and the failing endpoints
            # in a nested loop, work of batch x failing endpoints (24 ms a 100-row batch
            # with 1,111 failing endpoints). Without nested loops the joins are hashed:
            # linear in the batch and the endpoints, whatever the plan.
            record_settings = {
                "enable_bitmapscan": "off",
                "enable_seqscan": "off",
                "enable_nestloop": "off",
                "application_name": name,
            }
            self._pg = (
                PgLink(dsn, claim_settings),
                [PgLink(dsn, record_settings) for _ in range(RECORD_WRITERS)],
            )
        return self._pg

    def _limit_for(self, endpoint: _Endpoint) -> int:
        """How many of ``endpoint``'s deliveries this worker may hold at once."""
        rate = endpoint.rate_limit_per_second
        return max(1, min(self._hold_max, rate)) if rate and rate > 0 else self._hold_max

    async def _claim_and_dispatch(self, expired: bool = False) -> int:
        """Claim what is due and start delivering it; return how many were claimed.
        ``expired``: look for run-out leases whenever this is PostgreSQL (otherwise at most
        every ``EXPIRED_CHECK_SECONDS``)."""
        async with self._claim_lock:
            limit = min(self.batch_size, self._window, self._max_held - self._unfinished)
            if limit <= 0:
                self._saturated, self._more = True, False
                return 0
            held_before = dict(self._held)
            claimed = await self._claim(limit, expired)
            if claimed:
                self._unfinished += len(claimed)
                self._idle.clear()
            got: dict[str, int] = {}
            for job in claimed:
                eid = job.endpoint_id
                got[eid] = got.get(eid, 0) + 1
                self._held[eid] = self._held.get(eid, 0) + 1
                self._hold_limit[eid] = self._limit_for(job.endpoint)
                queue = self._queues.get(eid)
                if queue is None:
                    queue = self._queues[eid] = deque()
                queue.append(job)
            for eid in got:
                self._start_senders(eid)
            self._saturated = self._unfinished >= self._max_held
            # An endpoint that got all the room it had may have more due: claim for it again
            # once it has drained by half (at once if it already has, meanwhile).
            self._more = len(claimed) >= limit
            for eid, n in got.items():
                if n >= self._hold_limit[eid] - held_before.get(eid, 0):
                    if self._held.get(eid, 0) <= self._hold_limit[eid] // 2:
                        self._more = True
                    else:
                        self._full.add(eid)
            return len(claimed)

    async def _claim(self, limit: int, expired: bool = True) -> list[_Claimed]:
        now = self.rt.clock()
        lease_until = now + timedelta(seconds=self.settings.webhook_lease_seconds)
        full = [eid for eid, n in self._held.items() if n >= self._hold_limit.get(eid, 0)]
        partial = {eid: n for eid, n in self._held.items() if eid not in full}
        if self._pg_direct:
            tick = time.monotonic()
            if expired or tick >= self._expired_check_at:
                expired, self._expired_check_at = True, tick + EXPIRED_CHECK_SECONDS
            jobs = await self._claim_pg(now, lease_until, limit, full, partial, expired)
        else:
            jobs = await self._claim_engine(now, lease_until, limit, full, partial)
        self._presign(jobs, now)
        return jobs

    def _presign(self, jobs: list[_Claimed], now: datetime) -> None:
        """Build the claimed deliveries' signed headers in one go, for the claim's second:
        one signature after another finds the HMAC's state in the CPU caches (in a PostgreSQL
        drain, 4-5 µs of CPU each, against 10-11 µs for a signature made between two
        requests). Most requests leave within that second; the others are signed again when
        sent, so the timestamp is always the request's."""
        timestamp = int(now.timestamp())
        for job in jobs:
            try:
                job.signed = (timestamp, self._sign(job, timestamp, job.payload, now))
            except Exception:  # noqa: S112 (an unusable secret fails the attempt when sent)
                continue

    async def _claim_pg(
        self,
        now: datetime,
        lease_until: datetime,
        limit: int,
        full: list[str],
        partial: dict[str, int],
        expired: bool,
    ) -> list[_Claimed]:
        rows = await self._links()[0].fetch(
            claim_sql(self._window, bool(full)),
            now,
            lease_until,
            self.worker_id,
            full,
            list(partial),
            list(partial.values()),
            self._hold_max,
            limit,
            expired,
        )
        endpoints: dict[str, _Endpoint] = {}
        out = []
        for r in rows:
            ep = endpoints.get(r["endpoint_id"])
            if ep is None:
                ep = endpoints[r["endpoint_id"]] = _Endpoint(
                    id=r["endpoint_id"],
                    url=r["url"],
                    headers=orjson.loads(r["headers"]),
                    api_version=r["api_version"],
                    rate_limit_per_second=r["rate_limit_per_second"],
                    secret_encrypted=r["secret_encrypted"],
                    previous_secret_encrypted=r["previous_secret_encrypted"],
                    previous_secret_expires_at=r["previous_secret_expires_at"],
                )
            out.append(
                _Claimed(
                    id=r["id"],
                    event_id=r["event_id"],
                    endpoint_id=r["endpoint_id"],
                    account_id=r["account_id"],
                    payload=r["body"].encode(),
                    attempt_count=r["attempt_count"],
                    trigger=r["trigger"],
                    lease_expires_at=lease_until,
                    endpoint=ep,
                )
            )
        return out

    def _claim_statement(
        self,
        now: datetime,
        limit: int,
        lease_until: datetime,
        full: list[str],
        partial: dict[str, int],
    ) -> Any:
        d, e = deliveries, webhook_endpoints
        held: Any = case(partial, value=d.c.endpoint_id, else_=0) if partial else literal(0)
        rate = e.c.rate_limit_per_second
        hold_max = literal(self._hold_max)
        # Per endpoint: what this worker may still hold of it, and no more than a second of
        # its rate.
        room = (
            case((and_(rate.is_not(None), rate > 0, rate < hold_max), rate), else_=hold_max) - held
        )
        candidates = (
            select(d.c.id, d.c.endpoint_id, d.c.next_attempt_at, room.label("room"))
            .select_from(d.join(e, e.c.id == d.c.endpoint_id))
            .where(self._due(now), e.c.status == "enabled")
            .order_by(d.c.next_attempt_at, d.c.id)
            .limit(self._window)
        )
        if full:
            candidates = candidates.where(d.c.endpoint_id.not_in(full))
        cand = candidates.subquery("cand")
        ranked = select(
            cand.c.id,
            cand.c.room,
            func.row_number()
            .over(partition_by=cand.c.endpoint_id, order_by=(cand.c.next_attempt_at, cand.c.id))
            .label("rn"),
        ).subquery("ranked")
        chosen = select(ranked.c.id).where(ranked.c.rn <= ranked.c.room)
        # The due test is repeated on the locked rows themselves: PostgreSQL re-checks it
        # against the newest version, so a row another worker just claimed is skipped.
        mine = d.alias("mine")  # an alias, so the subquery is not correlated to the UPDATE
        locked = (
            select(mine.c.id)
            .where(mine.c.id.in_(chosen), self._due(now, mine))
            .order_by(mine.c.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return (
            update(d)
            .where(d.c.id.in_(locked), self._due(now))
            .values(
                status="delivering",
                lease_owner=self.worker_id,
                lease_expires_at=lease_until,
                updated_at=now,
            )
            .returning(
                d.c.id,
                d.c.event_id,
                d.c.endpoint_id,
                d.c.account_id,
                d.c.body,
                d.c.attempt_count,
                d.c.trigger,
            )
        )

    async def _claim_engine(
        self,
        now: datetime,
        lease_until: datetime,
        limit: int,
        full: list[str],
        partial: dict[str, int],
    ) -> list[_Claimed]:
        e = webhook_endpoints
        stmt = self._claim_statement(now, limit, lease_until, full, partial)
        async with self.rt.engine.begin() as conn:
            rows = (await conn.execute(stmt)).all()
            if not rows:
                return []
            endpoint_ids = {r.endpoint_id for r in rows}
            endpoints = {
                ep.id: _Endpoint.of(ep)
                for ep in await conn.execute(select(e).where(e.c.id.in_(endpoint_ids)))
            }
        return [
            _Claimed(
                id=r.id,
                event_id=r.event_id,
                endpoint_id=r.endpoint_id,
                account_id=r.account_id,
                payload=r.body.encode(),
                attempt_count=r.attempt_count,
                trigger=r.trigger,
                lease_expires_at=lease_until,
                endpoint=endpoints[r.endpoint_id],
            )
            for r in rows
            if r.endpoint_id in endpoints
        ]

    # -- delivering --

    def _start_senders(self, endpoint_id: str) -> None:
        """Start loops for ``endpoint_id``'s waiting deliveries, up to its cap: the cap limits
        requests in flight at the receiver (recording happens after a loop has moved on)."""
        queue = self._queues[endpoint_id]
        running = self._senders.get(endpoint_id, 0)
        start = min(self.settings.webhook_endpoint_concurrency - running, len(queue))
        if start <= 0:
            return
        self._senders[endpoint_id] = running + start
        for _ in range(start):
            self._spawn(self._send_loop(endpoint_id, queue), f"send:{endpoint_id}")

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_loop(self, endpoint_id: str, queue: deque[_Claimed]) -> None:
        try:
            while queue:
                await self._deliver(queue.popleft())
        finally:
            # No await between the empty queue and here: a job queued meanwhile finds the
            # count already lowered and starts a loop of its own.
            left = self._senders.get(endpoint_id, 1) - 1
            if left > 0:
                self._senders[endpoint_id] = left
            else:
                self._senders.pop(endpoint_id, None)
                if not queue and self._queues.get(endpoint_id) is queue:
                    del self._queues[endpoint_id]

    async def _deliver(self, job: _Claimed) -> None:
        """Send ``job`` and hand its outcome to be recorded (without waiting for that)."""
        answered = recording = False
        try:
            async with self._sending:
                rate = job.endpoint.rate_limit_per_second
                if rate and rate > 0:
                    bucket = self._buckets.get(job.endpoint_id)
                    if bucket is None or bucket.rate != rate:
                        bucket = self._buckets[job.endpoint_id] = _TokenBucket(rate)
                    await bucket.take()
                # A prefetched delivery may have waited long in its endpoint's queue.
                started_at = self.rt.clock()
                if job.lease_expires_at < started_at + self._lease_slack and not (
                    await self._extend_lease(job, started_at)
                ):
                    log.info("delivery %s was taken over by another worker", job.id)
                    return
                outcome = await self._attempt(job, started_at)
            answered = True
            self._release(job.endpoint_id)
            if outcome.success:
                self._record_success(job, started_at, outcome)
            else:
                self._spawn(self._record_failure(job, started_at, outcome), f"record:{job.id}")
            recording = True
        except asyncio.CancelledError:
            raise
        except Exception:
            # The lease runs out and the delivery is tried again: at least once, never lost.
            log.exception("delivery %s could not be completed", job.id)
        finally:
            if not answered:
                self._release(job.endpoint_id)
            if not recording:
                self._finished()

    def _finished(self, count: int = 1) -> None:
        """``count`` claimed deliveries are recorded (or given up on): room for more claims."""
        self._unfinished = max(0, self._unfinished - count)
        if self._saturated and self._unfinished <= self._max_held // 2:
            self._saturated = False
            self._kick.set()
        if not self._unfinished:
            self._idle.set()

    def _release(self, endpoint_id: str) -> None:
        """``endpoint_id``'s delivery has its answer (or gave up): make room for another."""
        left = self._held.get(endpoint_id, 1) - 1
        if left > 0:
            self._held[endpoint_id] = left
        else:
            self._held.pop(endpoint_id, None)
            self._hold_limit.pop(endpoint_id, None)
        # Claim again once a full endpoint has drained by half, so that claims come in
        # batches rather than one per finished delivery.
        if endpoint_id in self._full and left <= self._hold_limit.get(endpoint_id, 0) // 2:
            self._full.discard(endpoint_id)
            self._kick.set()

    async def _extend_lease(self, job: _Claimed, now: datetime) -> bool:
        """Extend a lease that could run out during the request; False if it is lost."""
        until = now + max(timedelta(seconds=self.settings.webhook_lease_seconds), self._lease_slack)
        async with self.rt.engine.begin() as conn:
            row = (
                await conn.execute(
                    update(deliveries)
                    .where(deliveries.c.id == job.id, self._mine)
                    .values(lease_expires_at=until)
                    .returning(deliveries.c.id)
                )
            ).first()
        job.lease_expires_at = until
        return row is not None

    def _session_for_delivery(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = urls.make_connector(
                allowed_networks=self._allowed,
                ssl_context=urls.make_ssl_context(self.settings.webhook_ca_bundle),
                limit=self.settings.webhook_worker_concurrency,
                limit_per_host=self.settings.webhook_endpoint_concurrency,
            )
            # No cookies carried between receivers, no proxies from the environment.
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False
            )
        return self._session

    def _headers(self, job: _Claimed, timestamp: int, body: bytes, now: datetime) -> dict[str, str]:
        signed = job.signed
        if signed is not None and signed[0] == timestamp:
            return signed[1]
        return self._sign(job, timestamp, body, now)

    def _sign(self, job: _Claimed, timestamp: int, body: bytes, now: datetime) -> dict[str, str]:
        """The request's headers: the endpoint's and ours, and the signature for ``timestamp``."""
        ep = job.endpoint
        headers = ep.base_headers.copy()
        headers["webhook-id"] = job.event_id
        headers["webhook-timestamp"] = str(timestamp)
        headers["webhook-signature"] = signing.signature_header(
            self._signing_secrets(ep, now), job.event_id, timestamp, body
        )
        return headers

    def _signing_secrets(self, ep: _Endpoint, now: datetime) -> list[bytes]:
        """``signing_secrets``, remembered per encrypted secret: decrypting costs more than
        signing."""
        expires = ep.previous_secret_expires_at
        overlap = bool(ep.previous_secret_encrypted and expires is not None and expires > now)
        key = (ep.secret_encrypted, ep.previous_secret_encrypted if overlap else None)
        found = self._secrets.get(key)
        if found is None:
            found = signing_secrets(self.rt, ep.secrets(), now)
            if len(self._secrets) >= 1024:
                self._secrets.clear()
            self._secrets[key] = found
        return found

    def _url_problem(self, url: str) -> tuple[str, str] | None:
        """Why ``url`` cannot be sent to, as (failure kind, message); remembered per URL."""
        if url in self._url_checks:
            return self._url_checks[url]
        problem: tuple[str, str] | None = None
        message = _url_problem(url, self.settings.webhook_allow_http)
        if message is not None:
            problem = (INVALID_URL, message)
        else:
            try:
                urls.check_literal_host(url, self._allowed)
            except urls.ForbiddenAddressError as exc:
                problem = (FORBIDDEN_ADDRESS, str(exc)[:MAX_ERROR_CHARS])
        if len(self._url_checks) >= 1024:
            self._url_checks.clear()
        self._url_checks[url] = problem
        return problem

    async def _attempt(self, job: _Claimed, now: datetime) -> Outcome:
        started = time.monotonic()

        def took() -> int:
            return int((time.monotonic() - started) * 1000)

        url = job.endpoint.url
        problem = self._url_problem(url)
        if problem is not None:
            return Outcome(False, failure_kind=problem[0], error=problem[1], duration_ms=took())
        body = job.payload
        try:
            headers = self._headers(job, int(now.timestamp()), body, now)
        except Exception as exc:  # an undecryptable or malformed secret: our fault, logged
            log.exception("delivery %s: cannot sign", job.id)
            return Outcome(
                False,
                failure_kind=INTERNAL_ERROR,
                duration_ms=took(),
                error=f"cannot sign the request: {type(exc).__name__}",
            )
        try:
            # aiohttp's total timeout (one timer per request) covers the name lookup, connect,
            # TLS, the status line and reading the answer's body.
            return await self._post(url, headers, body, took)
        except Exception as exc:
            kind, message = classify(exc)
            if kind == INTERNAL_ERROR:
                log.exception("delivery %s: unexpected error", job.id)
            return Outcome(
                False, failure_kind=kind, error=message[:MAX_ERROR_CHARS], duration_ms=took()
            )

    async def _post(
        self,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        took: Callable[[], int],
    ) -> Outcome:
        session = self._session_for_delivery()
        async with session.post(
            url,
            data=body,
            headers=headers,
            allow_redirects=False,
            timeout=self._timeout,
        ) as resp:
            status = resp.status
            error: str | None = None
            try:
                raw = await _read_prefix(resp, self.settings.webhook_response_body_bytes)
            except (aiohttp.ClientError, TimeoutError) as exc:
                # The status line arrived; the rest of the answer did not. The status decides.
                raw, error = b"", f"reading the answer failed: {classify(exc)[1]}"
            text = raw.decode("utf-8", errors="replace")
            retry_after = resp.headers.get("Retry-After")
            location = resp.headers.get("Location")
        if 200 <= status < 300:
            return Outcome(True, status, response_body=text, error=error, duration_ms=took())
        if 300 <= status < 400:
            where = f" to {location}" if location else ""
            return Outcome(
                False,
                status,
                REDIRECT,
                f"HTTP {status}: redirect{where} not followed",
                text,
                retry_after,
                took(),
            )
        return Outcome(False, status, HTTP_STATUS, f"HTTP {status}", text, retry_after, took())

    # -- recording successes, in batches --

    def _record_success(self, job: _Claimed, started_at: datetime, outcome: Outcome) -> None:
        """Queue the success for the next batch, and make sure a writer will take it."""
        self._successes.append(_Success(job, started_at, outcome))
        if len(self._successes) >= RECORD_BATCH:
            self._batch_full.set()
        writers = RECORD_WRITERS if self._pg_direct else 1  # SQLite has one writer anyway
        # One writer at a time while it keeps up; another only once a full batch waits.
        if (
            not self._flusher_starting
            and not self._lingering
            and len(self._flushers) < writers
            and (not self._flushers or len(self._successes) >= RECORD_BATCH)
        ):
            self._flusher_starting = True
            task = asyncio.create_task(self._flush(), name=f"record:{self.worker_id}")
            self._flushers.add(task)
            task.add_done_callback(self._flushers.discard)

    async def _flush(self) -> None:
        """Record the successes in batches: each waits up to ``RECORD_LINGER_SECONDS`` (on
        PostgreSQL) for more to join it, so that one commit covers many."""
        self._flusher_starting = False
        linger = RECORD_LINGER_SECONDS if self._pg_direct else 0.0
        try:
            await self._flush_batches(linger)
        finally:
            # Leave the set now, not in a done callback a loop turn later: a success queued
            # in between would otherwise see a writer that is gone and start none.
            self._flushers.discard(asyncio.current_task())  # type: ignore[arg-type]

    async def _flush_batches(self, linger: float) -> None:
        while self._successes:
            if linger and len(self._successes) < RECORD_BATCH:
                self._batch_full.clear()
                self._lingering = True
                try:
                    await asyncio.wait_for(self._batch_full.wait(), linger)
                except TimeoutError:
                    pass
                finally:
                    self._lingering = False
            batch = self._successes[:RECORD_BATCH]
            del self._successes[:RECORD_BATCH]
            try:
                ours = await self._write_successes(batch)
            except Exception:
                # Their leases run out and they are sent again: at least once, never lost.
                log.exception("recording %d delivered requests failed", len(batch))
                ours = set()
            else:
                self.attempted += len(ours)
                for item in batch:
                    if item.job.id not in ours:
                        log.info(
                            "delivery %s: lease lost before recording; another worker has it",
                            item.job.id,
                        )
            self._finished(len(batch))

    async def _write_successes(self, batch: list[_Success]) -> set[str]:
        for attempt in range(3):
            try:
                if self._pg_direct:
                    return await self._write_successes_pg(batch)
                return await self._write_successes_engine(batch)
            except (DBAPIError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                # Rolled back (a deadlock, a busy store, a lost connection): it can be retried.
                if attempt == 2:
                    raise
                log.warning("recording %d deliveries failed, retrying", len(batch), exc_info=True)
                await asyncio.sleep(0.05 * 4**attempt)
        raise AssertionError("unreachable")

    async def _write_successes_pg(self, batch: list[_Success]) -> set[str]:
        records = self._links()[1]
        link = next((link for link in records if not link.busy), records[0])
        rows = await link.fetch(
            RECORD_SUCCESSES_SQL,
            self.worker_id,
            self.rt.clock(),
            success_batch(
                [
                    {
                        "id": s.job.id,
                        "attempt_number": s.job.attempt_count + 1,
                        "status_code": s.outcome.status_code,
                        "attempt_id": new_id("att"),
                        "attempted_at": s.started_at,
                        "duration_ms": s.outcome.duration_ms,
                        "error": s.outcome.error,
                        "response_body": s.outcome.response_body,
                    }
                    for s in batch
                ]
            ),
            [s.job.id for s in batch],
        )
        return {r["id"] for r in rows}

    async def _write_successes_engine(self, batch: list[_Success]) -> set[str]:
        d, e = deliveries, webhook_endpoints
        now = self.rt.clock()
        async with self.rt.engine.begin() as conn:
            # A write first: it takes SQLite's write lock, and proves which leases are ours.
            ours = set(
                (
                    await conn.execute(
                        update(d)
                        .where(d.c.id.in_([s.job.id for s in batch]), self._mine)
                        .values(updated_at=now)
                        .returning(d.c.id)
                    )
                ).scalars()
            )
            mine = [s for s in batch if s.job.id in ours]
            if not mine:
                return ours
            await conn.execute(
                update(d)
                .where(d.c.id == bindparam("b_id"))
                .values(
                    status="succeeded",
                    attempt_count=bindparam("b_count"),
                    next_attempt_at=None,
                    lease_owner=None,
                    lease_expires_at=None,
                    updated_at=now,
                    last_status_code=bindparam("b_code"),
                    last_failure_kind=None,
                    succeeded_at=now,
                ),
                [
                    {
                        "b_id": s.job.id,
                        "b_count": s.job.attempt_count + 1,
                        "b_code": s.outcome.status_code,
                    }
                    for s in mine
                ],
            )
            await conn.execute(
                update(e)
                .where(
                    e.c.id.in_({s.job.endpoint_id for s in mine}),
                    e.c.failing_since.is_not(None),
                )
                .values(failing_since=None, updated_at=now)
            )
            await conn.execute(
                attempts.insert(), [_attempt_row(s.job, s.started_at, s.outcome) for s in mine]
            )
        return ours

    # -- recording failures, one at a time --

    async def _record_failure(self, job: _Claimed, started_at: datetime, outcome: Outcome) -> None:
        try:
            await self._record(job, started_at, outcome)
        except Exception:
            log.exception("delivery %s: recording the failed attempt failed", job.id)
        finally:
            self._finished()

    async def _record(self, job: _Claimed, started_at: datetime, outcome: Outcome) -> None:
        for attempt in range(3):
            try:
                async with self.rt.engine.begin() as conn:
                    recorded = await self._record_in(conn, job, started_at, outcome)
                self.attempted += recorded
                return
            except DBAPIError:
                # A deadlock or a busy store rolled everything back: the write can be retried.
                if attempt == 2:
                    raise
                log.warning("recording delivery %s failed, retrying", job.id, exc_info=True)
                await asyncio.sleep(0.05 * 4**attempt)

    async def _record_in(
        self, conn: AsyncConnection, job: _Claimed, started_at: datetime, outcome: Outcome
    ) -> bool:
        d, e = deliveries, webhook_endpoints
        now = self.rt.clock()
        # First statement is a write: it takes SQLite's write lock and PostgreSQL's row lock,
        # and proves the lease is still ours.
        ours = (
            await conn.execute(
                update(d)
                .where(d.c.id == job.id, self._mine)
                .values(updated_at=now)
                .returning(d.c.id)
            )
        ).first()
        if ours is None:
            log.info("delivery %s: lease lost before recording; another worker has it", job.id)
            return False

        status, next_at, disable_reason = "failed", None, None
        if outcome.success:
            status = "succeeded"
            await conn.execute(
                update(e)
                .where(e.c.id == job.endpoint_id, e.c.failing_since.is_not(None))
                .values(failing_since=None, updated_at=now)
            )
        else:
            ep = (
                await conn.execute(
                    select(e.c.status, e.c.failing_since)
                    .where(e.c.id == job.endpoint_id)
                    .with_for_update()
                )
            ).first()
            failing_since = ep.failing_since if ep is not None else None
            if ep is not None and failing_since is None:
                failing_since = now
                await conn.execute(
                    update(e)
                    .where(e.c.id == job.endpoint_id)
                    .values(failing_since=now, updated_at=now)
                )
            limit = timedelta(hours=self.settings.webhook_disable_after_hours)
            if ep is None or ep.status != "enabled":
                pass  # disabled meanwhile: its deliveries stop here
            elif outcome.status_code == 410:
                disable_reason = "410 Gone"
            elif failing_since is not None and now - failing_since >= limit:
                disable_reason = f"failing continuously since {_iso(failing_since)}"
            else:
                delay = retry_delay(
                    job.attempt_count + 1,
                    schedule=self.settings.retry_schedule,
                    jitter=self.settings.webhook_retry_jitter,
                    status_code=outcome.status_code,
                    retry_after=outcome.retry_after,
                    max_retry_after=self.settings.webhook_max_retry_after_seconds,
                    now=now,
                    rng=self.rng,
                )
                if delay is not None:
                    status, next_at = "pending", now + timedelta(seconds=delay)

        values: dict[str, Any] = {
            "status": status,
            "attempt_count": job.attempt_count + 1,
            "next_attempt_at": next_at,
            "lease_owner": None,
            "lease_expires_at": None,
            "updated_at": now,
            "last_status_code": outcome.status_code,
            "last_failure_kind": outcome.failure_kind,
        }
        if outcome.success:
            values["succeeded_at"] = now
        await conn.execute(update(d).where(d.c.id == job.id).values(**values))
        await conn.execute(
            attempts.insert().values(**_attempt_row(job, started_at, outcome, next_at))
        )
        if disable_reason is not None:
            await disable_endpoint(conn, job.endpoint_id, disable_reason, now)
            log.warning("webhook endpoint %s disabled: %s", job.endpoint_id, disable_reason)
        return True


def _attempt_row(
    job: _Claimed, started_at: datetime, outcome: Outcome, next_at: datetime | None = None
) -> dict[str, Any]:
    return {
        "id": new_id("att"),
        "delivery_id": job.id,
        "event_id": job.event_id,
        "endpoint_id": job.endpoint_id,
        "account_id": job.account_id,
        "attempt_number": job.attempt_count + 1,
        "trigger": job.trigger,
        "attempted_at": started_at,
        "duration_ms": outcome.duration_ms,
        "status_code": outcome.status_code,
        "success": 1 if outcome.success else 0,
        "failure_kind": outcome.failure_kind,
        "error": outcome.error,
        "response_body": outcome.response_body,
        "next_attempt_at": next_at,
    }


# --- retention ----------------------------------------------------------------------------------


async def purge_expired(rt: Runtime, *, batch: int = 1000) -> int:
    """Delete attempts and events older than ``event_retention_days`` (an event's deliveries
    and all their attempts go with it); events with a delivery still under way are kept.
    Returns the rows deleted (events and attempts)."""
    cutoff = rt.clock() - timedelta(days=rt.settings.event_retention_days)
    total = 0
    old_attempts = select(attempts.c.id).where(attempts.c.attempted_at < cutoff).limit(batch)
    under_way = exists().where(
        deliveries.c.event_id == events.c.id, deliveries.c.status.in_(("pending", "delivering"))
    )
    old_events = select(events.c.id).where(events.c.created_at < cutoff, ~under_way).limit(batch)
    while True:  # small transactions: never one huge lock
        async with rt.engine.begin() as conn:
            deleted = (await conn.execute(
                delete(attempts).where(attempts.c.id.in_(old_attempts)))).rowcount or 0
        total += deleted
        if deleted < batch:
            break
    while True:
        async with rt.engine.begin() as conn:
            ids = list((await conn.execute(
                delete(events).where(events.c.id.in_(old_events)).returning(events.c.id)
            )).scalars())
            if ids:  # and the events' other attempts (a resend's may be recent)
                gone = await conn.execute(delete(attempts).where(attempts.c.event_id.in_(ids)))
                total += len(ids) + (gone.rowcount or 0)
        if len(ids) < batch:
            break
    return total


def make_job(rt: Runtime, interval: float = 3600.0) -> Job:
    """The retention purge as a periodic job for ``maintlink.worker.Worker``."""
    from maintlink.worker import Job  # here, so that worker.py may import this module

    async def purge() -> None:
        deleted = await purge_expired(rt)
        if deleted:
            log.info("purged %d expired webhook events and attempts", deleted)

    return Job("purge-webhook-events", interval, purge)
