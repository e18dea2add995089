"""Every table, in one schema for SQLite and PostgreSQL. Alembic migrations mirror it."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
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
    UniqueConstraint("connection_id", "entity", "remote_id"),
    Index(None, "connection_id", "entity", "modified_at", "id"),
)

# Fixed one-minute windows, shared by every API process through the store.
rate_limit_windows = Table(
    "rate_limit_windows",
    metadata,
    Column("bucket", String(80), primary_key=True),
    Column("window_start", BigInteger, primary_key=True),
    Column("count", Integer, nullable=False),
)
