"""On PostgreSQL the database itself keeps the audit trail append-only: UPDATE, DELETE and TRUNCATE of
audit_events are refused, whatever the client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

import pytest
from sqlalchemy import Table, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from techno_memory.adapters.chain import verify_chain
from techno_memory.adapters.database import create_database_engine
from techno_memory.adapters.migrations import downgrade
from techno_memory.adapters.repository import SqlRepository
from techno_memory.adapters.tables import AuditEventRow

from .conftest import migrate
from .test_chain import event

EVENTS = cast(Table, AuditEventRow.__table__)


@pytest.fixture
async def postgres(postgres_database: str) -> AsyncIterator[AsyncEngine]:
    await migrate(postgres_database, to="base")
    await migrate(postgres_database, to="head")
    engine = create_database_engine(postgres_database, pool_size=2, tracer_provider=None)
    async with SqlRepository(engine) as repository:
        await repository.append_events([event(n) for n in range(3)])
    yield engine
    await engine.dispose()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_events SET result = 'DENY'",
        "UPDATE audit_events SET hash = hash",
        "DELETE FROM audit_events",
        "DELETE FROM audit_events WHERE id = (SELECT max(id) FROM audit_events)",
        "TRUNCATE audit_events",
    ],
)
async def test_postgresql_refuses_changing_or_removing_events(postgres: AsyncEngine, statement: str) -> None:
    with pytest.raises(DBAPIError, match="audit_events is append-only"):
        async with postgres.begin() as connection:
            await connection.exec_driver_sql(statement)
    async with postgres.connect() as connection:
        assert len((await connection.execute(select(EVENTS.c.id))).all()) == 3
    report = await verify_chain(postgres)
    assert report.intact
    assert report.verified == 3


async def test_appends_still_work(postgres: AsyncEngine) -> None:
    async with SqlRepository(postgres) as repository:
        assert await repository.append_events([event(9)]) == 1
    assert (await verify_chain(postgres)).verified == 4


async def test_downgrade_removes_the_triggers(postgres: AsyncEngine) -> None:
    await downgrade(postgres, "0003")
    async with postgres.begin() as connection:
        await connection.exec_driver_sql("DELETE FROM audit_events")
        names = (
            await connection.exec_driver_sql(
                "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'audit_events'::regclass AND NOT tgisinternal"
            )
        ).scalar_one()
        functions = (
            await connection.exec_driver_sql(
                "SELECT count(*) FROM pg_proc WHERE proname = 'audit_events_refuse_change'"
            )
        ).scalar_one()
    assert (names, functions) == (0, 0)
