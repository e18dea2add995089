"""Synced records: idempotent upserts from connector pages, and reads for the data API.

A record's `data` holds the unified fields; `remote_data` the raw record. `modified_at` is
our own change time, moved only when the record really changed, so `modified_after` gives
clients exactly what changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import Row, and_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from maintlink.ids import new_id
from maintlink.store.db import json_dumps
from maintlink.store.tables import records

# Unified fields kept outside `data` (they have columns of their own).
_COMMON = ("remote_id", "created_at", "updated_at", "remote_deleted_at")


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"cannot store {type(value).__name__}")


def jsonable(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value, default=_default))


@dataclass
class Counts:
    created: int = 0
    updated: int = 0
    deleted: int = 0

    def add(self, other: Counts) -> None:
        self.created += other.created
        self.updated += other.updated
        self.deleted += other.deleted

    def as_dict(self) -> dict[str, int]:
        return {"created": self.created, "updated": self.updated, "deleted": self.deleted}


@dataclass
class Mapped:
    remote_id: str
    data: dict[str, Any]
    remote_data: dict[str, Any]
    remote_created_at: datetime | None
    remote_updated_at: datetime | None
    remote_deleted_at: datetime | None
    digest: str  # of data, remote_data and remote_deleted_at: equal digests, no change


def _digest(data: Any, remote_data: Any, remote_deleted_at: datetime | None) -> str:
    raw = orjson.dumps([data, remote_data, remote_deleted_at], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(raw).hexdigest()


def to_mapped(fields: Mapping[str, Any], raw: Mapping[str, Any]) -> Mapped:
    data = jsonable({k: v for k, v in fields.items() if k not in _COMMON})
    remote_data = dict(raw)
    deleted_at = fields.get("remote_deleted_at")
    try:
        # Raw records are decoded JSON and stored as they are: encoding them for the
        # digest is the check, and orjson encodes them the same way for the store.
        digest = _digest(data, remote_data, deleted_at)
    except TypeError:  # not plain JSON (a Decimal, a set...): normalize it first
        remote_data = jsonable(remote_data)
        digest = _digest(data, remote_data, deleted_at)
    return Mapped(
        remote_id=str(fields["remote_id"]),
        data=data,
        remote_data=remote_data,
        remote_created_at=fields.get("created_at"),
        remote_updated_at=fields.get("updated_at"),
        remote_deleted_at=deleted_at,
        digest=digest,
    )


async def upsert(
    conn: AsyncConnection,
    connection_id: str,
    entity: str,
    items: Sequence[Mapped],
    now: datetime,
    *,
    sync_id: str | None = None,
) -> Counts:
    """Insert new records, update changed ones, leave identical ones alone; counts what
    happened. Idempotent: the same page twice changes nothing the second time."""
    counts = Counts()
    if not items:
        return counts
    by_id: dict[str, Mapped] = {m.remote_id: m for m in items}  # last one wins in a page
    if conn.dialect.name == "postgresql":
        live = {k: m for k, m in by_id.items() if m.remote_deleted_at is None}
        counts.add(await _upsert_live_pg(conn, connection_id, entity, live, now, sync_id))
        by_id = {k: m for k, m in by_id.items() if k not in live}
        if not by_id:
            return counts
    existing = {
        r.remote_id: r
        for r in await conn.execute(
            select(
                records.c.id, records.c.remote_id, records.c.data_hash, records.c.deleted_at
            ).where(
                records.c.connection_id == connection_id,
                records.c.entity == entity,
                records.c.remote_id.in_(list(by_id)),
            )
        )
    }
    inserts: list[dict[str, Any]] = []
    for remote_id, m in by_id.items():
        digest = m.digest
        deleted_at = (m.remote_deleted_at or now) if m.remote_deleted_at else None
        old = existing.get(remote_id)
        if old is None:
            if deleted_at is not None:
                continue  # never seen and already gone: nothing to tell anyone
            inserts.append(
                {
                    "id": new_id("rec"),
                    "connection_id": connection_id,
                    "entity": entity,
                    "remote_id": remote_id,
                    "data": m.data,
                    "remote_data": m.remote_data,
                    "remote_created_at": m.remote_created_at,
                    "remote_updated_at": m.remote_updated_at,
                    "modified_at": now,
                    "deleted_at": None,
                    "data_hash": digest,
                    "last_seen_sync_id": sync_id,
                }
            )
            counts.created += 1
            continue
        if old.data_hash == digest and (old.deleted_at is None) == (deleted_at is None):
            continue
        await conn.execute(
            update(records)
            .where(records.c.id == old.id)
            .values(
                data=m.data,
                remote_data=m.remote_data,
                remote_created_at=m.remote_created_at,
                remote_updated_at=m.remote_updated_at,
                modified_at=now,
                deleted_at=deleted_at,
                data_hash=digest,
            )
        )
        if deleted_at is not None and old.deleted_at is None:
            counts.deleted += 1
        else:
            counts.updated += 1
    if inserts:
        await conn.execute(records.insert(), inserts)
    if sync_id is not None:
        await conn.execute(
            update(records)
            .where(
                records.c.connection_id == connection_id,
                records.c.entity == entity,
                records.c.remote_id.in_(list(by_id)),
            )
            .values(last_seen_sync_id=sync_id)
        )
    return counts


# The page's rows travel as one array per column: a single statement, prepared once, whose
# parameters the driver encodes in bulk (no per-value processing in SQLAlchemy).
_UPSERT_PG = """
INSERT INTO records (id, connection_id, entity, remote_id, data, remote_data,
                     remote_created_at, remote_updated_at, modified_at, deleted_at,
                     data_hash, last_seen_sync_id)
SELECT r.id, $1, $2, r.remote_id, r.data::jsonb, r.remote_data::jsonb,
       r.remote_created_at, r.remote_updated_at, $3, NULL, r.data_hash, $4
FROM unnest($5::varchar[], $6::varchar[], $7::text[], $8::text[], $9::timestamptz[],
            $10::timestamptz[], $11::varchar[])
     AS r(id, remote_id, data, remote_data, remote_created_at, remote_updated_at, data_hash)
ON CONFLICT (connection_id, entity, remote_id) DO UPDATE SET {update}
"""
_CHANGED = """
    data = excluded.data, remote_data = excluded.remote_data,
    remote_created_at = excluded.remote_created_at,
    remote_updated_at = excluded.remote_updated_at, modified_at = excluded.modified_at,
    deleted_at = NULL, data_hash = excluded.data_hash{seen}
WHERE records.data_hash IS DISTINCT FROM excluded.data_hash OR records.deleted_at IS NOT NULL
RETURNING records.remote_id, (xmax = 0) AS inserted"""
# Identical records are left alone: their modified_at must not move.
_UPSERT_LIVE = _UPSERT_PG.format(update=_CHANGED.format(seen=""))
_UPSERT_LIVE_FULL = _UPSERT_PG.format(
    update=_CHANGED.format(seen=", last_seen_sync_id = excluded.last_seen_sync_id")
)
# A full sync also marks the identical records as seen. They all exist, so every row
# takes the conflict branch: an update through the unique index.
_MARK_SEEN = _UPSERT_PG.format(update="last_seen_sync_id = excluded.last_seen_sync_id")


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    return value


async def _upsert_live_pg(
    conn: AsyncConnection,
    connection_id: str,
    entity: str,
    items: Mapping[str, Mapped],
    now: datetime,
    sync_id: str | None,
) -> Counts:
    """One statement per page on PostgreSQL (two in a full sync). It goes through the
    unique index by construction; a look-up of existing rows by `remote_id IN (...)` can be
    planned on another index while a connection's statistics are young, which made large
    initial syncs slow down page after page."""
    if not items:
        return Counts()
    ms = list(items.values())
    columns = (
        [new_id("rec") for _ in ms],
        list(items),
        [json_dumps(m.data) for m in ms],
        [json_dumps(m.remote_data) for m in ms],
        [_aware(m.remote_created_at) for m in ms],
        [_aware(m.remote_updated_at) for m in ms],
        [m.digest for m in ms],
    )
    sql = _UPSERT_LIVE if sync_id is None else _UPSERT_LIVE_FULL
    result = await conn.exec_driver_sql(
        sql, (connection_id, entity, _aware(now), sync_id, *columns)
    )
    counts = Counts()
    written: set[str] = set()
    for remote_id, inserted in result:
        written.add(remote_id)
        if inserted:
            counts.created += 1
        else:
            counts.updated += 1
    if sync_id is not None and len(written) < len(items):
        keep = [i for i, remote_id in enumerate(items) if remote_id not in written]
        unchanged = tuple([column[i] for i in keep] for column in columns)
        await conn.exec_driver_sql(
            _MARK_SEEN, (connection_id, entity, _aware(now), sync_id, *unchanged)
        )
    return counts


async def mark_unseen_deleted(
    conn: AsyncConnection,
    connection_id: str,
    entity: str,
    sync_id: str,
    window_start: datetime | None,
    now: datetime,
) -> int:
    """After a full listing: records it did not return are gone at the source. Records
    older than the listing's window cannot be judged and are left alone."""
    cond = and_(
        records.c.connection_id == connection_id,
        records.c.entity == entity,
        records.c.deleted_at.is_(None),
        (records.c.last_seen_sync_id.is_(None)) | (records.c.last_seen_sync_id != sync_id),
    )
    if window_start is not None:
        cond = and_(cond, records.c.remote_updated_at >= window_start)
    result = await conn.execute(update(records).where(cond).values(deleted_at=now, modified_at=now))
    return int(result.rowcount or 0)


# --- reads ----------------------------------------------------------------------------------


def record_view(
    row: Row[Any],
    object_type: str,
    *,
    include_remote_data: bool,
    mapping: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    data = dict(row.data)
    if mapping:
        data = apply_field_mapping(data, row.remote_data or {}, mapping)
    out = {
        "object": object_type,
        "id": row.id,
        "remote_id": row.remote_id,
        "created_at": row.remote_created_at,
        "updated_at": row.remote_updated_at,
        "modified_at": row.modified_at,
        "deleted_at": row.deleted_at,
        **data,
    }
    if include_remote_data:
        out["remote_data"] = row.remote_data
    return out


def _lookup(raw: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(raw, Mapping):
            raw = raw.get(part)
        elif isinstance(raw, list) and part.isdigit() and int(part) < len(raw):
            raw = raw[int(part)]
        else:
            return None
    return raw


def apply_field_mapping(
    data: dict[str, Any], remote: Mapping[str, Any], mapping: Mapping[str, Any]
) -> dict[str, Any]:
    """`{"fields": {unified: "raw.path"}, "custom_fields": {name: "raw.path"}}`."""
    out = dict(data)
    for name, path in (mapping.get("fields") or {}).items():
        out[name] = _lookup(remote, path)
    custom = dict(out.get("custom_fields") or {})
    for name, path in (mapping.get("custom_fields") or {}).items():
        custom[name] = _lookup(remote, path)
    if custom or "custom_fields" in out:
        out["custom_fields"] = custom
    return out
