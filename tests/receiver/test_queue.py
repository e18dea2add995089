"""The receiver's durable queue: de-duplication, per-connection order, gaps, leases, crashes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from maintlink.receiver import EventQueue, iterate


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def body(event_id: str, seq: int | None, conn: str | None = "conn_1", **extra: Any) -> bytes:
    payload = {
        "id": event_id, "type": extra.pop("type", "sync.completed"),
        "timestamp": "2025-01-01T00:00:00Z", "api_version": "v1", "connection_id": conn,
        "customer_id": "cust_1", "sequence": seq,
        "data": extra,
    }
    return json.dumps(payload).encode()


def add(queue: EventQueue, event_id: str, seq: int | None, conn: str | None = "conn_1") -> bool:
    return queue.append(event_id, body(event_id, seq, conn), {"webhook-id": event_id})


def drain(queue: EventQueue) -> list[str]:
    """Take and acknowledge events one at a time until none is available."""
    out: list[str] = []
    while (event := queue.next()) is not None:
        out.append(event.id)
        assert queue.ack(event.id)
    return out


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def queue(tmp_path: Path, clock: Clock) -> Iterator[EventQueue]:
    with EventQueue(tmp_path / "q.sqlite3", gap_timeout=30, lease_timeout=10, clock=clock) as q:
        yield q


def test_append_keeps_the_raw_body_and_drops_duplicates(queue: EventQueue) -> None:
    raw = body("evt_1", 1, big=123456789012345678901234567890)
    assert queue.append("evt_1", raw, {"Webhook-Id": "evt_1"}) is True
    assert queue.append("evt_1", raw, {"Webhook-Id": "evt_1"}) is False
    assert queue.append(" evt_1 ", raw) is False
    event = queue.next()
    assert event is not None
    assert event.body == raw
    assert event.payload["data"]["big"] == 123456789012345678901234567890
    assert event.headers == {"webhook-id": "evt_1"}
    assert (event.type, event.connection_id, event.sequence, event.attempts) == (
        "sync.completed", "conn_1", 1, 1)
    assert queue.stats() == {"pending": 1, "in_flight": 1, "received": 1, "acked": 0,
                             "duplicates": 2}


def test_a_duplicate_of_an_acknowledged_event_is_still_dropped(queue: EventQueue) -> None:
    add(queue, "evt_1", 1)
    assert drain(queue) == ["evt_1"]
    assert add(queue, "evt_1", 1) is False
    assert queue.next() is None


def test_out_of_order_arrivals_come_out_by_sequence(queue: EventQueue) -> None:
    for event_id, seq in (("evt_3", 3), ("evt_1", 1), ("evt_2", 2)):
        add(queue, event_id, seq)
    assert [e.id for e in queue.pending()] == ["evt_1", "evt_2", "evt_3"]
    assert drain(queue) == ["evt_1", "evt_2", "evt_3"]


def test_one_event_per_connection_is_out_at_a_time(queue: EventQueue) -> None:
    add(queue, "a1", 1, "conn_a")
    add(queue, "a2", 2, "conn_a")
    add(queue, "b1", 1, "conn_b")
    batch = queue.consume(10)
    assert [e.id for e in batch] == ["a1", "b1"]  # a2 waits for a1
    assert queue.consume(10) == []
    queue.ack("a1")
    assert [e.id for e in queue.consume(10)] == ["a2"]


def test_account_level_events_come_out_in_arrival_order(queue: EventQueue) -> None:
    add(queue, "acc_2", None, None)
    add(queue, "c5", 5, "conn_1")  # blocked by a gap: must not hold back the others
    add(queue, "acc_1", None, None)
    assert [e.id for e in queue.consume(10)] == ["acc_2", "acc_1"]
    assert all(e.in_order for e in queue.pending() if e.connection_id is None)


def test_a_gap_is_waited_for_then_released(queue: EventQueue, clock: Clock) -> None:
    add(queue, "evt_1", 1)
    assert drain(queue) == ["evt_1"]
    add(queue, "evt_3", 3)
    assert queue.next() is None  # evt_2 may still arrive as a retry
    clock.now += 29
    assert queue.next() is None
    clock.now += 2
    event = queue.next()
    assert event is not None and event.id == "evt_3" and event.in_order is False
    queue.ack(event.id)
    # The missing one turns up late: handed out at once, flagged.
    add(queue, "evt_2", 2)
    late = queue.next()
    assert late is not None and late.id == "evt_2" and late.in_order is False
    queue.ack(late.id)
    add(queue, "evt_4", 4)
    nxt = queue.next()
    assert nxt is not None and nxt.id == "evt_4" and nxt.in_order is True


def test_a_gap_filled_in_time_keeps_the_order(queue: EventQueue, clock: Clock) -> None:
    add(queue, "evt_1", 1)
    add(queue, "evt_3", 3)
    assert drain(queue) == ["evt_1"]
    clock.now += 10
    add(queue, "evt_2", 2)
    assert drain(queue) == ["evt_2", "evt_3"]


def test_first_event_of_a_connection_waits_unless_it_is_sequence_one(
    queue: EventQueue, clock: Clock
) -> None:
    add(queue, "x1", 1, "conn_x")
    add(queue, "y7", 7, "conn_y")  # the receiver joined late, or 1..6 are still coming
    assert drain(queue) == ["x1"]
    clock.now += 31
    assert drain(queue) == ["y7"]


def test_ack_and_nack(queue: EventQueue, clock: Clock) -> None:
    add(queue, "evt_1", 1)
    add(queue, "evt_2", 2)
    first = queue.next()
    assert first is not None and first.id == "evt_1"
    assert queue.nack("evt_1") is True
    again = queue.next()
    assert again is not None and again.id == "evt_1" and again.attempts == 2  # still first
    assert queue.nack("evt_1", delay=5) is True
    assert queue.next() is None  # delayed, and evt_2 must not overtake it
    clock.now += 5
    assert queue.next().id == "evt_1"  # type: ignore[union-attr]
    assert queue.ack("evt_1") is True
    assert queue.ack("evt_1") is False
    assert queue.nack("evt_1") is False
    assert queue.ack("nope") is False
    assert queue.next().id == "evt_2"  # type: ignore[union-attr]


def test_a_lease_expires_when_the_consumer_disappears(queue: EventQueue, clock: Clock) -> None:
    add(queue, "evt_1", 1)
    add(queue, "acc", None, None)
    assert {e.id for e in queue.consume(10, lease=5)} == {"evt_1", "acc"}
    assert queue.stats()["in_flight"] == 2
    clock.now += 4.9
    assert queue.consume(10) == []
    clock.now += 0.2
    again = queue.consume(10)
    assert {e.id for e in again} == {"evt_1", "acc"}
    assert all(e.attempts == 2 for e in again)


def test_survives_close_and_reopen(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "q.sqlite3"
    with EventQueue(path, clock=clock) as q:
        add(q, "evt_1", 1)
        add(q, "evt_2", 2)
        add(q, "evt_3", 3)
        assert q.ack(q.next().id)  # type: ignore[union-attr]
    with EventQueue(path, clock=clock) as q:
        assert add(q, "evt_1", 1) is False  # still remembered
        assert drain(q) == ["evt_2", "evt_3"]  # and the cursor too
        assert q.stats()["acked"] == 3


def test_an_appended_event_survives_a_killed_process(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    code = (
        "import os, sys\n"
        "from maintlink.receiver.queue import EventQueue\n"
        f"q = EventQueue({str(path)!r})\n"
        "assert q.append('evt_1', b'{\"id\":\"evt_1\",\"connection_id\":\"c\",\"sequence\":1}')\n"
        "os._exit(0)  # no close, no clean-up: as if killed right after answering 200\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
    with EventQueue(path) as q:
        assert [e.id for e in q.pending()] == ["evt_1"]


def test_ids_are_forgotten_after_the_window_unless_kept_forever(
    tmp_path: Path, clock: Clock
) -> None:
    with EventQueue(tmp_path / "a.sqlite3", dedupe_window=100, keep_acked=10, clock=clock) as q:
        add(q, "evt_1", None, None)
        assert drain(q) == ["evt_1"]
        clock.now += 101
        q.purge()
        assert add(q, "evt_1", None, None) is True
    with EventQueue(tmp_path / "b.sqlite3", dedupe_window=None, keep_acked=10, clock=clock) as q:
        add(q, "evt_1", None, None)
        assert drain(q) == ["evt_1"]
        clock.now += 10**9
        q.purge()
        assert add(q, "evt_1", None, None) is False


def test_a_pending_event_is_never_forgotten(tmp_path: Path, clock: Clock) -> None:
    with EventQueue(tmp_path / "q.sqlite3", dedupe_window=100, clock=clock) as q:
        add(q, "evt_1", None, None)
        clock.now += 1000
        q.purge()
        assert add(q, "evt_1", None, None) is False
        assert q.stats()["pending"] == 1


def test_rejects_what_is_not_an_event(queue: EventQueue) -> None:
    with pytest.raises(ValueError, match="JSON"):
        queue.append("evt_1", b"not json")
    with pytest.raises(ValueError, match="object"):
        queue.append("evt_1", b"[1]")
    with pytest.raises(ValueError, match="webhook_id"):
        queue.append("", b"{}")
    # A sequence that is not a number is treated as account-level, never as an error.
    assert queue.append("evt_2", b'{"connection_id":"c","sequence":"7"}')
    assert queue.next().sequence is None  # type: ignore[union-attr]


def test_concurrent_producers_and_consumers_on_one_file(tmp_path: Path) -> None:
    """Threads and separate connections (as separate processes would have): every event is
    handed out exactly once, and each connection's in sequence order."""
    path = tmp_path / "q.sqlite3"
    producer_q = EventQueue(path, synchronous="NORMAL")
    consumers = [EventQueue(path, synchronous="NORMAL") for _ in range(3)]
    seen: list[tuple[str, int]] = []
    lock = threading.Lock()
    done = threading.Event()

    def produce(conn: str) -> None:
        for seq in range(1, 41):
            assert add(producer_q, f"{conn}-{seq}", seq, conn)

    def consume(q: EventQueue) -> None:
        while True:
            batch = q.consume(5)
            if not batch:
                if done.is_set() and q.stats()["pending"] == 0:
                    return
                continue
            for event in batch:
                with lock:
                    seen.append((event.connection_id or "", event.sequence or 0))
                q.ack(event.id)

    producers = [threading.Thread(target=produce, args=(f"c{i}",)) for i in range(4)]
    workers = [threading.Thread(target=consume, args=(q,)) for q in consumers]
    for t in producers + workers:
        t.start()
    for t in producers:
        t.join()
    done.set()
    for t in workers:
        t.join(timeout=30)
    assert len(seen) == 160 and len(set(seen)) == 160
    for i in range(4):
        assert [s for c, s in seen if c == f"c{i}"] == list(range(1, 41))
    for q in [producer_q, *consumers]:
        q.close()


async def test_iterate_wakes_on_append_and_acknowledges(queue: EventQueue) -> None:
    got: list[str] = []
    stop = asyncio.Event()

    async def consumer() -> None:
        async with contextlib.aclosing(iterate(queue, stop=stop, poll_interval=5)) as events:
            async for delivery in events:
                got.append(delivery.event["id"])
                if len(got) == 3:
                    stop.set()

    task = asyncio.create_task(consumer())
    await asyncio.sleep(0.05)
    for event_id, seq in (("evt_2", 2), ("evt_1", 1), ("evt_3", 3)):
        await asyncio.to_thread(add, queue, event_id, seq)
    await asyncio.wait_for(task, 3)  # far below poll_interval: woken, not polled
    assert got == ["evt_1", "evt_2", "evt_3"]
    assert queue.stats()["acked"] == 3


async def test_iterate_hands_back_what_it_held_when_the_loop_fails(queue: EventQueue) -> None:
    add(queue, "acc_1", None, None)
    add(queue, "acc_2", None, None)
    with pytest.raises(RuntimeError):
        async with contextlib.aclosing(iterate(queue, batch=10)) as events:
            async for _delivery in events:
                raise RuntimeError("handler failed")
    assert queue.stats() == {"pending": 2, "in_flight": 0, "received": 2, "acked": 0,
                             "duplicates": 0}


async def test_iterate_explicit_nack(queue: EventQueue) -> None:
    add(queue, "acc_1", None, None)
    attempts: list[int] = []
    async with contextlib.aclosing(iterate(queue, auto_ack=False, poll_interval=0.05)) as events:
        async for delivery in events:
            attempts.append(delivery.queued.attempts)
            if len(attempts) == 1:
                assert await delivery.nack()
            else:
                assert await delivery.ack()
                break
    assert attempts == [1, 2]
    assert queue.stats()["acked"] == 1
