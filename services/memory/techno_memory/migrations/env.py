"""Alembic environment of the memory service. Run through ``python -m techno_memory migrate``, which passes an
open connection of the service's engine (so the URL, driver and connection settings are the service's own)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from techno_memory.adapters.tables import Base


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead (a no-op on PostgreSQL).
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


_connection = context.config.attributes.get("connection")
if not isinstance(_connection, Connection):
    raise RuntimeError("run the memory service's migrations with `python -m techno_memory migrate`")
run_migrations(_connection)
