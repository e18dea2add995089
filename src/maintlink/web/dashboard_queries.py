"""Read models of the dashboard: the summaries and joins its pages show, which the API's
domain functions do not need. Every query is scoped to one account; the ones taking ids
take ids already read through an account-scoped query."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, String, case, cast, func, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncConnection

from maintlink.store.tables import (
    attempts,
    connections,
    customers,
    deliveries,
    events,
    link_tokens,
    syncs,
    webhook_endpoints,
)

DAY = timedelta(hours=24)
STATUSES = ("active", "offline", "reauth_required", "disconnected")


# --- connections -------------------------------------------------------------------------------

async def status_counts(conn: AsyncConnection, account_id: str) -> dict[str, int]:
    rows = await conn.execute(
        select(connections.c.status, func.count()).where(connections.c.account_id == account_id)
        .group_by(connections.c.status))
    counts = dict.fromkeys(STATUSES, 0)
    counts.update({str(status): int(n) for status, n in rows})
    return counts


async def filter_choices(conn: AsyncConnection, account_id: str) -> tuple[list[str], list[str]]:
    """The systems and customers this account has, for the filter controls."""
    systems = [r[0] for r in await conn.execute(
        select(connections.c.integration).where(connections.c.account_id == account_id)
        .distinct().order_by(connections.c.integration))]
    names = [r[0] for r in await conn.execute(
        select(customers.c.external_id).where(customers.c.account_id == account_id)
        .order_by(customers.c.external_id).limit(500))]
    return systems, names


async def connection_rows(
    conn: AsyncConnection, account_id: str, *, q: str | None, status: str | None,
    integration: str | None, customer: str | None, after: str | None, limit: int,
) -> list[Row[Any]]:
    query = (
        select(connections.c.id, connections.c.integration, connections.c.status,
               connections.c.status_reason, connections.c.status_changed_at,
               connections.c.last_error_code, connections.c.last_error_message,
               connections.c.last_error_at, connections.c.consecutive_failures,
               connections.c.created_at, connections.c.remote_account,
               customers.c.external_id.label("customer"))
        .join(customers, customers.c.id == connections.c.customer_id)
        .where(connections.c.account_id == account_id))
    if status:
        query = query.where(connections.c.status == status)
    if integration:
        query = query.where(connections.c.integration == integration)
    if customer:
        query = query.where(customers.c.external_id == customer)
    if q:
        query = query.where(or_(
            customers.c.external_id.icontains(q, autoescape=True),
            connections.c.id.icontains(q, autoescape=True),
            connections.c.integration.icontains(q, autoescape=True),
            connections.c.status_reason.icontains(q, autoescape=True),
            cast(connections.c.remote_account, String).icontains(q, autoescape=True),
        ))
    if after:
        query = query.where(connections.c.id > after)
    return list((await conn.execute(query.order_by(connections.c.id).limit(limit))).all())


async def connection_labels(
    conn: AsyncConnection, account_id: str, ids: Sequence[str]
) -> dict[str, str]:
    """Customer ids of connections, to show people's names rather than ids."""
    wanted = {i for i in ids if i}
    if not wanted:
        return {}
    return {r.id: r.customer for r in await conn.execute(
        select(connections.c.id, customers.c.external_id.label("customer"))
        .join(customers, customers.c.id == connections.c.customer_id)
        .where(connections.c.account_id == account_id, connections.c.id.in_(wanted)))}


@dataclass
class WebhookHealth:
    delivered: int = 0
    failed: int = 0
    retrying: int = 0
    pending: int = 0
    endpoint_disabled: bool = False

    @property
    def total(self) -> int:
        return self.delivered + self.failed + self.retrying + self.pending

    @property
    def tone(self) -> str:
        if self.failed or self.endpoint_disabled:
            return "bad"
        if self.retrying:
            return "warn"
        return "ok" if self.delivered else "muted"

    @property
    def label(self) -> str:
        if self.endpoint_disabled:
            return "Endpoint disabled"
        if not self.total:
            return "No deliveries"
        if self.failed:
            return f"{self.failed} failed of {self.total}"
        if self.retrying:
            return f"{self.retrying} retrying of {self.total}"
        if self.pending:
            return f"{self.delivered} delivered, {self.pending} pending"
        return f"All {self.delivered} delivered"


@dataclass
class ConnectionFacts:
    last_success: datetime | None = None
    last_sync_status: str | None = None
    webhooks: WebhookHealth = field(default_factory=WebhookHealth)


# Deliveries already attempted at least once (a pending one is then retrying).
_TRIED = func.sum(case((deliveries.c.attempt_count > 0, 1), else_=0))


def delivery_state(status: str, attempt_count: int) -> str:
    return "retrying" if status == "pending" and attempt_count > 0 else status


async def connection_facts(
    conn: AsyncConnection, account_id: str, ids: Sequence[str], now: datetime
) -> dict[str, ConnectionFacts]:
    """Last successful sync and webhook health (last 24 h) of a page of connections."""
    facts = {i: ConnectionFacts() for i in ids}
    if not ids:
        return facts
    for cid, at in await conn.execute(
            select(syncs.c.connection_id, func.max(syncs.c.finished_at))
            .where(syncs.c.connection_id.in_(ids), syncs.c.status == "completed")
            .group_by(syncs.c.connection_id)):
        facts[cid].last_success = at
    latest = (select(func.max(syncs.c.id)).where(syncs.c.connection_id.in_(ids))
              .group_by(syncs.c.connection_id))
    for cid, status in await conn.execute(
            select(syncs.c.connection_id, syncs.c.status).where(syncs.c.id.in_(latest))):
        facts[cid].last_sync_status = status
    for cid, status, n, tried in await conn.execute(
            select(events.c.connection_id, deliveries.c.status, func.count(), _TRIED)
            .join(events, events.c.id == deliveries.c.event_id)
            .where(deliveries.c.account_id == account_id, events.c.connection_id.in_(ids),
                   deliveries.c.created_at >= now - DAY)
            .group_by(events.c.connection_id, deliveries.c.status)):
        health = facts[cid].webhooks
        if status == "succeeded":
            health.delivered += n
        elif status == "failed":
            health.failed += n
        elif status == "pending":
            health.retrying += int(tried or 0)
            health.pending += n - int(tried or 0)
        else:
            health.pending += n
    for (cid,) in await conn.execute(
            select(webhook_endpoints.c.connection_id).where(
                webhook_endpoints.c.account_id == account_id,
                webhook_endpoints.c.connection_id.in_(ids),
                webhook_endpoints.c.status == "disabled")):
        facts[cid].webhooks.endpoint_disabled = True
    return facts


# --- webhooks ----------------------------------------------------------------------------------

@dataclass
class DeliverySummary:
    delivered: int = 0
    failed: int = 0
    in_flight: int = 0  # pending, retrying or being sent
    oldest_pending: datetime | None = None
    p95_ms: float | None = None
    attempts: int = 0
    succeeded_attempts: int = 0

    @property
    def success_rate(self) -> float | None:
        if not self.attempts:
            return None
        return 100.0 * self.succeeded_attempts / self.attempts


def percentile(values: Sequence[float], pct: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return float(ordered[index])


async def delivery_summary(
    conn: AsyncConnection, account_id: str, now: datetime
) -> DeliverySummary:
    """The account's webhook traffic of the last 24 hours, and its queue now."""
    out = DeliverySummary()
    for status, n in await conn.execute(
            select(deliveries.c.status, func.count())
            .where(deliveries.c.account_id == account_id, deliveries.c.created_at >= now - DAY)
            .group_by(deliveries.c.status)):
        if status == "succeeded":
            out.delivered = int(n)
        elif status == "failed":
            out.failed = int(n)
    # One branch per status, so that each reads its partial index (pending, leased) on
    # both stores instead of every delivery of the account.
    waiting = union_all(*(
        select(deliveries.c.created_at)
        .where(deliveries.c.account_id == account_id, deliveries.c.status == status)
        for status in ("pending", "delivering")
    )).subquery()
    queued = (await conn.execute(
        select(func.count(), func.min(waiting.c.created_at)))).one()
    out.in_flight, out.oldest_pending = int(queued[0]), queued[1]
    # The newest attempts are enough for a percentile a person reads.
    recent = (await conn.execute(
        select(attempts.c.duration_ms, attempts.c.success)
        .where(attempts.c.account_id == account_id, attempts.c.attempted_at >= now - DAY)
        .order_by(attempts.c.id.desc()).limit(5000))).all()
    out.attempts = len(recent)
    out.succeeded_attempts = sum(1 for r in recent if r.success)
    out.p95_ms = percentile([r.duration_ms for r in recent], 95)
    return out


@dataclass
class EndpointStats:
    attempts: int = 0
    succeeded: int = 0
    last_at: datetime | None = None
    last_code: int | None = None
    last_ok: bool | None = None
    failed_deliveries: int = 0

    @property
    def success_rate(self) -> float | None:
        return 100.0 * self.succeeded / self.attempts if self.attempts else None


def endpoint_state(row: Row[Any]) -> str:
    if row.status == "disabled":
        return "disabled"
    return "failing" if row.failing_since is not None else "enabled"


async def endpoint_rows(
    conn: AsyncConnection, account_id: str, *, status: str | None, q: str | None,
    after: str | None, limit: int,
) -> list[Row[Any]]:
    query = select(webhook_endpoints).where(webhook_endpoints.c.account_id == account_id)
    if status == "disabled":
        query = query.where(webhook_endpoints.c.status == "disabled")
    elif status == "failing":
        query = query.where(webhook_endpoints.c.status == "enabled",
                            webhook_endpoints.c.failing_since.is_not(None))
    elif status == "enabled":
        query = query.where(webhook_endpoints.c.status == "enabled")
    if q:
        query = query.where(or_(webhook_endpoints.c.url.icontains(q, autoescape=True),
                                webhook_endpoints.c.id.icontains(q, autoescape=True),
                                webhook_endpoints.c.description.icontains(q, autoescape=True),
                                webhook_endpoints.c.connection_id == q))
    if after:
        query = query.where(webhook_endpoints.c.id > after)
    return list((await conn.execute(
        query.order_by(webhook_endpoints.c.id).limit(limit))).all())


async def endpoint_stats(
    conn: AsyncConnection, account_id: str, ids: Sequence[str], now: datetime
) -> dict[str, EndpointStats]:
    stats = {i: EndpointStats() for i in ids}
    if not ids:
        return stats
    for eid, total, ok in await conn.execute(
            select(attempts.c.endpoint_id, func.count(), func.sum(attempts.c.success))
            .where(attempts.c.account_id == account_id, attempts.c.endpoint_id.in_(ids),
                   attempts.c.attempted_at >= now - DAY)
            .group_by(attempts.c.endpoint_id)):
        stats[eid].attempts, stats[eid].succeeded = int(total), int(ok or 0)
    newest = (select(func.max(attempts.c.id)).where(attempts.c.endpoint_id.in_(ids))
              .group_by(attempts.c.endpoint_id))
    for row in await conn.execute(
            select(attempts.c.endpoint_id, attempts.c.attempted_at, attempts.c.status_code,
                   attempts.c.success).where(attempts.c.id.in_(newest))):
        s = stats[row.endpoint_id]
        s.last_at, s.last_code, s.last_ok = row.attempted_at, row.status_code, bool(row.success)
    for eid, n in await conn.execute(
            select(deliveries.c.endpoint_id, func.count())
            .where(deliveries.c.endpoint_id.in_(ids), deliveries.c.status == "failed")
            .group_by(deliveries.c.endpoint_id)):
        stats[eid].failed_deliveries = int(n)
    return stats


async def endpoint_urls(
    conn: AsyncConnection, account_id: str, ids: Sequence[str]
) -> dict[str, str]:
    if not ids:
        return {}
    return {r.id: r.url for r in await conn.execute(
        select(webhook_endpoints.c.id, webhook_endpoints.c.url).where(
            webhook_endpoints.c.account_id == account_id,
            webhook_endpoints.c.id.in_(set(ids))))}


async def latest_attempts(
    conn: AsyncConnection, delivery_ids: Sequence[str]
) -> dict[str, Row[Any]]:
    """The newest attempt of each delivery: its status code and latency."""
    if not delivery_ids:
        return {}
    newest = (select(func.max(attempts.c.id)).where(attempts.c.delivery_id.in_(delivery_ids))
              .group_by(attempts.c.delivery_id))
    return {r.delivery_id: r for r in await conn.execute(
        select(attempts).where(attempts.c.id.in_(newest)))}


async def connection_deliveries(
    conn: AsyncConnection, account_id: str, connection_id: str, *, after: str | None,
    limit: int,
) -> list[Row[Any]]:
    """Deliveries of the connection's events, newest first, with their event and endpoint."""
    query = (
        select(deliveries.c.id, deliveries.c.event_id, deliveries.c.endpoint_id,
               deliveries.c.status, deliveries.c.attempt_count, deliveries.c.trigger,
               deliveries.c.last_status_code, deliveries.c.next_attempt_at,
               deliveries.c.created_at, deliveries.c.succeeded_at,
               events.c.type.label("event_type"), webhook_endpoints.c.url)
        .join(events, events.c.id == deliveries.c.event_id)
        .join(webhook_endpoints, webhook_endpoints.c.id == deliveries.c.endpoint_id)
        .where(deliveries.c.account_id == account_id, events.c.connection_id == connection_id))
    if after:
        query = query.where(deliveries.c.id < after)
    return list((await conn.execute(query.order_by(deliveries.c.id.desc()).limit(limit))).all())


# --- events --------------------------------------------------------------------------------------

async def event_rows(
    conn: AsyncConnection, account_id: str, *, q: str | None, type: str | None,
    connection_id: str | None, customer: str | None, after: str | None, limit: int,
) -> list[Row[Any]]:
    """Newest first. `q` matches the type, the customer and the payload text (a scan of the
    account's events within the retention, newest first, stopping at `limit` matches)."""
    query = select(events).where(events.c.account_id == account_id)
    if type:
        query = query.where(events.c.type == type)
    if connection_id:
        query = query.where(events.c.connection_id == connection_id)
    if customer:
        query = query.where(events.c.customer_id == customer)
    if q:
        query = query.where(or_(events.c.type.icontains(q, autoescape=True),
                                events.c.customer_id.icontains(q, autoescape=True),
                                cast(events.c.data, String).icontains(q, autoescape=True)))
    if after:
        query = query.where(events.c.id < after)
    return list((await conn.execute(query.order_by(events.c.id.desc()).limit(limit))).all())


async def event_types(
    conn: AsyncConnection, account_id: str, ids: set[str]
) -> dict[str, str]:
    if not ids:
        return {}
    return {r.id: r.type for r in await conn.execute(
        select(events.c.id, events.c.type).where(events.c.account_id == account_id,
                                                 events.c.id.in_(ids)))}


async def deliveries_by_event(
    conn: AsyncConnection, account_id: str, event_ids: Sequence[str]
) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {i: {} for i in event_ids}
    if not event_ids:
        return out
    for eid, status, n, tried in await conn.execute(
            select(deliveries.c.event_id, deliveries.c.status, func.count(), _TRIED)
            .where(deliveries.c.account_id == account_id, deliveries.c.event_id.in_(event_ids))
            .group_by(deliveries.c.event_id, deliveries.c.status)):
        counts = out[eid]
        if status == "pending" and tried:
            counts["retrying"] = int(tried)
            n -= int(tried)
        if n:
            counts[status] = int(n)
    return out


async def jump_target(conn: AsyncConnection, account_id: str, text: str) -> str | None:
    """Where a pasted id leads: an event, a delivery's or attempt's event, a connection, an
    endpoint. None if it names nothing of this account (or something already purged)."""
    prefix = text.split("_", 1)[0]
    if prefix == "evt":
        query = select(events.c.id).where(events.c.id == text)
    elif prefix == "dlv":
        query = select(deliveries.c.event_id).where(deliveries.c.id == text)
        query = query.where(deliveries.c.account_id == account_id)
        found = (await conn.execute(query)).scalar()
        return f"/dashboard/events/{found}" if found else None
    elif prefix == "att":
        found = (await conn.execute(select(attempts.c.event_id).where(
            attempts.c.id == text, attempts.c.account_id == account_id))).scalar()
        return f"/dashboard/events/{found}" if found else None
    elif prefix == "conn":
        found = (await conn.execute(select(connections.c.id).where(
            connections.c.id == text, connections.c.account_id == account_id))).scalar()
        return f"/dashboard/connections/{found}" if found else None
    elif prefix == "ep":
        found = (await conn.execute(select(webhook_endpoints.c.id).where(
            webhook_endpoints.c.id == text,
            webhook_endpoints.c.account_id == account_id))).scalar()
        return f"/dashboard/webhooks/{found}" if found else None
    else:
        return None
    found = (await conn.execute(query.where(events.c.account_id == account_id))).scalar()
    return f"/dashboard/events/{found}" if found else None


# --- link tokens (reconnect links) -----------------------------------------------------------

async def reconnect_links(
    conn: AsyncConnection, account_id: str, connection_id: str, now: datetime
) -> list[Row[Any]]:
    """Reconnect links of a connection created in the last week, newest first."""
    return list((await conn.execute(
        select(link_tokens).where(
            link_tokens.c.account_id == account_id, link_tokens.c.connection_id == connection_id,
            link_tokens.c.mode == "reconnect",
            or_(link_tokens.c.status == "open", link_tokens.c.created_at >= now - 7 * DAY))
        .order_by(link_tokens.c.id.desc()).limit(5))).all())


async def last_redirect_uri(conn: AsyncConnection, account_id: str) -> str | None:
    """The redirect URI of the account's newest link token: where the developer's backend
    receives the flow's code, the likeliest answer for a new reconnect link."""
    return (await conn.execute(
        select(link_tokens.c.redirect_uri).where(link_tokens.c.account_id == account_id)
        .order_by(link_tokens.c.id.desc()).limit(1))).scalar()
