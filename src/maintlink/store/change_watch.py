"""Tells a process when an admin key or a connection (its token, status or health) may have
changed, so that caches of those rows can drop what they hold.

Three paths, so that a revoked key or a disconnected connection is refused at once and a
status read is never older than the last committed change:

* **This process.** An UPDATE that writes a column caches read (`WATCHED_COLUMNS`), or a
  DELETE, on `api_keys` or `connections` calls the subscribers when it runs and again when
  its connection goes back to the pool (after the commit), so no cache keeps a row read
  while the change was committing.
* **Other processes on PostgreSQL.** Triggers (migration 0002) send `NOTIFY
  maintlink_changes` from the changing transaction, so only once it commits; `listen()`
  receives it. While that listener is not connected, `live` is false and caches must not
  answer.
* **Other processes on SQLite** (the CLI revoking a key while `maintlink serve` runs): the
  writer appends a byte to a marker file beside the database after its commit; readers
  compare the file's (inode, size) with what they saw last, one `stat` per lookup.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import Delete, Update, event
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("maintlink.store")

CHANNEL = "maintlink_changes"
# The columns caches read (who a key or token belongs to, what a status read shows). Writes
# to other columns (sync leases, schedules, last_used_at) do not empty any cache; migration
# 0002 watches the same columns.
WATCHED_COLUMNS: dict[str, frozenset[str]] = {
    "api_keys": frozenset({"key_hash", "account_id", "revoked_at"}),
    "connections": frozenset({
        "account_id", "token_hash", "status", "status_reason", "status_changed_at",
        "last_checked_at", "last_error_code", "last_error_message", "last_error_at",
    }),
}
_FLAG = "maintlink_watched_change"
_MARKER_MAX = 4096  # bytes; the marker is replaced (new inode) when it grows past this


def _sets_any(
    clause: Update, multiparams: Any, params: Any, columns: frozenset[str]
) -> bool:
    """Whether an UPDATE may write one of `columns` (when unsure: yes)."""
    named: set[str] = set()
    for key in clause._values or ():  # the SET clause (no public accessor)
        named.add(getattr(key, "key", None) or str(key))
    for group in (multiparams or [], [params] if params else []):
        for item in group:
            if isinstance(item, dict):
                named.update(item)
    return not named or not named.isdisjoint(columns)


def _set(event: asyncio.Event, *_args: object) -> None:
    event.set()


def _marker_path(engine: AsyncEngine) -> Path | None:
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).with_name(Path(database).name + "-changes")


class ChangeWatch:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._subscribers: list[Callable[[], None]] = []
        self._marker = _marker_path(engine)
        self._postgres = engine.dialect.name == "postgresql"
        self._listening = False
        event.listen(engine.sync_engine, "after_execute", self._after_execute)
        event.listen(engine.sync_engine, "checkin", self._checkin)

    @property
    def live(self) -> bool:
        """Whether changes made by other processes reach this one."""
        return self._listening or not self._postgres

    def subscribe(self, callback: Callable[[], None]) -> None:
        self._subscribers.append(callback)

    def changed(self) -> None:
        for callback in self._subscribers:
            callback()

    def marker_version(self) -> tuple[int, int] | None:
        """What the SQLite marker file looks like now (None: no file, or not SQLite)."""
        if self._marker is None:
            return None
        try:
            st = os.stat(self._marker)
        except OSError:
            return None
        return st.st_ino, st.st_size

    def _after_execute(
        self, conn: Any, clause: Any, multiparams: Any, params: Any, _options: Any, result: Any
    ) -> None:
        if not isinstance(clause, Update | Delete):
            return
        watched = WATCHED_COLUMNS.get(clause.table.name)
        if watched is None or result.rowcount == 0:
            return
        if isinstance(clause, Update) and not _sets_any(clause, multiparams, params, watched):
            return
        conn.info[_FLAG] = True  # the pooled connection's info, seen again at check-in
        self.changed()

    def _checkin(self, _dbapi_conn: Any, record: Any) -> None:
        if record is not None and record.info.pop(_FLAG, False):
            self.changed()
            self._touch_marker()

    def _touch_marker(self) -> None:
        if self._marker is None:
            return
        try:
            if self._marker.exists() and self._marker.stat().st_size >= _MARKER_MAX:
                fresh = self._marker.with_name(self._marker.name + f".{os.getpid()}")
                fresh.write_bytes(b"\n")
                os.replace(fresh, self._marker)  # a new inode: readers see the change
            else:
                with open(self._marker, "ab") as f:
                    f.write(b"\n")
        except OSError:
            log.warning(
                "could not update %s; other processes may answer from their caches "
                "for up to MAINTLINK_CACHE_SECONDS",
                self._marker,
            )

    async def listen(self, stop: asyncio.Event) -> None:
        """On PostgreSQL: LISTEN until `stop`, reconnecting with back-off; `live` meanwhile."""
        if not self._postgres:
            return
        dsn = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        backoff = 0.2
        while not stop.is_set():
            conn: asyncpg.Connection | None = None
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(dsn)
                conn.add_termination_listener(functools.partial(_set, lost))
                await conn.add_listener(CHANNEL, lambda *_: self.changed())
                # Whatever changed while nobody listened: start from nothing.
                self.changed()
                self._listening = True
                backoff = 0.2
                waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(lost.wait())}
                try:
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiter in waiters:
                        waiter.cancel()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("change listener: %s; retrying in %.1f s", exc, backoff)
            finally:
                self._listening = False
                self.changed()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=2)
            if not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, 5.0)
