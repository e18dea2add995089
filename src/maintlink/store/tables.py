"""Every table, in one schema for SQLite and PostgreSQL. Alembic migrations mirror it."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from maintlink.store.types import JSONType, UTCDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False, index=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("hint", String(40), nullable=False),
    Column("name", String(200)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_used_at", UTCDateTime),
    Column("revoked_at", UTCDateTime),
)

customers = Table(
    "customers",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    Column("external_id", String(200), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("account_id", "external_id"),
)

connections = Table(
    "connections",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    Column("customer_id", String(40), ForeignKey("customers.id"), nullable=False),
    Column("integration", String(64), nullable=False),
    Column("status", String(32), nullable=False),
    Column("credentials_encrypted", Text, nullable=False),
    Column("settings", JSONType, nullable=False),
    Column("remote_account", JSONType),
    Column("token_hash", String(64), unique=True),
    Column("token_hint", String(40)),
    Column("token_issued_at", UTCDateTime),
    Column("status_reason", Text),
    Column("status_changed_at", UTCDateTime, nullable=False),
    Column("last_checked_at", UTCDateTime),
    Column("last_error_code", String(64)),
    Column("last_error_message", Text),
    Column("last_error_at", UTCDateTime),
    Column("consecutive_failures", Integer, nullable=False, default=0),
    Column("event_sequence", BigInteger, nullable=False, default=0),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("disconnected_at", UTCDateTime),
    # Scheduling of background work; a sync runs under a lease so one runs at a time.
    Column("next_sync_at", UTCDateTime),
    Column("sync_requested_at", UTCDateTime),
    Column("next_health_check_at", UTCDateTime),
    Column("next_full_sync_at", UTCDateTime),
    Column("sync_lease_owner", String(64)),
    Column("sync_lease_expires_at", UTCDateTime),
    Column("field_mappings", JSONType),
    Column("open_errors", JSONType),  # codes of connection.error already raised
    Index(None, "account_id", "id"),
    Index(None, "account_id", "status"),
    Index(None, "customer_id"),
)

connection_transitions = Table(
    "connection_transitions",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("connection_id", String(40), ForeignKey("connections.id"), nullable=False),
    Column("account_id", String(40), nullable=False),
    Column("from_status", String(32)),
    Column("to_status", String(32), nullable=False),
    Column("reason", Text),
    Column("error_code", String(64)),
    Column("at", UTCDateTime, nullable=False),
    Index(None, "connection_id", "at"),
)

# Synced records of every unified entity, one row per remote record.
records = Table(
    "records",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("connection_id", String(40), ForeignKey("connections.id"), nullable=False),
    Column("entity", String(32), nullable=False),
    Column("remote_id", String(200), nullable=False),
    Column("data", JSONType, nullable=False),
    Column("remote_data", JSONType),
    Column("remote_created_at", UTCDateTime),
    Column("remote_updated_at", UTCDateTime),
    Column("modified_at", UTCDateTime, nullable=False),
    Column("deleted_at", UTCDateTime),
    Column("data_hash", String(64)),  # of data + remote_data: unchanged pages write nothing
    Column("last_seen_sync_id", String(40)),  # full reconciliation: who saw it last
    UniqueConstraint("connection_id", "entity", "remote_id"),
    Index(None, "connection_id", "entity", "modified_at", "id"),
)

syncs = Table(
    "syncs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("connection_id", String(40), ForeignKey("connections.id"), nullable=False),
    Column("account_id", String(40), nullable=False),
    Column("kind", String(16), nullable=False),  # initial | incremental | full
    Column("status", String(16), nullable=False),  # running | completed | failed
    Column("trigger", String(16), nullable=False),  # schedule | manual | reauthorized
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Column("entities", JSONType, nullable=False),  # {entity: {created, updated, deleted}}
    Column("error_code", String(64)),
    Column("error_message", Text),
    Column("attempts", Integer, nullable=False, default=1),
    Index(None, "connection_id", "id"),
)

# Per connection and entity: where incremental syncs start, and how a run resumes.
sync_states = Table(
    "sync_states",
    metadata,
    Column("connection_id", String(40), ForeignKey("connections.id"), primary_key=True),
    Column("entity", String(32), primary_key=True),
    Column("high_water_mark", UTCDateTime),
    Column("last_successful_sync_at", UTCDateTime),
    Column("status", String(16), nullable=False),  # idle | in_progress | completed | failed
    Column("sync_id", String(40)),  # the run a checkpoint belongs to
    Column("resume_cursor", Text),
    Column("run_high_water_mark", UTCDateTime),  # newest change seen by the running sync
    Column("last_error", Text),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("connection_id", String(40), ForeignKey("connections.id"), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("status_code", Integer),  # null while the first request is in flight
    Column("response", JSONType),
    Column("created_at", UTCDateTime, nullable=False),
    Index(None, "created_at"),
)

# Fixed one-minute windows, shared by every API process through the store.
rate_limit_windows = Table(
    "rate_limit_windows",
    metadata,
    Column("bucket", String(80), primary_key=True),
    Column("window_start", BigInteger, primary_key=True),
    Column("count", Integer, nullable=False),
)

# --- webhooks --------------------------------------------------------------------------

# The outbox: written in the same transaction as the change that causes the event.
events = Table(
    "events",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    Column("connection_id", String(40)),  # null for account-level events
    Column("customer_id", String(200)),  # the developer's external id, as sent
    Column("type", String(64), nullable=False),
    Column("sequence", BigInteger),  # per connection, from connections.event_sequence
    Column("data", JSONType, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index(None, "account_id", "id"),
    Index(None, "account_id", "type", "id"),
    Index(None, "connection_id", "id"),
    Index(None, "created_at"),
)

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    Column("connection_id", String(40), ForeignKey("connections.id")),  # null: all
    Column("managed_by_connection", Integer, nullable=False, default=0),
    Column("url", Text, nullable=False),
    Column("description", Text),
    Column("events", JSONType),  # list of types; null: every type
    Column("api_version", String(16), nullable=False),
    Column("headers", JSONType, nullable=False),
    Column("rate_limit_per_second", Integer),
    Column("secret_encrypted", Text, nullable=False),
    Column("previous_secret_encrypted", Text),
    Column("previous_secret_expires_at", UTCDateTime),
    Column("status", String(16), nullable=False),  # enabled | disabled
    Column("disabled_reason", Text),
    Column("disabled_at", UTCDateTime),
    Column("failing_since", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index(None, "account_id", "id"),
    Index(None, "connection_id"),
)

# The rows of the two partial indexes of ``deliveries``.
_PENDING = text("status = 'pending'")
_LEASED = text("status = 'delivering'")

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("event_id", String(40), ForeignKey("events.id", ondelete="CASCADE"), nullable=False),
    Column("endpoint_id", String(40), ForeignKey("webhook_endpoints.id", ondelete="CASCADE"),
           nullable=False),
    Column("account_id", String(40), nullable=False),
    # pending -> (delivering) -> succeeded | pending (retry) | failed
    Column("status", String(16), nullable=False),
    Column("body", Text, nullable=False),  # rendered once, in the endpoint's API version
    Column("attempt_count", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime),
    Column("lease_owner", String(64)),
    Column("lease_expires_at", UTCDateTime),
    Column("trigger", String(16), nullable=False),  # scheduled | manual | recover | test
    Column("last_status_code", Integer),
    Column("last_failure_kind", String(32)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("succeeded_at", UTCDateTime),
    # Partial, so that only rows a claim looks for are indexed: a claimed row leaves the
    # first, a finished one both, and neither index grows with the delivered history.
    Index("ix_deliveries_pending_due", "next_attempt_at",
          postgresql_where=_PENDING, sqlite_where=_PENDING),
    Index("ix_deliveries_leased_until", "lease_expires_at",
          postgresql_where=_LEASED, sqlite_where=_LEASED),
    Index(None, "endpoint_id", "status"),
    Index(None, "event_id"),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", String(40), primary_key=True),
    # No foreign key: checking it cost every recorded attempt an index lookup. Attempts are
    # deleted with their deliveries by the code that deletes those (an endpoint's deletion,
    # the retention purge), after them, so a concurrent recording cannot leave one behind.
    Column("delivery_id", String(40), nullable=False),
    Column("event_id", String(40), nullable=False),
    Column("endpoint_id", String(40), nullable=False),
    Column("account_id", String(40), nullable=False),
    Column("attempt_number", Integer, nullable=False),
    Column("trigger", String(16), nullable=False),
    Column("attempted_at", UTCDateTime, nullable=False),
    Column("duration_ms", Integer, nullable=False),
    Column("status_code", Integer),
    Column("success", Integer, nullable=False),
    Column("failure_kind", String(32)),
    Column("error", Text),
    Column("response_body", Text),
    Column("next_attempt_at", UTCDateTime),
    Index(None, "endpoint_id", "id"),
    Index(None, "event_id", "id"),
    Index(None, "delivery_id"),
    Index(None, "attempted_at"),
)

# --- connection flow: link tokens and their one-time exchange codes ---------------------
# (owned by the connection-flow work; appended here so the single initial migration holds it)

# A link token starts the hosted flow. Only its SHA-256 is kept; everything the browser
# could tamper with (customer, integration, mode, redirect URI, origin) is bound here.
link_tokens = Table(
    "link_tokens",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("customer_external_id", String(200), nullable=False),
    Column("integration", String(64)),  # null: the customer picks
    Column("mode", String(16), nullable=False),  # create | reconnect
    Column("connection_id", String(40), ForeignKey("connections.id")),  # reconnect mode
    Column("redirect_uri", Text, nullable=False),
    Column("allowed_origin", String(300)),  # embedding: postMessage target, frame-ancestors
    Column("state", Text),  # passed back on the redirect, untouched
    Column("webhook_url", Text),
    Column("webhook_events", JSONType),
    Column("collect_webhook_url", Integer, nullable=False, default=0),
    Column("status", String(16), nullable=False),  # open | used | locked | revoked
    Column("failed_attempts", Integer, nullable=False, default=0),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime),
    Column("revoked_at", UTCDateTime),
    Column("result_connection_id", String(40)),  # what the flow created or reauthorized
    # OAuth2 in flight: the state's hash finds the token on the callback; the PKCE verifier
    # and the form's values (with the link token itself, to return to its page) are
    # encrypted and erased by the callback.
    Column("oauth_state_hash", String(64), unique=True),
    Column("oauth_pending_encrypted", Text),
    Column("oauth_started_at", UTCDateTime),
    Index(None, "account_id", "id"),
    Index(None, "expires_at"),
)

# The one-time code the browser carries back to the developer. Only its hash is kept;
# the connection token waits encrypted until the exchange, which erases it.
link_codes = Table(
    "link_codes",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    Column("link_token_id", String(40), ForeignKey("link_tokens.id"), nullable=False,
           unique=True),
    Column("code_hash", String(64), nullable=False, unique=True),
    Column("connection_id", String(40), ForeignKey("connections.id"), nullable=False),
    Column("mode", String(16), nullable=False),
    Column("token_encrypted", Text),  # null once exchanged or expired
    Column("webhook_endpoint_id", String(40)),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("exchanged_at", UTCDateTime),
    Index(None, "expires_at"),
)

# --- dashboard: the API request log -------------------------------------------------------
# (owned by the dashboard work; appended here so the single initial migration holds it)

# One row per authenticated /api request: what support asks about ("request req_... failed").
# Written in batches off the request path; never headers or bodies. No foreign keys: rows are
# bulk-inserted by a background flusher and purged by age and by a row cap.
request_log = Table(
    "request_log",
    metadata,
    Column("id", String(40), primary_key=True),  # time-ordered: the cursor of the log
    Column("account_id", String(40), nullable=False),
    Column("connection_id", String(40)),  # the connection's token, or a connection route
    Column("key_id", String(40)),  # the admin key, for admin requests
    Column("request_id", String(128), nullable=False),  # X-Request-Id, as answered
    Column("method", String(10), nullable=False),
    Column("path", String(512), nullable=False),  # without the query string
    Column("status", Integer, nullable=False),
    Column("duration_ms", Float, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Index(None, "account_id", "id"),
    Index(None, "account_id", "connection_id", "id"),
    Index(None, "account_id", "request_id"),
    Index(None, "at"),
)
