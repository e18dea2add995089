"""Alembic runs inside maintlink: the connection comes from `store.db.migrate`."""

from alembic import context

from maintlink.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only through `maintlink migrate`
    raise RuntimeError("run migrations with `maintlink migrate`")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
