"""``python -m techno_memory.backup`` as a process, on SQLite and PostgreSQL: data written through the real service
survives backup, wipe and restore row for row (and its audit chain still verifies); retention and ``latest``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from sqlalchemy import Table, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from techno.memory.v1 import memory_pb2, memory_pb2_grpc
from techno_memory.adapters.chain import verify_chain
from techno_memory.adapters.database import create_database_engine
from techno_memory.adapters.tables import Base
from techno_memory.bootstrap import bootstrap

from .conftest import gate_channel, memory_settings, migrate
from .test_api_keys import key_request
from .test_audit_trail import audit_event, new_trace_id

Snapshot = dict[str, list[tuple[Any, ...]]]
PRINCIPAL = "key_backup"
EVENTS = 40


def run_backup(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "techno_memory.backup", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def succeeded(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(params=["sqlite", "postgresql"])
async def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database of each kind, migrated to the head revision."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'data' / 'memory.db'}"
    else:
        create: Callable[[], str] = request.getfixturevalue("create_postgres_database")
        url = create()
    await migrate(url, to="head")
    return url


async def write_data(url: str, tracer_provider: TracerProvider) -> None:
    """API keys (one revoked), audit events in several calls, a session with messages and preferences, all
    through the real service over a real channel."""
    app = await bootstrap(memory_settings(url), tracer_provider=tracer_provider, registry=CollectorRegistry())
    await app.start()
    try:
        async with gate_channel(app.address) as channel:
            stub = memory_pb2_grpc.MemoryServiceStub(channel)
            keys = [key_request(name=f"key {n}") for n in range(3)]
            for key in keys:
                await stub.CreateApiKey(key, timeout=10)
            await stub.RevokeApiKey(memory_pb2.RevokeApiKeyRequest(key_id=keys[0].key_id), timeout=10)
            trace_ids = [new_trace_id() for _ in range(4)]
            appended = await asyncio.gather(
                *(
                    stub.AppendAuditEvents(
                        memory_pb2.AppendAuditEventsRequest(
                            events=[audit_event(trace_ids[n % 4], offset=n, principal_id=PRINCIPAL)]
                        ),
                        timeout=10,
                    )
                    for n in range(EVENTS)
                )
            )
            assert sum(response.appended for response in appended) == EVENTS
            session = (
                await stub.CreateSession(memory_pb2.CreateSessionRequest(principal_id=PRINCIPAL), timeout=10)
            ).session
            messages = [
                memory_pb2.SessionMessage(role="user", content="hello"),
                memory_pb2.SessionMessage(role="assistant", content="hi, how can I help?"),
            ]
            await stub.AppendSessionMessages(
                memory_pb2.AppendSessionMessagesRequest(
                    session_id=session.session_id, principal_id=PRINCIPAL, messages=messages
                ),
                timeout=10,
            )
            await stub.SetPreferences(
                memory_pb2.SetPreferencesRequest(
                    principal_id=PRINCIPAL, preferences=memory_pb2.Preferences(tone="concise", language="en")
                ),
                timeout=10,
            )
    finally:
        await app.stop()


async def snapshot(engine: AsyncEngine) -> Snapshot:
    """Every row of every table (the Alembic revision included), in primary-key order."""
    tables: list[Table] = list(Base.metadata.sorted_tables)
    rows: Snapshot = {}
    async with engine.connect() as connection:
        for table in tables:
            order = list(table.primary_key.columns) or list(table.c)
            rows[table.name] = [tuple(row) for row in (await connection.execute(select(table).order_by(*order))).all()]
        revision = await connection.execute(text("SELECT version_num FROM alembic_version"))
        rows["alembic_version"] = [tuple(row) for row in revision.all()]
    return rows


def wipe(url: str) -> None:
    """Lose the database: delete the SQLite file, or drop every table of the PostgreSQL database."""
    if url.startswith("sqlite"):
        path = Path(url.split("///", 1)[1])
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        return
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as connection:
        tables = connection.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
        for (table,) in tables:
            connection.execute(f'DROP TABLE IF EXISTS "{table}" CASCADE')
        left = connection.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
        assert left == (0,)


async def test_round_trip_restores_every_row_and_the_audit_chain(
    fresh_url: str, tracer_provider: TracerProvider, tmp_path: Path
) -> None:
    await write_data(fresh_url, tracer_provider)
    engine = create_database_engine(fresh_url, pool_size=1, tracer_provider=None)
    try:
        before = await snapshot(engine)
    finally:
        await engine.dispose()
    assert len(before["api_keys"]) == 3
    assert len(before["audit_events"]) == EVENTS
    assert len(before["sessions"]) == 1
    assert len(before["session_messages"]) == 2
    assert len(before["preferences"]) == 1

    backups = tmp_path / "backups"
    # The URL comes from the service's own setting (and the command never prints the password it may hold).
    env = dict(os.environ, TECHNO_MEMORY_DATABASE_URL=fresh_url)
    output = succeeded(run_backup("backup", "--dir", str(backups), env=env))
    extension = "sqlite" if fresh_url.startswith("sqlite") else "dump"
    made = sorted(backups.glob(f"memory-*.{extension}"))
    assert len(made) == 1
    assert str(made[0]) in output
    assert os.readlink(backups / "latest") == made[0].name  # relative
    assert not list(backups.glob("*.partial"))

    wipe(fresh_url)
    output = succeeded(run_backup("restore", "latest", "--dir", str(backups), "--database-url", fresh_url))
    assert "must be stopped" in output

    engine = create_database_engine(fresh_url, pool_size=1, tracer_provider=None)
    try:
        after = await snapshot(engine)
        report = await verify_chain(engine)
    finally:
        await engine.dispose()
    assert {name: len(rows) for name, rows in after.items()} == {name: len(rows) for name, rows in before.items()}
    assert after == before
    assert report.intact, report.summary()
    assert report.verified == EVENTS


async def test_a_backup_of_the_running_service_is_consistent(
    fresh_url: str,
    tracer_provider: TracerProvider,
    tmp_path: Path,
    create_postgres_database: Callable[[], str],
) -> None:
    """Backed up while the service is serving (SQLite in WAL mode, PostgreSQL's snapshot), into another database."""
    app = await bootstrap(memory_settings(fresh_url), tracer_provider=tracer_provider, registry=CollectorRegistry())
    await app.start()
    try:
        async with gate_channel(app.address) as channel:
            stub = memory_pb2_grpc.MemoryServiceStub(channel)
            events = [audit_event(new_trace_id(), offset=n) for n in range(10)]
            await stub.AppendAuditEvents(memory_pb2.AppendAuditEventsRequest(events=events), timeout=10)
            backups = tmp_path / "backups"
            succeeded(await asyncio.to_thread(run_backup, "backup", "--dir", str(backups), "--database-url", fresh_url))
    finally:
        await app.stop()
    if fresh_url.startswith("sqlite"):
        copy = f"sqlite+aiosqlite:///{tmp_path / 'copy.db'}"
    else:
        copy = create_postgres_database()  # an empty database: --clean --if-exists has nothing to drop
    succeeded(run_backup("restore", "latest", "--dir", str(backups), "--database-url", copy))
    engine = create_database_engine(copy, pool_size=1, tracer_provider=None)
    try:
        rows = await snapshot(engine)
        report = await verify_chain(engine)
    finally:
        await engine.dispose()
    assert [row[1] for row in rows["audit_events"]] == [event.event_id for event in events]
    assert report.intact, report.summary()


def test_retention_deletes_old_backups_of_the_same_kind_and_keeps_the_new_one(tmp_path: Path) -> None:
    database = tmp_path / "memory.db"
    url = f"sqlite+aiosqlite:///{database}"
    asyncio.run(migrate(url, to="head"))
    backups = tmp_path / "backups"
    backups.mkdir()
    now = datetime.now(UTC)

    def old_file(name: str, age: timedelta) -> Path:
        path = backups / name
        path.write_bytes(b"x")
        stamp = (now - age).timestamp()
        os.utime(path, (stamp, stamp))
        return path

    expired = old_file("memory-20200101T000000Z.sqlite", timedelta(days=8))
    expired_partial = old_file("memory-20200102T000000Z.sqlite.partial", timedelta(days=9))
    recent = old_file("memory-20200103T000000Z.sqlite", timedelta(days=6))
    other_kind = old_file("memory-20200101T000000Z.dump", timedelta(days=30))  # PostgreSQL's: not this kind
    unrelated = old_file("notes.txt", timedelta(days=30))
    (backups / "latest").symlink_to(expired.name)  # moved to the new backup, so no longer protecting it

    output = succeeded(run_backup("backup", "--dir", str(backups), "--database-url", url, "--retention-days", "7"))
    link = backups / "latest"
    new = backups / os.readlink(link)
    assert not os.readlink(link).startswith("/")
    assert new.is_file()
    assert new.name.startswith(f"memory-{now:%Y%m%d}T")
    assert new.name.endswith(".sqlite")
    assert not expired.exists()
    assert not expired_partial.exists()
    assert f"deleted expired backup {expired}" in output
    assert recent.exists()
    assert other_kind.exists()
    assert unrelated.exists()

    # A second backup within the same second gets its own name; a retention of 0 deletes every older one but never
    # the backup just made.
    os.utime(new, (now.timestamp() - 60, now.timestamp() - 60))
    succeeded(run_backup("backup", "--dir", str(backups), "--database-url", url, "--retention-days", "0"))
    newest = backups / os.readlink(link)
    assert newest != new
    assert newest.is_file()
    assert not new.exists()
    assert not recent.exists()
    assert other_kind.exists()

    listing = succeeded(run_backup("list", "--dir", str(backups)))
    assert f"{newest.name}\tsqlite" in listing
    assert "<- latest" in listing
    assert other_kind.name in listing


def test_errors_are_one_line_without_the_password(tmp_path: Path) -> None:
    unreachable = "postgresql+psycopg://postgres:s3cret-pw@127.0.0.1:1/techno"
    result = run_backup("backup", "--dir", str(tmp_path), "--database-url", unreachable)
    assert result.returncode == 1
    assert "s3cret-pw" not in result.stdout + result.stderr
    assert "127.0.0.1:1" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # no partial file and no `latest` left behind

    # Without the PostgreSQL client tools the command says which package to install.
    no_tools = dict(os.environ, PATH=str(tmp_path / "empty"))
    result = run_backup("backup", "--dir", str(tmp_path), "--database-url", unreachable, env=no_tools)
    assert result.returncode == 1
    assert "postgresql-client" in result.stderr

    result = run_backup("restore", "latest", "--dir", str(tmp_path), "--database-url", "sqlite:///x.db")
    assert result.returncode == 1
    assert result.stderr.strip() == f"restore failed: no latest backup in {tmp_path}"

    not_a_database = tmp_path / "memory-20250101T000000Z.sqlite"
    not_a_database.write_bytes(b"not a database")
    target = tmp_path / "target.db"
    result = run_backup("restore", str(not_a_database), "--database-url", f"sqlite:///{target}")
    assert result.returncode == 1
    assert "not a SQLite database" in result.stderr
    assert not target.exists()
