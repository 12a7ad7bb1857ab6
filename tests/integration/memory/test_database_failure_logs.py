"""Memory says when its database goes away (issue #11, item 12): audit appends that fail on a database that
refuses connections are counted by error class and logged, rate-limited, without the URL or its password."""

from __future__ import annotations

import logging
from collections.abc import Callable

import grpc
import psycopg
import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from sqlalchemy import make_url

from techno.memory.v1 import memory_pb2, memory_pb2_grpc
from techno_memory.bootstrap import bootstrap

from .conftest import gate_channel, memory_settings, migrate
from .test_audit_trail import audit_event


def event(index: int) -> memory_pb2.AuditEvent:
    return audit_event("a" * 32, event_id=f"00000000-0000-4000-8000-{index:012d}")


async def test_failed_database_operations_are_counted_and_logged_without_the_url(
    create_postgres_database: Callable[[], str], tracer_provider: TracerProvider, caplog: pytest.LogCaptureFixture
) -> None:
    postgres_database = create_postgres_database()  # its own: this test shuts its door for a while
    await migrate(postgres_database, to="head")
    registry = CollectorRegistry()
    app = await bootstrap(memory_settings(postgres_database), tracer_provider=tracer_provider, registry=registry)
    await app.start()
    name = str(make_url(postgres_database).database)
    admin_url = postgres_database.replace("+psycopg", "").rsplit("/", 1)[0] + "/postgres"
    try:
        with psycopg.connect(admin_url, autocommit=True) as admin:  # the database goes away for memory
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
        caplog.set_level(logging.ERROR, logger="techno_memory.adapters.database_failures")
        async with gate_channel(app.address) as channel:
            stub = memory_pb2_grpc.MemoryServiceStub(channel)
            for index in range(5):
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await stub.AppendAuditEvents(memory_pb2.AppendAuditEventsRequest(events=[event(index)]), timeout=10)
                assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await app.stop()
    counted = registry.get_sample_value("memory_database_errors_total", {"error": "OperationalError"})
    assert counted is not None
    assert counted >= 5
    records = [r for r in caplog.records if r.name == "techno_memory.adapters.database_failures"]
    classes = [record.__dict__["error"] for record in records]
    assert "OperationalError" in classes
    assert len(classes) == len(set(classes))  # rate-limited: one line per error class per 10 s, not one per failure
    for record in records:
        assert name not in record.getMessage()
        assert "postgres" not in str(record.__dict__)
