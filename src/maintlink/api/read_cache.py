"""Rows the API reads on nearly every request (who a key or token belongs to, a connection's
status), held for a few seconds so that a request does not pay store round trips for them.

Everything is dropped whenever `ChangeWatch` reports that an admin key or a connection may
have changed, in this process or (through the store) in another, so a revoked key or a
disconnected connection is refused at once and a status read never predates the last
committed change. `MAINTLINK_CACHE_SECONDS` bounds how long an entry lives regardless. A
lookup that started before a change never stores its possibly stale answer: `put` takes
the generation read before the lookup and ignores the answer if anything changed since.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from maintlink.store.change_watch import ChangeWatch

MAX_ENTRIES = 10_000


class ReadCache:
    def __init__(
        self, watch: ChangeWatch, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._watch = watch
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[tuple[str, str], tuple[float, Any]] = {}
        self._marker = watch.marker_version()
        self.generation = 0
        watch.subscribe(self.clear)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()

    def _usable(self) -> bool:
        if self._ttl <= 0 or not self._watch.live:
            return False
        marker = self._watch.marker_version()
        if marker != self._marker:
            self._marker = marker
            self.clear()
        return True

    def get(self, kind: str, key: str) -> Any | None:
        if not self._usable():
            return None
        entry = self._entries.get((kind, key))
        if entry is None:
            return None
        expires, value = entry
        if self._clock() >= expires:
            del self._entries[(kind, key)]
            return None
        return value

    def put(self, kind: str, key: str, value: Any, generation: int) -> None:
        if not self._usable() or generation != self.generation:
            return
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[(kind, key)] = (self._clock() + self._ttl, value)
