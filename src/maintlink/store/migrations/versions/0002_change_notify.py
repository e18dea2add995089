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
    PERFORM pg_notify('maintlink_changes', TG_TABLE_NAME);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql
"""

_TRIGGERS = {
    "api_keys_changed": "AFTER UPDATE OR DELETE ON api_keys",
    "connections_changed": "AFTER UPDATE OR DELETE ON connections",
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_FUNCTION)
    for name, when in _TRIGGERS.items():
        op.execute(
            f"CREATE TRIGGER {name} {when} "
            "FOR EACH STATEMENT EXECUTE FUNCTION maintlink_notify_changes()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, when in _TRIGGERS.items():
        table = when.rsplit(" ", 1)[-1]
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
    op.execute("DROP FUNCTION IF EXISTS maintlink_notify_changes()")
