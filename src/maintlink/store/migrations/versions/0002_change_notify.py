"""notify other processes when admin keys or connections change

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 23:40:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# API processes cache admin keys and connection rows for a few seconds; these triggers tell
# them, from the changing transaction (so only once it commits), to forget. SQLite has no
# NOTIFY: `maintlink.store.change_watch` covers it.
_FUNCTION = """
CREATE OR REPLACE FUNCTION maintlink_notify_changes() RETURNS trigger AS $$
BEGIN
    -- One notification per transaction and table: PostgreSQL folds identical ones.
    PERFORM pg_notify('maintlink_changes', TG_TABLE_NAME);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql
"""

# The columns the caches read (see `maintlink.store.change_watch.WATCHED_COLUMNS`): writes to
# other columns (sync leases every second, last_used_at) must not empty every cache.
_WATCHED = {
    "api_keys": ("key_hash", "account_id", "revoked_at"),
    "connections": (
        "account_id", "token_hash", "status", "status_reason", "status_changed_at",
        "last_checked_at", "last_error_code", "last_error_message", "last_error_at",
    ),
}


def _triggers() -> dict[str, tuple[str, str]]:
    """name -> (table, definition)"""
    out: dict[str, tuple[str, str]] = {}
    for table, columns in _WATCHED.items():
        old = ", ".join(f"OLD.{c}" for c in columns)
        new = ", ".join(f"NEW.{c}" for c in columns)
        out[f"{table}_changed"] = (
            table,
            f"AFTER UPDATE ON {table} FOR EACH ROW WHEN (({old}) IS DISTINCT FROM ({new}))",
        )
        out[f"{table}_deleted"] = (table, f"AFTER DELETE ON {table} FOR EACH ROW")
    return out


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_FUNCTION)
    for name, (_table, when) in _triggers().items():
        op.execute(f"CREATE TRIGGER {name} {when} EXECUTE FUNCTION maintlink_notify_changes()")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, (table, _when) in _triggers().items():
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
    op.execute("DROP FUNCTION IF EXISTS maintlink_notify_changes()")
