"""The audit trail's hash chain as stored, on SQLite and PostgreSQL: appends keep one valid chain (duplicates,
concurrent writers, the migration that chained older events), and ``verify`` catches every kind of tampering."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from sqlalchemy import JSON, BigInteger, String, Table, column, select, table
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from techno.memory.v1 import memory_pb2_grpc
from techno_memory.adapters.chain import verify_chain
from techno_memory.adapters.database import create_database_engine
from techno_memory.adapters.migrations import downgrade, upgrade
from techno_memory.adapters.repository import SqlRepository
from techno_memory.adapters.tables import AuditEventRow, UtcDateTime
from techno_memory.bootstrap import bootstrap
from techno_memory.domain.chain import ALTERED, GENESIS_HASH, NOT_FIRST, RELINKED, ChainReport
from techno_memory.domain.records import AuditEvent, AuditEventKind

from .conftest import gate_channel, memory_settings
from .test_audit_trail import append, audit_event, new_trace_id

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
EVENTS = cast(Table, AuditEventRow.__table__)


@pytest.fixture
async def engine(migrated_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_database_engine(migrated_url, pool_size=2, tracer_provider=None)
    yield engine
    await engine.dispose()


def event(n: int, **fields: Any) -> AuditEvent:
    defaults: dict[str, Any] = {
        "event_id": f"evt-{n}-{uuid.uuid4().hex[:8]}",
        "trace_id": new_trace_id(),
        "kind": AuditEventKind.DECISION,
        "occurred_at": T0 + timedelta(seconds=n, microseconds=123_456),
        "service": "gate",
        "principal_id": "key_1",
        "action": "summarize",
        "context_id": "ctx-1",
        "result": "ALLOW",
        "reason_codes": ("ALLOWED",),
        "attributes": {
            "policy_version": "v1",
            "latency_ms": 12.0,
            "ratio": 0.1,
            "nested": {"b": [1.0, "x"], "a": None},
        },
    }
    return AuditEvent(**(defaults | fields))


async def store(engine: AsyncEngine, count: int) -> list[AuditEvent]:
    events = [event(n) for n in range(count)]
    async with SqlRepository(engine) as repository:
        await repository.append_events(events)
    return events


async def as_attacker(engine: AsyncEngine, statements: Any) -> None:
    """Run ``statements(connection)`` with the append-only triggers off, as a DBA could (PostgreSQL)."""
    async with engine.begin() as connection:
        postgres = connection.dialect.name == "postgresql"
        if postgres:
            await connection.exec_driver_sql("ALTER TABLE audit_events DISABLE TRIGGER USER")
        await statements(connection)
        if postgres:
            await connection.exec_driver_sql("ALTER TABLE audit_events ENABLE TRIGGER USER")


async def row_ids(engine: AsyncEngine) -> list[int]:
    async with engine.connect() as connection:
        return list((await connection.execute(select(EVENTS.c.id).order_by(EVENTS.c.id))).scalars())


async def test_an_empty_trail_verifies(engine: AsyncEngine) -> None:
    assert await verify_chain(engine) == ChainReport(verified=0, head=GENESIS_HASH)


async def test_appended_events_form_one_chain(engine: AsyncEngine) -> None:
    async with SqlRepository(engine) as repository:
        for size in (1, 3, 5):  # several transactions, each extending the chain of the previous ones
            await repository.append_events([event(n) for n in range(size)])
    async with engine.connect() as connection:
        rows = (await connection.execute(select(EVENTS.c.prev_hash, EVENTS.c.hash).order_by(EVENTS.c.id))).all()
    assert rows[0].prev_hash == GENESIS_HASH
    assert [row.prev_hash for row in rows[1:]] == [row.hash for row in rows[:-1]]
    for batch_size in (1, 2, 1000):  # batches of the walk do not matter
        report = await verify_chain(engine, batch_size=batch_size)
        assert report.intact, report
        assert report.verified == 9
        assert report.head == rows[-1].hash


async def test_duplicates_do_not_break_the_chain(engine: AsyncEngine) -> None:
    first = await store(engine, 3)
    twin = event(10)
    async with SqlRepository(engine) as repository:
        # A stored one repeated, a new one twice in one batch, and a new one.
        assert await repository.store_events([first[1], twin, twin, event(11)]) == [False, True, False, True]
        assert await repository.store_events(first) == [False, False, False]
    report = await verify_chain(engine)
    assert report.intact, report
    assert report.verified == 5


async def test_altered_content_is_caught(engine: AsyncEngine) -> None:
    await store(engine, 5)
    target = (await row_ids(engine))[2]

    async def alter(connection: AsyncConnection) -> None:
        await connection.execute(EVENTS.update().where(EVENTS.c.id == target).values(result="DENY"))

    await as_attacker(engine, alter)
    report = await verify_chain(engine)
    assert (report.broken_at_id, report.problem, report.verified) == (target, ALTERED, 2)


async def test_altered_attributes_are_caught(engine: AsyncEngine) -> None:
    await store(engine, 3)
    target = (await row_ids(engine))[1]

    async def alter(connection: AsyncConnection) -> None:
        await connection.execute(
            EVENTS.update().where(EVENTS.c.id == target).values(attributes={"policy_version": "v0"})
        )

    await as_attacker(engine, alter)
    report = await verify_chain(engine)
    assert (report.broken_at_id, report.problem) == (target, ALTERED)


async def test_a_removed_event_is_caught(engine: AsyncEngine) -> None:
    await store(engine, 5)
    ids = await row_ids(engine)

    async def remove(connection: AsyncConnection) -> None:
        await connection.execute(EVENTS.delete().where(EVENTS.c.id == ids[2]))

    await as_attacker(engine, remove)
    report = await verify_chain(engine)
    assert (report.broken_at_id, report.problem, report.verified) == (ids[3], RELINKED, 2)


async def test_a_removed_first_event_is_caught(engine: AsyncEngine) -> None:
    await store(engine, 3)
    ids = await row_ids(engine)

    async def remove(connection: AsyncConnection) -> None:
        await connection.execute(EVENTS.delete().where(EVENTS.c.id == ids[0]))

    await as_attacker(engine, remove)
    report = await verify_chain(engine)
    assert (report.broken_at_id, report.problem, report.verified) == (ids[1], NOT_FIRST, 0)


async def test_reordered_events_are_caught(engine: AsyncEngine) -> None:
    await store(engine, 5)
    ids = await row_ids(engine)
    swapped = [c.name for c in EVENTS.c if c.name != "id"]

    async def swap(connection: AsyncConnection) -> None:
        # Every column but the id swapped between two rows (through placeholder values: two are unique).
        a, b = [(await connection.execute(select(EVENTS).where(EVENTS.c.id == i))).one()._asdict() for i in ids[1:3]]
        await connection.execute(
            EVENTS.update().where(EVENTS.c.id == ids[1]).values(event_id="placeholder", prev_hash="placeholder")
        )
        await connection.execute(EVENTS.update().where(EVENTS.c.id == ids[2]).values({k: a[k] for k in swapped}))
        await connection.execute(EVENTS.update().where(EVENTS.c.id == ids[1]).values({k: b[k] for k in swapped}))

    await as_attacker(engine, swap)
    report = await verify_chain(engine)
    assert (report.broken_at_id, report.problem, report.verified) == (ids[1], RELINKED, 1)


async def test_concurrent_writers_build_one_chain(migrated_url: str, tracer_provider: TracerProvider) -> None:
    """Two memory replicas on one database, 100 concurrent appends each: one chain, no fork, nothing lost."""
    apps = [
        await bootstrap(memory_settings(migrated_url), tracer_provider=tracer_provider, registry=CollectorRegistry())
        for _ in range(2)
    ]
    for app in apps:
        await app.start()
    try:
        channels = [gate_channel(app.address) for app in apps]
        stubs = [memory_pb2_grpc.MemoryServiceStub(channel) for channel in channels]
        trace_id = new_trace_id()
        shared = audit_event(trace_id)  # also sent to both replicas at once: stored once
        calls = [append(stub, audit_event(trace_id, offset=n)) for n in range(100) for stub in stubs]
        results = await asyncio.gather(*calls, append(stubs[0], shared), append(stubs[1], shared))
        assert results[:200] == [1] * 200
        assert sorted(results[200:]) == [0, 1]
        for channel in channels:
            await channel.close(None)
    finally:
        for app in apps:
            await app.stop()
    engine = create_database_engine(migrated_url, pool_size=1, tracer_provider=None)
    try:
        report = await verify_chain(engine)
        assert report.intact, report
        assert report.verified == 201
    finally:
        await engine.dispose()


# audit_events as revision 0003 left it: no chain yet.
_EVENTS_0003 = table(
    "audit_events",
    column("id", BigInteger()),
    *(
        column(name, String())
        for name in ("event_id", "trace_id", "kind", "service", "principal_id", "action", "context_id", "result")
    ),
    column("occurred_at", UtcDateTime()),
    column("recorded_at", UtcDateTime()),
    column("reason_codes", JSON().with_variant(JSONB(), "postgresql")),
    column("attributes", JSON().with_variant(JSONB(), "postgresql")),
)


async def test_the_migration_chains_existing_events(database_url: str) -> None:
    engine = create_database_engine(database_url, pool_size=1, tracer_provider=None)
    try:
        await upgrade(engine, "0003")
        older = [event(n) for n in range(1234)]  # more than one batch of the migration
        async with engine.begin() as connection:
            await connection.execute(
                _EVENTS_0003.insert(),
                [
                    {
                        "event_id": e.event_id,
                        "trace_id": e.trace_id,
                        "kind": e.kind.value,
                        "occurred_at": e.occurred_at,
                        "recorded_at": T0,
                        "service": e.service,
                        "principal_id": e.principal_id,
                        "action": e.action,
                        "context_id": e.context_id,
                        "result": e.result,
                        "reason_codes": list(e.reason_codes),
                        "attributes": e.attributes,
                    }
                    for e in older
                ],
            )
        await upgrade(engine)
        report = await verify_chain(engine)
        assert report.intact, report
        assert report.verified == len(older)
        # The service extends the migrated chain exactly as it chains its own events.
        async with SqlRepository(engine) as repository:
            await repository.append_events([event(5000)])
        extended = await verify_chain(engine)
        assert extended.intact, extended
        assert extended.verified == len(older) + 1

        await downgrade(engine, "0003")
        await upgrade(engine)
        again = await verify_chain(engine)
        assert again == extended  # the same chain, computed again
    finally:
        await engine.dispose()


def run_verify(url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"TECHNO_MEMORY_DATABASE_URL": url, "TECHNO_LOG_LEVEL": "INFO"}
    return subprocess.run(
        [sys.executable, "-m", "techno_memory", "verify"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_verify_command(engine: AsyncEngine, migrated_url: str, tmp_path: Path) -> None:
    await store(engine, 4)
    intact = await asyncio.to_thread(run_verify, migrated_url, tmp_path)
    assert intact.returncode == 0, intact.stderr
    assert intact.stdout.startswith("verified 4 events; chain intact")
    target = (await row_ids(engine))[1]

    async def alter(connection: AsyncConnection) -> None:
        await connection.execute(EVENTS.update().where(EVENTS.c.id == target).values(action="delete-everything"))

    await as_attacker(engine, alter)
    broken = await asyncio.to_thread(run_verify, migrated_url, tmp_path)
    assert broken.returncode == 1, broken.stderr
    assert broken.stdout.startswith(f"chain broken at event id={target} ")
    assert "content altered" in broken.stdout


def test_the_verify_command_needs_a_migrated_database(tmp_path: Path) -> None:
    refused = run_verify(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}", tmp_path)
    assert refused.returncode == 3
    assert "run `python -m techno_memory migrate`" in refused.stderr
