"""The sync engine: initial, incremental and full syncs of a connection, one at a time.

A run goes entity by entity and page by page. Each page is upserted and checkpointed
(the cursor of the next page, the newest change seen) in one transaction, so a run
interrupted by a crash resumes from its last committed page. A lease on the connection
row makes sure only one worker syncs a connection at a time; it is renewed at every page
and expires if the worker dies.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from maintlink.connectors.base import Connector, ConnectorError, FailureKind, Page
from maintlink.domain import events, health
from maintlink.domain.connections import Status, get_connection
from maintlink.domain.credentials import connector_for
from maintlink.domain.records import Counts, Mapped, mark_unseen_deleted, to_mapped, upsert
from maintlink.errors import MaintlinkError
from maintlink.ids import new_id
from maintlink.runtime import Runtime
from maintlink.store.tables import connections, sync_states, syncs

log = logging.getLogger("maintlink.sync")


class LeaseLost(Exception):
    """Another worker took the connection over (this one was too slow or presumed dead)."""


# --- scheduling ------------------------------------------------------------------------------


def jittered(seconds: float, rng: random.Random | None = None) -> timedelta:
    return timedelta(seconds=seconds * (rng or random).uniform(0.9, 1.1))


async def request_sync(
    conn: AsyncConnection, account_id: str, connection_id: str, now: datetime
) -> Row[Any]:
    row = await get_connection(conn, connection_id, account_id=account_id)
    if row.status == Status.DISCONNECTED:
        raise MaintlinkError("CONNECTION_NOT_ACTIVE", "A disconnected connection does not sync.")
    if row.status == Status.REAUTH_REQUIRED:
        raise MaintlinkError(
            "CONNECTION_NOT_ACTIVE", "The connection needs reauthorization before it can sync."
        )
    await conn.execute(
        update(connections)
        .where(connections.c.id == connection_id)
        .values(next_sync_at=now, sync_requested_at=now)
    )
    await events.notify(conn)
    return row


async def claim_due(rt: Runtime, worker_id: str, limit: int) -> list[str]:
    """Take up to `limit` connections whose sync is due, under a lease."""
    now = rt.clock()
    free = or_(
        connections.c.sync_lease_expires_at.is_(None), connections.c.sync_lease_expires_at < now
    )
    due = and_(connections.c.status == Status.ACTIVE, connections.c.next_sync_at <= now, free)
    pick = select(connections.c.id).where(due).order_by(connections.c.next_sync_at).limit(limit)
    if rt.dialect == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    expires = now + timedelta(seconds=rt.settings.sync_lease_seconds)
    async with rt.engine.begin() as conn:
        result = await conn.execute(
            update(connections)
            .where(connections.c.id.in_(pick.scalar_subquery()), free)
            .values(sync_lease_owner=worker_id, sync_lease_expires_at=expires)
            .returning(connections.c.id)
        )
        return [r.id for r in result]


async def _renew(conn: AsyncConnection, rt: Runtime, connection_id: str, worker_id: str) -> None:
    expires = rt.clock() + timedelta(seconds=rt.settings.sync_lease_seconds)
    result = await conn.execute(
        update(connections)
        .where(connections.c.id == connection_id, connections.c.sync_lease_owner == worker_id)
        .values(sync_lease_expires_at=expires)
    )
    if result.rowcount != 1:
        raise LeaseLost(connection_id)


async def _release(
    conn: AsyncConnection,
    connection_id: str,
    worker_id: str,
    next_sync_at: datetime | None,
    **values: Any,
) -> None:
    await conn.execute(
        update(connections)
        .where(connections.c.id == connection_id, connections.c.sync_lease_owner == worker_id)
        .values(
            sync_lease_owner=None,
            sync_lease_expires_at=None,
            next_sync_at=next_sync_at,
            sync_requested_at=None,
            **values,
        )
    )


# --- state -----------------------------------------------------------------------------------


async def _state(conn: AsyncConnection, connection_id: str, entity: str) -> Row[Any] | None:
    return (
        await conn.execute(
            select(sync_states).where(
                sync_states.c.connection_id == connection_id, sync_states.c.entity == entity
            )
        )
    ).first()


async def _save_state(
    conn: AsyncConnection, connection_id: str, entity: str, exists: bool, **values: Any
) -> None:
    if exists:
        await conn.execute(
            update(sync_states)
            .where(sync_states.c.connection_id == connection_id, sync_states.c.entity == entity)
            .values(**values)
        )
    else:
        await conn.execute(
            sync_states.insert().values(connection_id=connection_id, entity=entity, **values)
        )


async def _add_counts(conn: AsyncConnection, sync_id: str, entity: str, counts: Counts) -> None:
    row = (await conn.execute(select(syncs.c.entities).where(syncs.c.id == sync_id))).one()
    entities = dict(row.entities or {})
    total = Counts(**entities.get(entity, {}))
    total.add(counts)
    entities[entity] = total.as_dict()
    await conn.execute(update(syncs).where(syncs.c.id == sync_id).values(entities=entities))


async def _next_page(pages: AsyncIterator[Page]) -> Page | None:
    return await anext(pages, None)


# --- a run -----------------------------------------------------------------------------------


class SyncRun:
    """One worker's run of one connection's sync (new, or resumed after a crash)."""

    def __init__(
        self,
        rt: Runtime,
        connection_id: str,
        worker_id: str,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rt = rt
        self.connection_id = connection_id
        self.worker_id = worker_id
        self.sleep = sleep
        self.settings = rt.settings

    async def run(self) -> str | None:
        try:
            return await self._run()
        except LeaseLost:
            log.warning("lease on %s lost; another worker continues", self.connection_id)
            return None

    async def _run(self) -> str | None:
        rt = self.rt
        async with rt.engine.begin() as conn:
            row = await get_connection(conn, self.connection_id)
            if row.status != Status.ACTIVE or row.sync_lease_owner != self.worker_id:
                await _release(conn, self.connection_id, self.worker_id, row.next_sync_at)
                return None
            connector = connector_for(rt, row)
            sync = await self._start(conn, row, connector)
        started = sync.started_at
        window_start = started - timedelta(days=int((row.settings or {}).get("history_days", 90)))
        entity_errors: dict[str, ConnectorError] = {}
        try:
            for entity in connector.entities:
                try:
                    await self._sync_entity(connector, sync, entity, window_start)
                except ConnectorError as exc:
                    if exc.kind in (FailureKind.PERMISSION_DENIED, FailureKind.PROVIDER_ERROR):
                        entity_errors[entity] = exc  # the other entities still sync
                        await self._entity_failed(entity, exc)
                        continue
                    raise
        except ConnectorError as exc:
            await self._fail(row, sync, exc)
            return str(sync.id)
        except LeaseLost:
            raise
        except Exception as exc:
            log.exception("sync %s crashed", sync.id)
            await self._fail(
                row,
                sync,
                ConnectorError(FailureKind.PROVIDER_ERROR, f"internal error: {type(exc).__name__}"),
            )
            return str(sync.id)
        await self._complete(row, sync, connector, entity_errors)
        return str(sync.id)

    async def _start(self, conn: AsyncConnection, row: Row[Any], connector: Connector) -> Row[Any]:
        running = (
            await conn.execute(
                select(syncs).where(syncs.c.connection_id == row.id, syncs.c.status == "running")
            )
        ).first()
        now = self.rt.clock()
        if running is not None:  # a worker died mid-run: resume it
            await conn.execute(
                update(syncs).where(syncs.c.id == running.id).values(attempts=running.attempts + 1)
            )
            return running
        states = (
            await conn.execute(
                select(sync_states.c.last_successful_sync_at).where(
                    sync_states.c.connection_id == row.id
                )
            )
        ).all()
        if not any(s.last_successful_sync_at for s in states):
            kind = "initial"
        elif not connector.reports_deletions and (
            row.next_full_sync_at is None or row.next_full_sync_at <= now
        ):
            kind = "full"
        else:
            kind = "incremental"
        trigger = "manual" if row.sync_requested_at else "schedule"
        sync_id = new_id("sync")
        await conn.execute(
            syncs.insert().values(
                id=sync_id,
                connection_id=row.id,
                account_id=row.account_id,
                kind=kind,
                status="running",
                trigger=trigger,
                started_at=now,
                entities={},
                attempts=1,
            )
        )
        return (await conn.execute(select(syncs).where(syncs.c.id == sync_id))).one()

    async def _sync_entity(
        self, connector: Connector, sync: Row[Any], entity: str, window_start: datetime
    ) -> None:
        rt = self.rt
        async with rt.engine.begin() as conn:
            state = await _state(conn, self.connection_id, entity)
            resuming = state is not None and state.sync_id == sync.id
            if resuming and state.status == "completed":
                return
            if sync.kind == "incremental" and state is not None and state.high_water_mark:
                since = state.high_water_mark - timedelta(
                    seconds=self.settings.sync_overlap_seconds
                )
            else:
                since = window_start
            cursor = state.resume_cursor if resuming else None
            await _save_state(
                conn,
                self.connection_id,
                entity,
                state is not None,
                status="in_progress",
                sync_id=sync.id,
                resume_cursor=cursor,
                run_high_water_mark=state.run_high_water_mark if resuming else None,
            )
        backoff = self.settings.sync_backoff
        failures = 0
        while True:
            try:
                await self._pages(connector, sync, entity, since)
                break
            except ConnectorError as exc:
                if exc.kind is FailureKind.RATE_LIMITED:
                    wait = min(
                        exc.retry_after or 30.0, self.settings.sync_max_rate_limit_wait_seconds
                    )
                    log.info("rate limited on %s/%s; waiting %.1f s", sync.id, entity, wait)
                    await self._hold_lease_while(wait)
                    continue
                if exc.kind is FailureKind.UNAVAILABLE and failures < len(backoff):
                    await self._hold_lease_while(backoff[failures])
                    failures += 1
                    continue
                raise
        now = rt.clock()
        async with rt.engine.begin() as conn:
            await _renew(conn, rt, self.connection_id, self.worker_id)
            state = await _state(conn, self.connection_id, entity)
            assert state is not None
            if sync.kind == "full":
                deleted = await mark_unseen_deleted(
                    conn, self.connection_id, entity, sync.id, window_start, now
                )
                if deleted:
                    await _add_counts(conn, sync.id, entity, Counts(deleted=deleted))
            marks = [m for m in (state.high_water_mark, state.run_high_water_mark) if m]
            await _save_state(
                conn,
                self.connection_id,
                entity,
                True,
                status="completed",
                resume_cursor=None,
                last_error=None,
                last_successful_sync_at=now,
                high_water_mark=max(marks) if marks else None,
            )
            await health.resolve_errors(conn, self.connection_id, entity=entity)

    async def _pages(
        self, connector: Connector, sync: Row[Any], entity: str, since: datetime
    ) -> None:
        """Stream pages from the last checkpoint; each page is committed with its cursor.

        The next page is fetched while the current one is written (one page ahead, so
        memory stays flat); a page fetched but not committed is fetched again on resume.
        """
        rt = self.rt
        async with rt.engine.connect() as conn:
            state = await _state(conn, self.connection_id, entity)
            # The run's counts as committed; from here on only this run writes them (it
            # holds the lease, checked in every page's transaction), so each page sets
            # them without reading them back.
            totals = dict(
                (
                    await conn.execute(select(syncs.c.entities).where(syncs.c.id == sync.id))
                ).scalar_one()
                or {}
            )
        total = Counts(**totals.get(entity, {}))
        cursor = state.resume_cursor if state is not None else None
        newest = state.run_high_water_mark if state is not None else None
        pages = connector.list_records(
            entity, modified_since=None if cursor else since, cursor=cursor
        )
        mapping_errors: list[str] = []
        fetch = asyncio.ensure_future(_next_page(pages))
        try:
            # One connection for the whole entity: no pool checkout per page.
            async with rt.engine.connect() as conn:
                while (page := await fetch) is not None:
                    fetch = asyncio.ensure_future(_next_page(pages))
                    mapped: list[Mapped] = []
                    for raw in page.records:
                        try:
                            mapped.append(to_mapped(connector.map_record(entity, raw), raw))
                        except Exception as exc:  # one bad record must not stop the sync
                            mapping_errors.append(f"{type(exc).__name__}: {exc}")
                    for m in mapped:
                        if m.remote_updated_at and (newest is None or m.remote_updated_at > newest):
                            newest = m.remote_updated_at
                    now = rt.clock()
                    async with conn.begin():
                        await _renew(conn, rt, self.connection_id, self.worker_id)
                        counts = await upsert(
                            conn,
                            self.connection_id,
                            entity,
                            mapped,
                            now,
                            sync_id=sync.id if sync.kind == "full" else None,
                        )
                        if counts != Counts() or entity not in totals:  # zeros listed too
                            total.add(counts)
                            totals[entity] = total.as_dict()
                            await conn.execute(
                                update(syncs).where(syncs.c.id == sync.id).values(entities=totals)
                            )
                        await _save_state(
                            conn,
                            self.connection_id,
                            entity,
                            True,
                            resume_cursor=page.next_cursor,
                            run_high_water_mark=newest,
                        )
        finally:
            if not fetch.done():
                fetch.cancel()
                await asyncio.wait([fetch])
            if not fetch.cancelled():
                fetch.exception()  # an error of the page ahead is moot once the run failed
        if mapping_errors:
            async with rt.engine.begin() as conn:
                row = await get_connection(conn, self.connection_id)
                await health.raise_error_once(
                    conn,
                    row,
                    "MAPPING_FAILED",
                    f"{len(mapping_errors)} {entity} records could not be mapped; first: "
                    f"{mapping_errors[0]}",
                    entity,
                    rt.clock(),
                )

    async def _hold_lease_while(self, seconds: float) -> None:
        """Wait without letting the lease lapse."""
        step = max(1.0, self.settings.sync_lease_seconds / 3)
        remaining = seconds
        while remaining > 0:
            chunk = min(step, remaining)
            await self.sleep(chunk)
            remaining -= chunk
            async with self.rt.engine.begin() as conn:
                await _renew(conn, self.rt, self.connection_id, self.worker_id)

    async def _entity_failed(self, entity: str, exc: ConnectorError) -> None:
        async with self.rt.engine.begin() as conn:
            await _save_state(
                conn,
                self.connection_id,
                entity,
                True,
                status="failed",
                last_error=exc.message[:1000],
            )
            await health.record_failure(
                conn, self.connection_id, exc, self.rt.clock(), entity=entity
            )

    async def _complete(
        self,
        row: Row[Any],
        sync: Row[Any],
        connector: Connector,
        entity_errors: dict[str, ConnectorError],
    ) -> None:
        now = self.rt.clock()
        interval = int((row.settings or {}).get("sync_interval_minutes", 15)) * 60
        async with self.rt.engine.begin() as conn:
            await _renew(conn, self.rt, self.connection_id, self.worker_id)
            final = (await conn.execute(select(syncs).where(syncs.c.id == sync.id))).one()
            status = "completed"
            message = None
            if entity_errors:
                message = "; ".join(f"{e}: {x.message}" for e, x in entity_errors.items())
            await conn.execute(
                update(syncs)
                .where(syncs.c.id == sync.id)
                .values(
                    status=status,
                    finished_at=now,
                    error_message=message,
                    error_code="PARTIAL" if entity_errors else None,
                )
            )
            extra: dict[str, Any] = {}
            if final.kind in ("full", "initial") and not connector.reports_deletions:
                extra["next_full_sync_at"] = now + timedelta(
                    hours=self.settings.full_sync_interval_hours
                )
            await _release(
                conn, self.connection_id, self.worker_id, now + jittered(interval), **extra
            )
            await health.record_success(conn, self.connection_id, now)
            counts = {
                e: Counts(**(final.entities or {}).get(e, {})).as_dict()
                for e in connector.entities
                if e not in entity_errors
            }
            await events.emit(
                conn,
                account_id=row.account_id,
                type="sync.completed",
                connection_id=row.id,
                customer_id=row.customer_external_id,
                now=now,
                data={
                    "sync_id": sync.id,
                    "kind": final.kind,
                    "started_at": final.started_at,
                    "finished_at": now,
                    "entities": counts,
                },
            )

    async def _fail(self, row: Row[Any], sync: Row[Any], exc: ConnectorError) -> None:
        now = self.rt.clock()
        code = health.error_code(exc)
        will_retry = exc.kind not in (FailureKind.AUTH, FailureKind.INVALID_CONFIGURATION)
        retry_at = (
            now
            + jittered(min(300.0, int((row.settings or {}).get("sync_interval_minutes", 15)) * 60))
            if will_retry
            else None
        )
        async with self.rt.engine.begin() as conn:
            await conn.execute(
                update(syncs)
                .where(syncs.c.id == sync.id)
                .values(
                    status="failed",
                    finished_at=now,
                    error_code=code,
                    error_message=exc.message[:1000],
                )
            )
            await conn.execute(
                update(sync_states)
                .where(
                    sync_states.c.connection_id == self.connection_id,
                    sync_states.c.sync_id == sync.id,
                    sync_states.c.status == "in_progress",
                )
                .values(status="failed", last_error=exc.message[:1000], resume_cursor=None)
            )
            await _release(conn, self.connection_id, self.worker_id, retry_at)
            await health.record_failure(conn, self.connection_id, exc, now)
            await events.emit(
                conn,
                account_id=row.account_id,
                type="sync.failed",
                connection_id=row.id,
                customer_id=row.customer_external_id,
                now=now,
                data={
                    "sync_id": sync.id,
                    "kind": sync.kind,
                    "started_at": sync.started_at,
                    "finished_at": now,
                    "error_code": code,
                    "error_message": exc.message,
                    "will_retry": will_retry,
                    "next_attempt_at": retry_at,
                },
            )


# --- reads -----------------------------------------------------------------------------------


def sync_view(row: Row[Any]) -> dict[str, Any]:
    return {
        "object": "sync",
        "id": row.id,
        "connection_id": row.connection_id,
        "kind": row.kind,
        "status": row.status,
        "trigger": row.trigger,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
        "entities": row.entities or {},
        "error": (
            {"code": row.error_code, "message": row.error_message} if row.error_code else None
        ),
    }


async def list_syncs(
    conn: AsyncConnection, connection_id: str, *, after: str | None, limit: int
) -> list[Row[Any]]:
    query = select(syncs).where(syncs.c.connection_id == connection_id)
    if after:
        query = query.where(syncs.c.id < after)
    return list((await conn.execute(query.order_by(syncs.c.id.desc()).limit(limit))).all())


async def sync_status(
    conn: AsyncConnection, row: Row[Any], entities: tuple[str, ...]
) -> dict[str, Any]:
    from sqlalchemy import func

    from maintlink.store.tables import records

    last = (
        await conn.execute(
            select(syncs)
            .where(syncs.c.connection_id == row.id)
            .order_by(syncs.c.id.desc())
            .limit(1)
        )
    ).first()
    ok = (
        await conn.execute(
            select(func.max(syncs.c.finished_at)).where(
                syncs.c.connection_id == row.id, syncs.c.status == "completed"
            )
        )
    ).scalar()
    states = {
        s.entity: s
        for s in await conn.execute(
            select(sync_states).where(sync_states.c.connection_id == row.id)
        )
    }
    counts = dict(
        (
            await conn.execute(
                select(records.c.entity, func.count())
                .where(records.c.connection_id == row.id, records.c.deleted_at.is_(None))
                .group_by(records.c.entity)
            )
        ).all()
    )
    if last is None:
        status = "idle"
    elif last.status == "running":
        status = "in_progress"
    else:
        status = str(last.status)
    per_entity = {}
    for entity in entities:
        s = states.get(entity)
        per_entity[entity] = {
            "status": (("in_progress" if s.status == "in_progress" else s.status) if s else "idle"),
            "last_successful_sync_at": s.last_successful_sync_at if s else None,
            "records": int(counts.get(entity, 0)),
            "data_fresh_as_of": s.high_water_mark if s else None,
            "last_error": s.last_error if s else None,
        }
    last_error = None
    if last is not None and last.error_code:
        last_error = {
            "code": last.error_code,
            "message": last.error_message,
            "at": last.finished_at,
        }
    scheduled = row.next_sync_at if row.status == Status.ACTIVE else None
    return {
        "object": "sync_status",
        "connection_id": row.id,
        "status": status,
        "last_sync_started_at": last.started_at if last else None,
        "last_successful_sync_at": ok,
        "next_scheduled_sync_at": scheduled,
        "last_error": last_error,
        "entities": per_entity,
    }
