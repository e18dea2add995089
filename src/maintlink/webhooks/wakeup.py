"""In-process wake-ups for delivery workers when the store is SQLite (one process).

PostgreSQL uses LISTEN/NOTIFY instead. A wake-up may arrive just before the emitting
transaction commits; workers therefore look again shortly after an empty wake-up.
"""

from __future__ import annotations

import asyncio

_waiters: set[asyncio.Event] = set()


def register() -> asyncio.Event:
    event = asyncio.Event()
    _waiters.add(event)
    return event


def unregister(event: asyncio.Event) -> None:
    _waiters.discard(event)


def local_wakeup() -> None:
    for event in list(_waiters):
        event.set()
