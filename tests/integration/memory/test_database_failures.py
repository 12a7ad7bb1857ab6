"""Database failures: a lost connection is replaced, an unreachable database is UNAVAILABLE or a clear start-up
error, never an internal error."""

from __future__ import annotations

import psycopg
import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from techno.memory.v1 import memory_pb2, memory_pb2_grpc
from techno_core.errors import Unavailable
from techno_memory.adapters.database import create_database_engine
from techno_memory.adapters.migrations import DatabaseUnreachable, ensure_schema_current
from techno_memory.adapters.repository import SqlRepository
from techno_memory.bootstrap import bootstrap

from .conftest import gate_channel, memory_settings, migrate
from .test_api_keys import key_request

# Nothing listens on port 1 of the loopback: connections are refused at once.
UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/techno"


async def test_connections_dropped_by_postgresql_are_replaced(
    postgres_database: str, tracer_provider: TracerProvider
) -> None:
    await migrate(postgres_database, to="base")
    await migrate(postgres_database, to="head")
    app = await bootstrap(
        memory_settings(postgres_database), tracer_provider=tracer_provider, registry=CollectorRegistry()
    )
    await app.start()
    try:
        async with gate_channel(app.address) as channel:
            stub = memory_pb2_grpc.MemoryServiceStub(channel)
            await stub.CreateApiKey(key_request(), timeout=10)
            # What a restart does to the pool: every server-side connection of the database is gone.
            with psycopg.connect(postgres_database.replace("+psycopg", ""), autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            listed = await stub.ListApiKeys(memory_pb2.ListApiKeysRequest(), timeout=10)
            assert len(listed.api_keys) == 1
    finally:
        await app.stop()


async def test_an_unreachable_database_is_unavailable() -> None:
    engine = create_database_engine(UNREACHABLE, pool_size=1, tracer_provider=None)
    try:
        repository = SqlRepository(engine)
        with pytest.raises(Unavailable) as raised:
            await repository.list_api_keys()
        assert raised.value.reason == "DATABASE_UNAVAILABLE"
        with pytest.raises(Exception):  # noqa: B017, PT011 - a health probe only needs to fail
            await repository.ping()
    finally:
        await engine.dispose()


async def test_start_up_names_an_unreachable_database_without_its_password() -> None:
    engine = create_database_engine(
        UNREACHABLE.replace("postgres@", "postgres:secret@"), pool_size=1, tracer_provider=None
    )
    try:
        with pytest.raises(DatabaseUnreachable) as raised:
            await ensure_schema_current(engine)
    finally:
        await engine.dispose()
    assert "127.0.0.1:1" in str(raised.value)
    assert "secret" not in str(raised.value)
    assert "\n" not in str(raised.value)
