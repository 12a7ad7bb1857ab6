"""Schema migrations and the start-up schema check, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from sqlalchemy import Connection, String, column, inspect, table
from sqlalchemy.ext.asyncio import AsyncEngine

from techno_core.identity import Identity
from techno_memory.adapters.chain import verify_chain
from techno_memory.adapters.database import create_database_engine
from techno_memory.adapters.migrations import (
    SchemaNotCurrent,
    current_revision,
    downgrade,
    head_revision,
    upgrade,
)
from techno_memory.adapters.repository import SqlRepository
from techno_memory.adapters.tables import Base, IdempotencyKeyRow, UtcDateTime
from techno_memory.bootstrap import bootstrap
from techno_memory.domain.audit_query import AuditFilter
from techno_memory.domain.records import AuditEvent, AuditEventKind
from tests.tls import environment

from .conftest import memory_settings

TABLES = {"api_keys", "audit_events", "sessions", "session_messages", "preferences", "idempotency_keys"}
SESSION_TABLES = {"sessions", "session_messages", "preferences"}
# What 0005 adds to audit_events: the keyset indexes of audit queries.
AUDIT_QUERY_INDEXES = {"ix_audit_events_principal_id_id", "ix_audit_events_occurred_at_id"}


async def tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        return set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))


def schema_differences(connection: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))


async def test_upgrade_downgrade_upgrade(database_url: str) -> None:
    engine = create_database_engine(database_url, pool_size=1, tracer_provider=None)
    try:
        await upgrade(engine)
        assert await tables(engine) >= TABLES
        assert await current_revision(engine) == head_revision()
        async with engine.connect() as connection:
            # The migration creates exactly what the models describe.
            assert await connection.run_sync(schema_differences) == []

        await downgrade(engine, "base")
        assert not TABLES & await tables(engine)
        assert await current_revision(engine) is None

        await upgrade(engine)
        assert await tables(engine) >= TABLES
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()


CREATED = datetime(2025, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)
REVOKED = datetime(2025, 2, 3, 4, 5, 6, 789_000, tzinfo=UTC)

# api_keys as revision 0001 created it: what a release before scopes and expiry wrote.
_API_KEYS_0001 = table(
    "api_keys",
    *(column(name, String()) for name in ("key_id", "prefix", "key_hash", "name", "profile")),
    column("created_at", UtcDateTime()),
    column("revoked_at", UtcDateTime()),
)


async def table_columns(engine: AsyncEngine, table_name: str) -> set[str]:
    async with engine.connect() as connection:
        columns = await connection.run_sync(lambda sync: inspect(sync).get_columns(table_name))
    return {column["name"] for column in columns}


async def test_keys_stored_before_0002_get_default_scopes_and_updated_at(database_url: str) -> None:
    engine = create_database_engine(database_url, pool_size=1, tracer_provider=None)
    try:
        await upgrade(engine, "0001")
        async with engine.begin() as connection:
            await connection.execute(
                _API_KEYS_0001.insert(),
                [
                    {"key_id": "valid", "prefix": "tk_1", "key_hash": "a" * 64, "name": "", "profile": "default"}
                    | {"created_at": CREATED, "revoked_at": None},
                    {"key_id": "revoked", "prefix": "tk_2", "key_hash": "b" * 64, "name": "", "profile": "default"}
                    | {"created_at": CREATED, "revoked_at": REVOKED},
                ],
            )

        await upgrade(engine)
        keys = {key.key_id: key for key in (await SqlRepository(engine).list_api_keys()).keys}
        assert keys["valid"].scopes == keys["revoked"].scopes == ("process",)
        assert keys["valid"].expires_at is keys["revoked"].expires_at is None
        assert keys["valid"].updated_at == CREATED  # its last change: its creation
        assert keys["revoked"].updated_at == REVOKED  # … or its revocation
        async with engine.connect() as connection:
            assert await connection.run_sync(schema_differences) == []

        await downgrade(engine, "0001")
        assert await current_revision(engine) == "0001"
        assert not {"scopes", "expires_at", "updated_at"} & await table_columns(engine, "api_keys")
        async with engine.connect() as connection:
            rows = (await connection.execute(_API_KEYS_0001.select().order_by("key_id"))).all()
        # The keys themselves survive the downgrade, with the times they had.
        assert [(row.key_id, row.created_at, row.revoked_at) for row in rows] == [
            ("revoked", CREATED, REVOKED),
            ("valid", CREATED, None),
        ]

        await upgrade(engine)
        since_revocation = await SqlRepository(engine).list_api_keys(updated_since=REVOKED)
        assert [key.key_id for key in since_revocation.keys] == ["revoked"]
    finally:
        await engine.dispose()


async def test_0003_adds_and_removes_only_the_session_tables(database_url: str) -> None:
    engine = create_database_engine(database_url, pool_size=1, tracer_provider=None)
    try:
        await upgrade(engine, "0002")
        assert not SESSION_TABLES & await tables(engine)
        await upgrade(engine)
        assert await tables(engine) >= TABLES
        async with engine.connect() as connection:
            assert await connection.run_sync(schema_differences) == []
        await downgrade(engine, "0002")
        assert await current_revision(engine) == "0002"
        assert await tables(engine) >= {"api_keys", "audit_events"}
        assert not SESSION_TABLES & await tables(engine)
        await upgrade(engine)
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()


async def audit_event_indexes(engine: AsyncEngine) -> dict[str, list[str | None]]:
    async with engine.connect() as connection:
        indexes = await connection.run_sync(lambda sync: inspect(sync).get_indexes("audit_events"))
    return {index["name"]: list(index["column_names"]) for index in indexes if index["name"]}


async def test_0005_adds_and_removes_the_audit_query_indexes_and_idempotency_keys(database_url: str) -> None:
    engine = create_database_engine(database_url, pool_size=1, tracer_provider=None)
    try:
        await upgrade(engine, "0004")
        # Events stored before 0005 are indexed by it, and kept (chained) through its downgrade.
        repository = SqlRepository(engine)
        trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
        events = [
            AuditEvent(f"e{n}", trace_id, AuditEventKind.DECISION, CREATED, "gate", principal_id="key_1")
            for n in range(3)
        ]
        assert await repository.append_events(events) == 3
        await repository.close()  # its PostgreSQL connection for appends; its reads use the engine
        assert not AUDIT_QUERY_INDEXES & set(await audit_event_indexes(engine))
        assert "idempotency_keys" not in await tables(engine)

        await upgrade(engine, "0005")
        indexes = await audit_event_indexes(engine)
        assert indexes["ix_audit_events_principal_id_id"] == ["principal_id", "id"]
        assert indexes["ix_audit_events_occurred_at_id"] == ["occurred_at", "id"]
        assert "idempotency_keys" in await tables(engine)
        page = await repository.list_events(AuditFilter(principal_id="key_1"), after_id=None, limit=10)
        assert [event.event_id for _, event in page] == ["e0", "e1", "e2"]

        await downgrade(engine, "0004")
        assert await current_revision(engine) == "0004"
        assert not AUDIT_QUERY_INDEXES & set(await audit_event_indexes(engine))
        assert "idempotency_keys" not in await tables(engine)
        assert [event.event_id for event in await repository.audit_trail(trace_id)] == ["e0", "e1", "e2"]
        assert (await verify_chain(engine)).intact

        await upgrade(engine)
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()


# idempotency_keys as revision 0005 created it: what a release before the holder's trace id wrote.
_IDEMPOTENCY_KEYS_0005 = table(
    "idempotency_keys",
    *(column(name, String()) for name in ("principal_id", "idempotency_key", "request_hash")),
    column("created_at", UtcDateTime()),
    column("expires_at", UtcDateTime()),
    column("lease_expires_at", UtcDateTime()),
)


async def test_0006_adds_and_removes_the_holders_trace_id_keeping_the_records(database_url: str) -> None:
    engine = create_database_engine(database_url, pool_size=1, tracer_provider=None)
    record = {"principal_id": "key_1", "idempotency_key": "k-1", "request_hash": "a" * 64} | {
        "created_at": CREATED,
        "expires_at": REVOKED,
        "lease_expires_at": CREATED,
    }
    try:
        await upgrade(engine, "0005")
        assert "trace_id" not in await table_columns(engine, "idempotency_keys")
        async with engine.begin() as connection:
            await connection.execute(_IDEMPOTENCY_KEYS_0005.insert(), [record])

        await upgrade(engine, "0006")
        assert "trace_id" in await table_columns(engine, "idempotency_keys")
        async with engine.connect() as connection:
            assert await connection.run_sync(schema_differences) == []
            # A record claimed before 0006 has no holder's trace id: it is taken over as before.
            rows = (await connection.execute(IdempotencyKeyRow.__table__.select())).all()
        assert [(row.idempotency_key, row.trace_id, row.lease_expires_at) for row in rows] == [("k-1", None, CREATED)]

        await downgrade(engine, "0005")
        assert await current_revision(engine) == "0005"
        assert "trace_id" not in await table_columns(engine, "idempotency_keys")
        async with engine.connect() as connection:
            rows = (await connection.execute(_IDEMPOTENCY_KEYS_0005.select())).all()
        assert [(row.idempotency_key, row.expires_at) for row in rows] == [("k-1", REVOKED)]  # the records survive

        await upgrade(engine)
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()


async def test_the_server_refuses_an_unmigrated_database(database_url: str, tracer_provider: TracerProvider) -> None:
    app = await bootstrap(memory_settings(database_url), tracer_provider=tracer_provider, registry=CollectorRegistry())
    try:
        with pytest.raises(SchemaNotCurrent, match="run `python -m techno_memory migrate`"):
            await app.start()
    finally:
        await app.stop()  # releases the pool even though the start failed


def run_cli(*args: str, url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = (
        os.environ
        | environment(Identity.MEMORY)
        | {
            "TECHNO_MEMORY_DATABASE_URL": url,
            "TECHNO_MEMORY_PORT": "0",
            "TECHNO_MEMORY_METRICS_PORT": "0",
            "TECHNO_LOG_LEVEL": "INFO",
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "techno_memory", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_migrates_and_serve_refuses_until_migrated(tmp_path: Path) -> None:
    url = "sqlite+aiosqlite:///var/memory.db"  # relative: under the working directory, created on demand
    refused = run_cli(url=url, cwd=tmp_path)
    assert refused.returncode == 1
    [line] = [line for line in refused.stderr.splitlines() if "migrate" in line]
    assert "run `python -m techno_memory migrate` first" in line
    assert "Traceback" not in refused.stderr

    assert run_cli("migrate", url=url, cwd=tmp_path).returncode == 0
    assert (tmp_path / "var" / "memory.db").is_file()
    assert run_cli("migrate", "--downgrade", "base", url=url, cwd=tmp_path).returncode == 0
    assert run_cli("migrate", url=url, cwd=tmp_path).returncode == 0
