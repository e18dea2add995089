"""A durable local queue for received webhooks: SQLite, one file, no server.

The receiver appends a verified delivery and answers 200 only after the row is committed, so an
acknowledged webhook survives a crash of the receiving process (and, with the default
``synchronous="FULL"``, of the machine). Application code then takes events out at its own pace:

    queue = EventQueue("events.sqlite3")
    event = queue.next()            # leased for ``lease_timeout`` seconds
    if event is not None:
        handle(event.payload)
        queue.ack(event.id)         # or queue.nack(event.id) to hand it out again

Guarantees:

* **De-duplication** by ``webhook-id``: a redelivery of an id already seen (within
  ``dedupe_window``, 30 days by default, or forever) is dropped and counted.
* **Per-connection order**: events of one connection come out in ``sequence`` order, one at a
  time. Sequence *n* is handed out once *n-1* was acknowledged, or once the gap before it has
  waited ``gap_timeout`` seconds (the missing event may still be on its way as a retry). An event
  that arrives after a later one was already handed out comes out at once, marked
  ``in_order=False``. Account-level events (no connection or no sequence) come out in arrival
  order.
* **Leases**: a handed-out event that is neither acknowledged nor released within its lease
  returns to the queue, so a consumer that crashed loses nothing.

Several processes may share one file (the ``maintlink receive`` server and a separate consumer,
say): write transactions start with ``BEGIN IMMEDIATE`` so two consumers never lease the same
event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["Delivery", "EventQueue", "QueuedEvent", "iterate"]

DAY = 86_400.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id            INTEGER PRIMARY KEY,          -- arrival order
    webhook_id    TEXT NOT NULL UNIQUE,
    type          TEXT,
    connection_id TEXT,
    sequence      INTEGER,
    body          BLOB NOT NULL,                -- exactly as received (and signed)
    headers       TEXT NOT NULL,                -- JSON object
    received_at   REAL NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,   -- times handed out
    lease_until   REAL,                         -- not available before this time
    acked_at      REAL
);
CREATE INDEX IF NOT EXISTS events_pending
    ON events (connection_id, sequence, received_at, lease_until) WHERE acked_at IS NULL;
CREATE INDEX IF NOT EXISTS events_unordered ON events (id)
    WHERE acked_at IS NULL AND (connection_id IS NULL OR sequence IS NULL);
CREATE INDEX IF NOT EXISTS events_acked ON events (acked_at) WHERE acked_at IS NOT NULL;
-- Ids seen, kept longer than the events themselves: the de-duplication memory.
CREATE TABLE IF NOT EXISTS seen (
    webhook_id TEXT PRIMARY KEY,
    seen_at    REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_by_time ON seen (seen_at);
-- Per connection, the highest sequence acknowledged (what "next in line" means) and the
-- highest handed out (an event below it arrived late).
CREATE TABLE IF NOT EXISTS cursors (
    connection_id TEXT PRIMARY KEY,
    acked         INTEGER NOT NULL DEFAULT 0,
    released      INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
"""

# Available = not acknowledged and not leased. Per connection, only the head (lowest sequence not
# acknowledged) may go out, only while nothing else of that connection is out, and only if it is
# next in line, older than what was acknowledged (late), or the gap before it has waited long
# enough. "Waited" counts from the earliest arrival among the connection's pending events: that
# arrival proved the gap exists. The GROUP BY reads only the covering partial index. Both halves
# return the columns _event() reads, in its order.
_AVAILABLE = """
WITH heads AS (
    SELECT connection_id, MIN(sequence) AS sequence, MIN(received_at) AS gap_since,
           MAX(COALESCE(lease_until, 0) > :now) AS busy
    FROM events
    WHERE acked_at IS NULL AND connection_id IS NOT NULL AND sequence IS NOT NULL
    GROUP BY connection_id
)
SELECT e.id, e.webhook_id, e.type, e.connection_id, e.sequence, e.body, e.headers,
       e.received_at, e.attempts,
       h.sequence = COALESCE(c.acked, 0) + 1 AND h.sequence >= COALESCE(c.released, 0)
FROM heads h
JOIN events e ON e.id = (
    SELECT MIN(id) FROM events
    WHERE connection_id = h.connection_id AND sequence = h.sequence AND acked_at IS NULL
)
LEFT JOIN cursors c ON c.connection_id = h.connection_id
WHERE NOT h.busy
  AND (h.sequence <= COALESCE(c.acked, 0) + 1 OR h.gap_since <= :now - :gap_timeout)
UNION ALL
SELECT e.id, e.webhook_id, e.type, e.connection_id, e.sequence, e.body, e.headers,
       e.received_at, e.attempts, 1
FROM events e
WHERE e.acked_at IS NULL AND (e.connection_id IS NULL OR e.sequence IS NULL)
  AND (e.lease_until IS NULL OR e.lease_until <= :now)
ORDER BY 1
LIMIT :limit
"""


@dataclass(frozen=True, slots=True)
class QueuedEvent:
    """One received webhook, as handed out by the queue."""

    id: str  # the webhook-id, which is the event id
    type: str | None
    connection_id: str | None
    sequence: int | None
    payload: dict[str, Any]  # the parsed body
    body: bytes = field(repr=False)  # the raw body, byte for byte as signed
    headers: dict[str, str] = field(repr=False)
    received_at: float  # unix seconds
    attempts: int  # how many times it was handed out, this time included
    # False when an earlier sequence of the same connection is missing (released after the gap
    # timeout) or was overtaken (this one arrived late): re-read the connection's state.
    in_order: bool


class EventQueue:
    """A durable, de-duplicating, per-connection ordered queue of received webhooks.

    Thread-safe: one SQLite connection behind a lock. Every call is a short transaction (well
    under a millisecond, plus one fsync when committing with ``synchronous="FULL"``); from async
    code call it through ``asyncio.to_thread`` so the fsync never stalls the event loop.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        gap_timeout: float = 60.0,
        lease_timeout: float = 60.0,
        dedupe_window: float | None = 30 * DAY,
        keep_acked: float = DAY,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Open (and create if needed) the queue at ``path``.

        ``gap_timeout``: how long an event waits for a missing earlier sequence. The first retry
        of a failed delivery comes 5 s later, the second 5 min later; a minute covers the common
        case without holding a connection's events back for long.
        ``dedupe_window``: how long an id is remembered (``None``: forever).
        ``keep_acked``: how long acknowledged events stay readable (never beyond the window).
        ``synchronous``: ``FULL`` survives power loss; ``NORMAL`` survives a crash of this
        process only, and is faster. Both keep every acknowledged 200.
        ``clock``: wall-clock seconds; stored times are shared across processes and restarts.
        """
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError("synchronous must be 'FULL' or 'NORMAL'")
        if gap_timeout < 0 or lease_timeout <= 0 or keep_acked < 0:
            raise ValueError("gap_timeout, keep_acked must be >= 0 and lease_timeout > 0")
        if dedupe_window is not None and dedupe_window <= 0:
            raise ValueError("dedupe_window must be positive, or None to remember ids forever")
        self.path = Path(path)
        self.gap_timeout = float(gap_timeout)
        self.lease_timeout = float(lease_timeout)
        self.dedupe_window = dedupe_window
        self.keep_acked = keep_acked if dedupe_window is None else min(keep_acked, dedupe_window)
        self._clock = clock
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []
        self._last_purge = 0.0
        if str(path) != ":memory:":  # in memory: for experiments only, nothing survives
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves.
        self._db: sqlite3.Connection | None = sqlite3.connect(
            str(path), timeout=10.0, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        with self._write() as db:
            # One statement at a time: executescript() would commit behind our back.
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)

    # --- life cycle ------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> EventQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front: no two processes can read the same
        # available rows and then both lease them.
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # a failed COMMIT (disk full) leaves it open
                    db.execute("ROLLBACK")
                raise

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the event queue is closed")
        return self._db

    # --- the receiving side ---------------------------------------------------------------

    def append(
        self,
        webhook_id: str,
        raw_body: bytes,
        headers: Mapping[str, str] | None = None,
        *,
        payload: Mapping[str, Any] | None = None,
    ) -> bool:
        """Store a verified delivery; ``False`` when its id was already seen (a duplicate).

        Returns only once the row is committed: answer 200 after this, never before. Pass
        ``payload`` when the body was already parsed (by ``verify``) to skip parsing it again.
        """
        if not isinstance(webhook_id, str) or not webhook_id.strip():
            raise ValueError("webhook_id must be a non-empty string")
        webhook_id = webhook_id.strip()
        raw_body = bytes(raw_body)
        if payload is None:
            payload = _parse(raw_body)
        connection_id = payload.get("connection_id")
        sequence = payload.get("sequence")
        event_type = payload.get("type")
        row = (
            webhook_id,
            event_type if isinstance(event_type, str) else None,
            connection_id if isinstance(connection_id, str) and connection_id else None,
            # bool is an int in Python, and a sequence beyond 64 bits cannot be ours.
            sequence
            if isinstance(sequence, int) and not isinstance(sequence, bool)
            and 0 <= sequence < 2**63
            else None,
            raw_body,
            json.dumps({str(k).lower(): str(v) for k, v in (headers or {}).items()}),
        )
        now = self._clock()
        with self._write() as db:
            added = db.execute(
                "INSERT OR IGNORE INTO seen (webhook_id, seen_at) VALUES (?, ?)", (webhook_id, now)
            ).rowcount == 1
            if added:
                # OR IGNORE: an event still pending when its id left the window is still here.
                added = db.execute(
                    "INSERT OR IGNORE INTO events (webhook_id, type, connection_id, sequence, "
                    "body, headers, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (*row, now),
                ).rowcount == 1
            _count(db, "received" if added else "duplicates")
        if added:
            self._notify()
        return added

    # --- the consuming side ---------------------------------------------------------------

    def consume(self, limit: int = 1, *, lease: float | None = None) -> list[QueuedEvent]:
        """Lease up to ``limit`` available events, in delivery order.

        At most one event per connection is out at a time, so a batch holds at most one per
        connection. Acknowledge each with ``ack``; one not acknowledged within ``lease`` seconds
        (default ``lease_timeout``) becomes available again.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        lease = self.lease_timeout if lease is None else lease
        if lease <= 0:
            raise ValueError("lease must be positive")
        now = self._clock()
        with self._write() as db:
            rows = db.execute(
                _AVAILABLE, {"now": now, "gap_timeout": self.gap_timeout, "limit": limit}
            ).fetchall()
            if rows:
                db.executemany(
                    "UPDATE events SET lease_until = ?, attempts = attempts + 1 WHERE id = ?",
                    [(now + lease, row[0]) for row in rows],
                )
                db.executemany(
                    "INSERT INTO cursors (connection_id, released) VALUES (?, ?) "
                    "ON CONFLICT (connection_id) DO UPDATE "
                    "SET released = MAX(released, excluded.released)",
                    [(row[3], row[4]) for row in rows if row[3] is not None and row[4] is not None],
                )
        self._maybe_purge(now)
        return [_event(row[1:], attempts_delta=1) for row in rows]

    def next(self, *, lease: float | None = None) -> QueuedEvent | None:
        """The next available event (leased), or ``None``."""
        events = self.consume(1, lease=lease)
        return events[0] if events else None

    def ack(self, event_id: str) -> bool:
        """Mark an event processed; the next one of its connection becomes available.

        ``False`` when there is no such unacknowledged event (already acknowledged, say).
        """
        now = self._clock()
        with self._write() as db:
            row = db.execute(
                "UPDATE events SET acked_at = ?, lease_until = NULL "
                "WHERE webhook_id = ? AND acked_at IS NULL RETURNING connection_id, sequence",
                (now, event_id),
            ).fetchone()
            if row is None:
                return False
            connection_id, sequence = row
            if connection_id is not None and sequence is not None:
                db.execute(
                    "INSERT INTO cursors (connection_id, acked) VALUES (?, ?) "
                    "ON CONFLICT (connection_id) DO UPDATE SET acked = MAX(acked, excluded.acked)",
                    (connection_id, sequence),
                )
            _count(db, "acked")
        return True

    def nack(self, event_id: str, *, delay: float = 0.0) -> bool:
        """Hand an event back (it stays first in line for its connection), after ``delay`` s."""
        if delay < 0:
            raise ValueError("delay must be zero or more seconds")
        until = self._clock() + delay if delay else None
        with self._write() as db:
            changed = db.execute(
                "UPDATE events SET lease_until = ? WHERE webhook_id = ? AND acked_at IS NULL",
                (until, event_id),
            ).rowcount == 1
        if changed:
            self._notify()
        return changed

    def pending(self, limit: int | None = None) -> list[QueuedEvent]:
        """Every unacknowledged event, in the order they will be handed out; leases nothing.

        Arrival order, except that each connection's events are sorted by sequence among the
        arrival slots they occupy.
        """
        with self._lock:
            rows = self._conn().execute(
                "SELECT "
                "e.webhook_id, e.type, e.connection_id, e.sequence, e.body, e.headers, "
                "e.received_at, e.attempts, 1 FROM events e WHERE e.acked_at IS NULL ORDER BY e.id"
            ).fetchall()
        slots: dict[str | None, list[tuple[Any, ...]]] = {}
        for row in rows:
            if row[2] is not None and row[3] is not None:
                slots.setdefault(row[2], []).append(row)
        by_connection = {
            key: iter(sorted(group, key=lambda r: (r[3], r[6]))) for key, group in slots.items()
        }
        ordered = [
            next(by_connection[row[2]]) if row[2] in by_connection and row[3] is not None else row
            for row in rows
        ]
        events = [_event(row, attempts_delta=0) for row in ordered]
        return events if limit is None else events[:limit]

    def stats(self) -> dict[str, int]:
        """``pending`` (not yet acknowledged, in flight included), ``in_flight`` (leased, or
        held back by ``nack(delay=...)``),
        ``received``, ``acked`` and ``duplicates`` (dropped) since the queue was created."""
        now = self._clock()
        with self._lock:
            db = self._conn()
            pending, in_flight = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(lease_until > ?), 0) FROM events "
                "WHERE acked_at IS NULL",
                (now,),
            ).fetchone()
            counters = dict(db.execute("SELECT name, value FROM counters").fetchall())
        return {
            "pending": int(pending),
            "in_flight": int(in_flight),
            "received": int(counters.get("received", 0)),
            "acked": int(counters.get("acked", 0)),
            "duplicates": int(counters.get("duplicates", 0)),
        }

    def purge(self) -> None:
        """Forget acknowledged events older than ``keep_acked`` and ids older than the window.

        Runs by itself about once a minute while events are consumed.
        """
        now = self._clock()
        with self._write() as db:
            db.execute(
                "DELETE FROM events WHERE acked_at IS NOT NULL AND acked_at < ?",
                (now - self.keep_acked,),
            )
            if self.dedupe_window is not None:
                db.execute(
                    "DELETE FROM seen WHERE seen_at < ? "
                    "AND webhook_id NOT IN (SELECT webhook_id FROM events)",
                    (now - self.dedupe_window,),
                )
        self._last_purge = now

    def _maybe_purge(self, now: float) -> None:
        if now - self._last_purge >= 60.0:
            self.purge()

    # --- wake-ups within this process -----------------------------------------------------

    def add_listener(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` (from any thread) when events may have become available in this
        process; returns a function that removes it. Other processes' changes are seen by
        polling."""
        with self._lock:
            self._listeners.append(callback)

        def remove() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._listeners.remove(callback)

        return remove

    def _notify(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for callback in listeners:
            # The event is committed by now: a listener's failure (its loop closed) must not
            # turn that into an error for the sender.
            with contextlib.suppress(Exception):
                callback()


def _parse(raw_body: bytes) -> Mapping[str, Any]:
    try:
        payload = json.loads(raw_body)
    except ValueError:
        raise ValueError("the webhook body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise ValueError("the webhook body is not a JSON object")
    return payload


def _count(db: sqlite3.Connection, name: str) -> None:
    db.execute(
        "INSERT INTO counters (name, value) VALUES (?, 1) "
        "ON CONFLICT (name) DO UPDATE SET value = value + 1",
        (name,),
    )


def _event(row: tuple[Any, ...], *, attempts_delta: int) -> QueuedEvent:
    webhook_id, type_, connection_id, sequence, body, headers, received_at, attempts, in_order = row
    body = bytes(body)
    return QueuedEvent(
        id=webhook_id,
        type=type_,
        connection_id=connection_id,
        sequence=sequence,
        payload=dict(_parse(body)),
        body=body,
        headers=json.loads(headers),
        received_at=received_at,
        attempts=attempts + attempts_delta,
        in_order=bool(in_order),
    )


# --- async consumption --------------------------------------------------------------------


class Delivery:
    """An event handed to application code by ``iterate``, with its acknowledgement."""

    __slots__ = ("_queue", "_settled", "queued")

    def __init__(self, queue: EventQueue, queued: QueuedEvent) -> None:
        self._queue = queue
        self._settled = False
        self.queued = queued

    @property
    def event(self) -> dict[str, Any]:
        """The parsed webhook body: ``id``, ``type``, ``connection_id``, ``sequence``, ``data``."""
        return self.queued.payload

    @property
    def settled(self) -> bool:
        return self._settled

    async def ack(self) -> bool:
        """Processed: never hand it out again."""
        self._settled = True
        return await asyncio.to_thread(self._queue.ack, self.queued.id)

    async def nack(self, *, delay: float = 0.0) -> bool:
        """Not processed: hand it out again (after ``delay`` seconds)."""
        self._settled = True
        return await asyncio.to_thread(self._queue.nack, self.queued.id, delay=delay)

    def __repr__(self) -> str:
        return f"Delivery({self.queued!r})"


async def iterate(
    queue: EventQueue,
    *,
    auto_ack: bool = True,
    batch: int = 1,
    lease: float | None = None,
    poll_interval: float = 1.0,
    stop: asyncio.Event | None = None,
) -> AsyncIterator[Delivery]:
    """Yield events as they become available, forever (or until ``stop`` is set).

        async with contextlib.aclosing(iterate(queue)) as deliveries:
            async for delivery in deliveries:
                await handle(delivery.event)

    With ``auto_ack`` an event is acknowledged when the loop asks for the next one, that is
    after its body finished without an exception; call ``delivery.ack()`` / ``nack()`` to
    decide yourself. When the loop ends (break, exception, ``stop``) the events it holds but did
    not settle are handed back. ``batch`` > 1 leases several events per query (faster); their
    leases run while earlier ones are processed, so keep ``lease`` comfortably long.
    Appends in this process wake the loop at once; other processes' appends and gap timeouts
    are noticed within ``poll_interval`` seconds.
    """
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()
    remove = queue.add_listener(lambda: loop.call_soon_threadsafe(wake.set))
    held: list[Delivery] = []
    try:
        while stop is None or not stop.is_set():
            wake.clear()
            events = await asyncio.to_thread(queue.consume, batch, lease=lease)
            if not events:
                waiters = [asyncio.ensure_future(wake.wait())]
                if stop is not None:
                    waiters.append(asyncio.ensure_future(stop.wait()))
                _, undone = await asyncio.wait(
                    waiters, timeout=poll_interval, return_when=asyncio.FIRST_COMPLETED
                )
                for waiter in undone:
                    waiter.cancel()
                continue
            held = [Delivery(queue, event) for event in events]
            for delivery in list(held):
                yield delivery
                held.remove(delivery)
                if auto_ack and not delivery.settled:
                    await delivery.ack()
                if stop is not None and stop.is_set():
                    break
    finally:
        remove()
        # Synchronous on purpose: awaiting inside a closing generator is fragile.
        for delivery in held:
            if not delivery.settled:
                queue.nack(delivery.queued.id)
