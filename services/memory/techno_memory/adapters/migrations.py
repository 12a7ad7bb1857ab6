"""Schema migrations, run programmatically: the Alembic configuration is built here (no alembic.ini), and every
command runs on a connection of the service's own async engine, inside one transaction."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from techno_core.runner import StartupError

MIGRATIONS_DIRECTORY = Path(__file__).resolve().parent.parent / "migrations"
MIGRATE_COMMAND = "python -m techno_memory migrate"


class SchemaNotCurrent(StartupError):
    """The database is not at the schema revision this release needs; the operator must migrate it first."""


class DatabaseUnreachable(StartupError):
    """The database refused or dropped the connection."""


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIRECTORY))
    if connection is not None:
        # env.py runs the migrations on this connection instead of opening its own.
        config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    async with engine.begin() as connection:
        await connection.run_sync(lambda sync: command.upgrade(alembic_config(sync), revision))


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    async with engine.begin() as connection:
        await connection.run_sync(lambda sync: command.downgrade(alembic_config(sync), revision))


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        return await connection.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())


async def ensure_schema_current(engine: AsyncEngine) -> None:
    """Refuse to serve on a schema this release was not written for (missing tables or columns would only
    show up later as failed requests). Migrating is a deliberate operator step, never a side effect of starting."""
    try:
        current = await current_revision(engine)
    except (OperationalError, InterfaceError) as error:
        raise unreachable(engine, error) from error
    head = head_revision()
    if current != head:
        raise SchemaNotCurrent(
            f"database schema is at revision {current or 'none (empty database)'}, this release needs {head}: "
            f"run `{MIGRATE_COMMAND}` first"
        )


def unreachable(engine: AsyncEngine, error: Exception) -> DatabaseUnreachable:
    """One line naming the database (never its password) and the driver's first line of explanation."""
    reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
    return DatabaseUnreachable(f"cannot reach the database {engine.url.render_as_string(hide_password=True)}: {reason}")
