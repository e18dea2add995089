"""The API request log: method, path, status, latency and request id of every authenticated
`/api` request, per account and connection, for the dashboard and for support.

Recording must not slow requests down, so the request path only appends a tuple to an
in-memory buffer (`RequestLogWriter.capture`); a background task started with the app
inserts the buffer in batches (every `request_log_flush_seconds`, or at once when a batch
is full) and purges rows beyond the retention and the row cap. If the store is unreachable
the buffer keeps the newest `request_log_buffer_rows` rows and retries; beyond that the
oldest are dropped, counted and logged: this is a diagnostic log, not an audit trail.

Headers, query strings and bodies are never recorded: they can hold secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Row, delete, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from maintlink.config import Settings
from maintlink.ids import new_id
from maintlink.store.tables import request_log

log = logging.getLogger("maintlink.request_log")

PURGE_EVERY_SECONDS = 60.0
WARN_EVERY_SECONDS = 60.0
MAX_PATH = 512
MAX_ID = 40
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")

# (id, account_id, connection_id, key_id, request_id, method, path, status, duration_ms, at)
Entry = tuple[str, str, str | None, str | None, str, str, str, int, float, float]
_COLUMNS = ("id", "account_id", "connection_id", "key_id", "request_id", "method", "path",
            "status", "duration_ms", "at")


class RequestLogWriter:
    """One per app process. `capture` is synchronous and does no I/O."""

    def __init__(self, engine: AsyncEngine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.enabled = settings.request_log_enabled
        self._buffer: deque[Entry] = deque(maxlen=settings.request_log_buffer_rows)
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._last_purge = 0.0
        self._last_warning = -WARN_EVERY_SECONDS
        self.dropped = 0  # rows lost because the buffer was full
        self.written = 0

    # -- the request path --

    def capture(
        self, state: Mapping[str, Any], method: str, path: str, status: int, request_id: str,
        duration_ms: float,
    ) -> None:
        """Called by the middleware after every `/api` request. Requests whose caller was
        not identified (no valid credential) belong to no account and are not kept."""
        account_id = state.get("account_id")
        if not self.enabled or not account_id:
            return
        if len(self._buffer) == self._buffer.maxlen:
            self.dropped += 1  # the deque drops the oldest row on append
        connection_id = state.get("connection_id")
        if connection_id is not None and len(connection_id) > MAX_ID:
            connection_id = None  # a made-up id from a query string: nothing to attribute
        self._buffer.append((
            new_id("rq"), account_id, connection_id, state.get("key_id"),
            request_id[:128], method[:10], path[:MAX_PATH], status, round(duration_ms, 2),
            time.time(),
        ))
        if len(self._buffer) >= self.settings.request_log_batch_rows:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    # -- the background task --

    async def run(self) -> None:
        """Flush until `stop()`, then flush what is left."""
        interval = self.settings.request_log_flush_seconds
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            self._wake.clear()
            try:
                await self.flush()
                if time.monotonic() - self._last_purge >= PURGE_EVERY_SECONDS:
                    self._last_purge = time.monotonic()
                    async with self.engine.begin() as conn:
                        await purge(conn, self.settings, datetime.now(UTC))
            except Exception:  # the loop must survive a store outage
                if time.monotonic() - self._last_warning >= WARN_EVERY_SECONDS:
                    self._last_warning = time.monotonic()  # once a minute, not every second
                    log.warning("request log flush failed; %d rows wait, %d dropped so far",
                                self.pending, self.dropped, exc_info=True)
        with contextlib.suppress(Exception):
            await self.flush()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def flush(self) -> int:
        """Write the buffer in batches; a failed batch goes back to the front."""
        written = 0
        async with self._flush_lock:
            while self._buffer:
                size = self.settings.request_log_batch_rows
                batch = [self._buffer.popleft() for _ in range(min(size, len(self._buffer)))]
                try:
                    async with self.engine.begin() as conn:
                        await conn.execute(request_log.insert(), [_row(e) for e in batch])
                except Exception:
                    # Back in front, newest kept if the buffer filled up meanwhile.
                    room = (self._buffer.maxlen or 0) - len(self._buffer)
                    keep = batch[-room:] if room > 0 else []
                    self.dropped += len(batch) - len(keep)
                    self._buffer.extendleft(reversed(keep))
                    raise
                written += len(batch)
        self.written += written
        return written


def _row(entry: Entry) -> dict[str, Any]:
    row = dict(zip(_COLUMNS, entry, strict=True))
    row["at"] = datetime.fromtimestamp(entry[9], UTC)
    # One unstorable row must not block the batch forever (it would be retried endlessly).
    for key in ("path", "request_id", "method"):
        row[key] = _storable(row[key])
    return row


def _storable(text: str) -> str:
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")


async def purge(conn: AsyncConnection, settings: Settings, now: datetime) -> int:
    """Forget rows older than the retention, then the oldest beyond the row cap."""
    cutoff = now - timedelta(days=settings.request_log_retention_days)
    removed = (await conn.execute(delete(request_log).where(request_log.c.at < cutoff))).rowcount
    # The newest row past the cap, found through the primary key index (ids sort by time).
    boundary = (await conn.execute(
        select(request_log.c.id).order_by(request_log.c.id.desc())
        .offset(settings.request_log_max_rows).limit(1))).scalar()
    if boundary is not None:
        removed += (await conn.execute(
            delete(request_log).where(request_log.c.id <= boundary))).rowcount
    return int(removed or 0)


# --- reads ------------------------------------------------------------------------------------

async def list_requests(
    conn: AsyncConnection,
    account_id: str,
    *,
    after: str | None,
    limit: int,
    connection_id: str | None = None,
    request_id: str | None = None,
    status_class: str | None = None,
    method: str | None = None,
) -> list[Row[Any]]:
    """Newest first. `request_id` matches exactly (what support is given)."""
    query = select(request_log).where(request_log.c.account_id == account_id)
    if request_id:
        query = query.where(request_log.c.request_id == request_id)
    if connection_id:
        query = query.where(request_log.c.connection_id == connection_id)
    if status_class in STATUS_CLASSES:
        low = int(status_class[0]) * 100
        query = query.where(request_log.c.status >= low, request_log.c.status < low + 100)
    if method:
        query = query.where(request_log.c.method == method.upper())
    if after:
        query = query.where(request_log.c.id < after)
    return list((await conn.execute(
        query.order_by(request_log.c.id.desc()).limit(limit))).all())


def request_view(row: Row[Any]) -> dict[str, Any]:
    return {
        "object": "api_request", "id": row.id, "request_id": row.request_id,
        "method": row.method, "path": row.path, "status": row.status,
        "duration_ms": row.duration_ms, "connection_id": row.connection_id,
        "key_id": row.key_id, "at": row.at,
    }
