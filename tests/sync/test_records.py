"""`records.upsert` page by page, as full and incremental syncs call it, on both stores."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select

from maintlink.domain.records import Counts, Mapped, mark_unseen_deleted, to_mapped, upsert
from maintlink.store.tables import records
from tests.sync.conftest import Harness


def _page(*items: tuple[str, str]) -> list[Mapped]:
    return [
        to_mapped({"remote_id": rid, "title": title}, {"id": rid, "title": title})
        for rid, title in items
    ]


async def _rows(h: Harness, connection_id: str) -> dict[str, Any]:
    async with h.rt.engine.connect() as conn:
        result = await conn.execute(
            select(records).where(
                records.c.connection_id == connection_id, records.c.entity == "work_orders"
            )
        )
        return {r.remote_id: r for r in result}


async def test_full_sync_pages_mark_every_listed_record_seen(harness: Harness) -> None:
    h = harness
    cid = (await h.connect())["id"]
    t1 = h.clock()
    t2, t3, t4 = (t1 + timedelta(minutes=m) for m in (1, 2, 3))

    async def page(now: Any, sync_id: str | None, *items: tuple[str, str]) -> Counts:
        async with h.rt.engine.begin() as conn:
            return await upsert(conn, cid, "work_orders", _page(*items), now, sync_id=sync_id)

    assert await page(t1, "sync_1", ("a", "A"), ("b", "B"), ("c", "C")) == Counts(created=3)
    # The next full listing: a unchanged, b changed, d new, c gone.
    assert await page(t2, "sync_2", ("a", "A"), ("b", "B2"), ("d", "D")) == Counts(
        created=1, updated=1
    )
    assert await page(t2, "sync_2", ("a", "A"), ("d", "D")) == Counts()  # same page again
    rows = await _rows(h, cid)
    assert {k: r.last_seen_sync_id for k, r in rows.items()} == {
        "a": "sync_2",
        "b": "sync_2",
        "c": "sync_1",
        "d": "sync_2",
    }
    assert {k: r.modified_at for k, r in rows.items()} == {"a": t1, "b": t2, "c": t1, "d": t2}
    assert rows["b"].data["title"] == "B2" and rows["b"].remote_data == {"id": "b", "title": "B2"}

    async with h.rt.engine.begin() as conn:
        assert await mark_unseen_deleted(conn, cid, "work_orders", "sync_2", None, t3) == 1
    rows = await _rows(h, cid)
    assert [k for k, r in rows.items() if r.deleted_at is not None] == ["c"]

    # An incremental page leaves the reconciliation mark alone; a full one brings c back.
    assert await page(t4, None, ("a", "A2")) == Counts(updated=1)
    assert await page(t4, "sync_3", ("c", "C")) == Counts(updated=1)
    rows = await _rows(h, cid)
    assert rows["a"].last_seen_sync_id == "sync_2" and rows["a"].modified_at == t4
    assert rows["c"].deleted_at is None and rows["c"].last_seen_sync_id == "sync_3"
