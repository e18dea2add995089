"""The delivery worker's hot path on PostgreSQL: claims and recorded successes as single
statements on the worker's own asyncpg connections.

Each statement is its own transaction (one round trip, prepared once per connection by
asyncpg's statement cache), which costs a fraction of a SQLAlchemy transaction. Everything
rare (failures, lease extensions, releasing leases at shutdown) stays on the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

__all__ = ["RECORD_SUCCESSES_SQL", "PgLink", "claim_sql", "connection_lost", "success_batch"]

# Candidates are the oldest due rows, read off ix_deliveries_pending_due in index
# order (cost independent of the backlog), minus the endpoints this worker already holds
# enough of. Per endpoint, no more than its room (what this worker may still hold of it,
# and never more than a second of its rate limit). The due test is repeated on the locked
# rows: PostgreSQL re-checks it against the newest version, so a row another worker just
# claimed is skipped. Leases that ran out (a crashed worker's) are looked for only when $9 is
# true: that scan walks every leased row.
#
# The statement is built with its candidate count as a literal and, when no endpoint is left
# out, without the $4 filter on the main scan, so that each plan is an index scan that stops
# after the candidates. PostgreSQL plans every claim anew (it costs its generic plan above a
# custom one): 0.3-0.5 ms of a 70-row claim's 1.4-2 ms. Forcing the generic plan
# (``plan_cache_mode``) would save that, but a plan kept from when the tables held a row
# or two walks a whole index per claim until the next ANALYZE (the primary key here, or
# every endpoint for every candidate: 330 ms a claim with 2,000 endpoints), so it is not
# done. ``claim_sql`` caches the few texts a worker uses.
_CLAIM_TEMPLATE = """
WITH cand AS (
    (SELECT id, endpoint_id, next_attempt_at AS due FROM deliveries
     WHERE status = 'pending' AND next_attempt_at <= $1{skip}
     ORDER BY next_attempt_at LIMIT {candidates})
    UNION ALL
    (SELECT id, endpoint_id, lease_expires_at AS due FROM deliveries
     WHERE $9::boolean AND status = 'delivering' AND lease_expires_at < $1
       AND endpoint_id <> ALL($4::text[])
     ORDER BY lease_expires_at LIMIT {candidates})
),
ranked AS (
    SELECT c.id, c.due,
           row_number() OVER (PARTITION BY c.endpoint_id ORDER BY c.due, c.id) AS rn,
           LEAST($7::int, CASE WHEN e.rate_limit_per_second > 0
                               THEN e.rate_limit_per_second ELSE $7::int END)
               - COALESCE(h.held, 0) AS room
    FROM cand c
    JOIN webhook_endpoints e ON e.id = c.endpoint_id AND e.status = 'enabled'
    LEFT JOIN unnest($5::text[], $6::int[]) AS h(endpoint_id, held)
        ON h.endpoint_id = c.endpoint_id
),
locked AS (
    SELECT d.id FROM deliveries d JOIN ranked r ON r.id = d.id
    WHERE r.rn <= r.room
      AND ((d.status = 'pending' AND d.next_attempt_at <= $1)
           OR (d.status = 'delivering' AND d.lease_expires_at < $1))
    ORDER BY r.due, d.id
    LIMIT $8
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE deliveries d
SET status = 'delivering', lease_owner = $3, lease_expires_at = $2, updated_at = $1
FROM locked l, webhook_endpoints e
WHERE d.id = l.id AND e.id = d.endpoint_id
RETURNING d.id, d.event_id, d.endpoint_id, d.account_id, d.body, d.attempt_count, d."trigger",
          e.url, e.headers::text AS headers, e.api_version, e.rate_limit_per_second,
          e.secret_encrypted, e.previous_secret_encrypted, e.previous_secret_expires_at
"""


@functools.cache
def claim_sql(candidates: int, skip_endpoints: bool) -> str:
    """The claim statement. Parameters: $1 now, $2 lease end, $3 worker id, $4 endpoints to
    leave out, $5/$6 endpoints held and how many, $7 most held per endpoint, $8 most rows,
    $9 whether to look for run-out leases."""
    skip = " AND endpoint_id <> ALL($4::text[])" if skip_endpoints else ""
    return _CLAIM_TEMPLATE.format(candidates=int(candidates), skip=skip)


# Successful attempts of one worker, recorded together: only the rows whose lease is still
# ours change, the endpoints' failing streaks end, and one attempt row is written per
# recorded delivery. One statement, so one transaction and one fsync for the batch. The
# batch travels as one JSON array ($3, see ``success_batch``): encoding eight parameter
# arrays cost the worker twice as much, and the server more to unnest. The delivery ids
# come again as an array ($4): PostgreSQL guesses 100 rows for any JSON set, and with that
# guess it walked every leased row instead of looking up the batch's by primary key.
# A row has a lease owner exactly while it is 'delivering' (every write sets the two
# together), so the owner alone proves the lease; testing the status as well would invite
# the planner to walk every leased row through the status index for each batch.
RECORD_SUCCESSES_SQL = """
WITH batch AS (
    SELECT * FROM json_to_recordset($3::json)
        AS b(id text, attempt_number int, status_code int, attempt_id text,
             attempted_at timestamptz, duration_ms int, error text, response_body text)
),
done AS (
    UPDATE deliveries d
    SET status = 'succeeded', attempt_count = b.attempt_number, next_attempt_at = NULL,
        lease_owner = NULL, lease_expires_at = NULL, updated_at = $2,
        last_status_code = b.status_code, last_failure_kind = NULL, succeeded_at = $2
    FROM batch b
    WHERE d.id = ANY($4::text[]) AND d.id = b.id AND d.lease_owner = $1
    RETURNING d.id, d.event_id, d.endpoint_id, d.account_id, d."trigger"
),
streaks AS (
    UPDATE webhook_endpoints e SET failing_since = NULL, updated_at = $2
    WHERE e.id IN (SELECT endpoint_id FROM done) AND e.failing_since IS NOT NULL
),
logged AS (
    INSERT INTO attempts (id, delivery_id, event_id, endpoint_id, account_id, attempt_number,
                          "trigger", attempted_at, duration_ms, status_code, success,
                          failure_kind, error, response_body, next_attempt_at)
    SELECT b.attempt_id, done.id, done.event_id, done.endpoint_id, done.account_id,
           b.attempt_number, done."trigger", b.attempted_at, b.duration_ms, b.status_code, 1,
           NULL, b.error, b.response_body, NULL
    FROM batch b JOIN done ON done.id = b.id
)
SELECT id FROM done
"""


def success_batch(rows: Sequence[dict[str, Any]]) -> str:
    """``RECORD_SUCCESSES_SQL``'s $3: one object per attempt, with the keys ``id`` (the
    delivery), ``attempt_number``, ``status_code``, ``attempt_id``, ``attempted_at`` (an aware
    datetime; naive counts as UTC), ``duration_ms``, ``error`` and ``response_body``."""
    return orjson.dumps(rows, option=orjson.OPT_NAIVE_UTC).decode()


def connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection is unusable (as opposed to a failed statement)."""
    return isinstance(
        exc,
        asyncpg.InterfaceError
        | asyncpg.PostgresConnectionError
        | OSError
        | asyncpg.exceptions.AdminShutdownError,
    )


class PgLink:
    """One dedicated asyncpg connection, used by one caller at a time, reopened after a loss.

    ``server_settings`` apply to the whole session, e.g. ``synchronous_commit=off`` for the
    connection that only claims."""

    def __init__(self, dsn: str, server_settings: dict[str, str] | None = None) -> None:
        self.dsn = dsn
        self.server_settings = server_settings or {}
        self.statements = 0  # sent, for benchmarks
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                self.dsn, timeout=10, server_settings=self.server_settings
            )
        return self._conn

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    async def fetch(self, sql: str, *args: Any) -> Sequence[asyncpg.Record]:
        async with self._lock:
            conn = await self._connection()
            self.statements += 1
            try:
                result: Sequence[asyncpg.Record] = await conn.fetch(sql, *args)
            except BaseException as exc:
                if connection_lost(exc) or isinstance(exc, asyncio.CancelledError):
                    # Cancelled mid-statement, the protocol state is unknown: start afresh.
                    await self._discard()
                raise
            return result

    async def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def aclose(self) -> None:
        async with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2)
