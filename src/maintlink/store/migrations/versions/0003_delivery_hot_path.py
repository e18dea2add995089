"""deliveries: partial indexes for claims; attempts: no foreign key to deliveries

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 16:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Every claim and every recorded attempt wrote an entry into (status, next_attempt_at), which
# held every delivery ever made; the partial indexes hold only the rows a claim looks for
# (due ones, and leased ones whose lease may run out). The attempts -> deliveries foreign key
# cost each recorded attempt a lookup; the code deletes attempts with their deliveries.
_PENDING = "status = 'pending'"
_LEASED = "status = 'delivering'"


def upgrade() -> None:
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.drop_constraint("fk_attempts_delivery_id_deliveries", type_="foreignkey")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_deliveries_pending_due", ["next_attempt_at"],
            postgresql_where=sa.text(_PENDING), sqlite_where=sa.text(_PENDING),
        )
        batch_op.create_index(
            "ix_deliveries_leased_until", ["lease_expires_at"],
            postgresql_where=sa.text(_LEASED), sqlite_where=sa.text(_LEASED),
        )
        batch_op.drop_index("ix_deliveries_status_next_attempt_at")


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_deliveries_status_next_attempt_at", ["status", "next_attempt_at"], unique=False
        )
        batch_op.drop_index("ix_deliveries_leased_until")
        batch_op.drop_index("ix_deliveries_pending_due")
    # Attempts whose delivery is gone would break the constraint: they go first.
    op.execute("DELETE FROM attempts WHERE delivery_id NOT IN (SELECT id FROM deliveries)")
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.create_foreign_key(
            "fk_attempts_delivery_id_deliveries", "deliveries", ["delivery_id"], ["id"],
            ondelete="CASCADE",
        )
