"""The memory service on both supported databases: every test using ``database_url`` runs on a SQLite file and
on the real PostgreSQL of the ``postgres_database`` fixture."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from techno.memory.v1 import memory_pb2_grpc
from techno_core.identity import Identity
from techno_core.server import GrpcApp
from techno_memory.adapters.database import create_database_engine
from techno_memory.adapters.migrations import downgrade, upgrade
from techno_memory.bootstrap import bootstrap
from techno_memory.settings import MemorySettings
from tests.tls import as_identity, connect


async def migrate(url: str, *, to: str) -> None:
    engine = create_database_engine(url, pool_size=1, tracer_provider=None)
    try:
        await (upgrade(engine) if to == "head" else downgrade(engine, to))
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty (un-migrated) database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'memory.db'}"
    url: str = request.getfixturevalue("postgres_database")
    # The session's PostgreSQL database is shared by the tests: each starts from an empty schema.
    await migrate(url, to="base")
    return url


@pytest.fixture
async def migrated_url(database_url: str) -> str:
    await migrate(database_url, to="head")
    return database_url


def memory_settings(url: str) -> MemorySettings:
    return MemorySettings(
        **as_identity(Identity.MEMORY),
        memory_port=0,
        memory_metrics_port=0,
        memory_database_url=url,
        health_check_interval_seconds=0.2,
    )


@pytest.fixture
async def app(migrated_url: str, tracer_provider: TracerProvider) -> AsyncIterator[GrpcApp]:
    app = await bootstrap(memory_settings(migrated_url), tracer_provider=tracer_provider, registry=CollectorRegistry())
    await app.start()
    yield app
    await app.stop()


def gate_channel(address: str) -> grpc.aio.Channel:
    """A mutual TLS channel to memory as the gate: its caller with the widest grant (audit, keys, sessions,
    idempotency)."""
    return connect(address, identity=Identity.GATE, server=Identity.MEMORY)


@pytest.fixture
async def stub(app: GrpcApp) -> AsyncIterator[memory_pb2_grpc.MemoryServiceStub]:
    async with gate_channel(app.address) as channel:
        yield memory_pb2_grpc.MemoryServiceStub(channel)
