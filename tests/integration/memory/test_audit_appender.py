"""The PostgreSQL audit appender on the real server: several appenders (each with its own connection, as memory
replicas are) extending one chain, concurrently and in turns, with retried and repeated event_ids and a
connection the server dropped. Whatever the interleaving: every event stored once, one intact chain."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from techno_core.errors import Unavailable
from techno_memory.adapters.audit_appender import PostgresAuditAppender, connect
from techno_memory.adapters.chain import verify_chain
from techno_memory.adapters.database import create_database_engine
from techno_memory.domain.chain import ChainReport
from techno_memory.domain.records import AuditEvent

from .conftest import migrate
from .test_chain import event

RECORDED_AT = datetime(2025, 6, 2, tzinfo=UTC)


def libpq_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@pytest.fixture
async def postgres(postgres_database: str) -> str:
    """A migrated, empty PostgreSQL database, as a libpq URL."""
    await migrate(postgres_database, to="base")
    await migrate(postgres_database, to="head")
    return libpq_url(postgres_database)


@pytest.fixture
async def engine(postgres_database: str, postgres: str) -> AsyncIterator[AsyncEngine]:
    engine = create_database_engine(postgres_database, pool_size=1, tracer_provider=None)
    yield engine
    await engine.dispose()


@pytest.fixture
async def appenders(postgres: str) -> AsyncIterator[list[PostgresAuditAppender]]:
    """Four appenders on one database: four connections, like four memory replicas."""
    made = [PostgresAuditAppender(postgres) for _ in range(4)]
    yield made
    for appender in made:
        await appender.close()


async def store(appender: PostgresAuditAppender, events: Sequence[AuditEvent]) -> list[bool]:
    return await appender.store_events(events, RECORDED_AT)


async def intact(engine: AsyncEngine, count: int) -> ChainReport:
    report = await verify_chain(engine)
    assert report.intact, report
    assert report.verified == count
    return report


async def test_appenders_taking_turns_keep_one_chain(
    appenders: list[PostgresAuditAppender], engine: AsyncEngine
) -> None:
    # Each append follows one by another appender: the head the appender remembers is never the head any more.
    stored = 0
    for round_ in range(3):
        for n, appender in enumerate(appenders):
            size = 1 + (round_ + n) % 3
            assert await store(appender, [event(100 * round_ + 10 * n + i) for i in range(size)]) == [True] * size
            stored += size
    await intact(engine, stored)


async def test_one_appender_in_a_row_keeps_one_chain(
    appenders: list[PostgresAuditAppender], engine: AsyncEngine
) -> None:
    appender = appenders[0]
    for size in (1, 1, 7, 1, 512):
        assert await store(appender, [event(n) for n in range(size)]) == [True] * size
    await intact(engine, 522)


async def test_retried_and_repeated_event_ids_are_stored_once(
    appenders: list[PostgresAuditAppender], engine: AsyncEngine
) -> None:
    appender, other = appenders[:2]
    first = [event(n) for n in range(3)]
    assert await store(appender, first) == [True] * 3
    twin = event(10)
    # A stored one retried (the same appender, whose head is current), a new one twice, another new one.
    assert await store(appender, [first[1], twin, twin, event(11)]) == [False, True, False, True]
    # The whole first batch retried through another replica; then only repeats.
    assert await store(other, first) == [False] * 3
    assert await store(appender, [twin, first[0]]) == [False, False]
    await intact(engine, 5)


async def test_concurrent_appenders_build_one_chain(
    appenders: list[PostgresAuditAppender], engine: AsyncEngine
) -> None:
    """Four appenders, 30 batches each, all at once; every tenth event is also sent through another appender at
    the same time (a retry racing its original): each event_id stored exactly once, one chain."""
    randomness = random.Random(12)
    batches: list[tuple[PostgresAuditAppender, list[AuditEvent]]] = []
    for n in range(120):
        batch = [event(1000 * n + i) for i in range(randomness.randint(1, 6))]
        batches.append((appenders[n % 4], batch))
        if n % 10 == 0:
            batches.append((appenders[(n + 1) % 4], list(batch)))
    results = await asyncio.gather(*(store(appender, batch) for appender, batch in batches))
    first_stores: dict[str, int] = {}
    for (_, batch), flags in zip(batches, results, strict=True):
        for stored_event, flag in zip(batch, flags, strict=True):
            first_stores[stored_event.event_id] = first_stores.get(stored_event.event_id, 0) + flag
    assert set(first_stores.values()) == {1}  # every event_id acknowledged as new exactly once
    await intact(engine, len(first_stores))


async def test_a_connection_dropped_by_the_server_is_replaced(
    appenders: list[PostgresAuditAppender], engine: AsyncEngine, postgres: str
) -> None:
    appender = appenders[0]
    assert await store(appender, [event(1)]) == [True]
    with psycopg.connect(postgres, autocommit=True) as admin:  # what a restart or an idle timeout does
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    assert await store(appender, [event(2), event(3)]) == [True, True]
    await intact(engine, 3)


async def test_an_unreachable_database_is_unavailable_and_reported() -> None:
    class Failures:
        def __init__(self) -> None:
            self.seen: list[str] = []

        def failed(self, error: BaseException, *, disconnect: bool, statement: str | None) -> None:
            self.seen.append(type(error).__name__)

    failures = Failures()
    appender = PostgresAuditAppender("postgresql://postgres@127.0.0.1:1/techno", failures=failures)
    with pytest.raises(Unavailable) as raised:
        await store(appender, [event(1)])
    assert raised.value.reason == "DATABASE_UNAVAILABLE"
    assert failures.seen == ["OperationalError"]
    await appender.close()


async def test_the_appenders_connection_finds_stored_event_ids_by_index_on_a_new_table(postgres: str) -> None:
    # The appender keeps each statement's plan for the life of its connection (a generic plan). Made on a new,
    # empty audit_events, the plan of its stored-event_ids check is a sequential scan, which then read the whole
    # trail on every later append (issue #12). On the appender's connection it is the unique index, whatever the
    # table's size.
    async with await connect(postgres) as connection:
        await connection.execute("SET plan_cache_mode = force_generic_plan")
        await connection.execute(
            "PREPARE stored(text[]) AS SELECT event_id FROM audit_events WHERE event_id = ANY($1)", prepare=False
        )
        rows = await (await connection.execute("EXPLAIN EXECUTE stored('{evt-1,evt-2}')", prepare=False)).fetchall()
    plan = "\n".join(row[0] for row in rows)
    assert "uq_audit_events_event_id" in plan, plan
    assert "Seq Scan" not in plan, plan
