"""PostgreSQL restarted under a running memory service: it reconnects by itself and loses nothing it acknowledged.

A writer appends audit events one at a time, awaiting each acknowledgement, while ``pg_ctlcluster`` restarts the
real server. An event refused as UNAVAILABLE (or timed out) during the restart is retried with the same event id
(appends are idempotent by event id), so every event is eventually acknowledged exactly once. The test needs
root (or the postgres user) and the Debian cluster tools; it fails, never skips, without them."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from techno.memory.v1 import memory_pb2, memory_pb2_grpc
from techno_core.server import GrpcApp
from techno_memory.bootstrap import bootstrap
from tests.postgres_cluster import ensure_running, pg_ctlcluster, require_cluster_tools

from .conftest import gate_channel, memory_settings, migrate
from .test_api_keys import key_request
from .test_audit_trail import audit_event

RUN_LIMIT_SECONDS = 30  # the whole write-restart-write run stops by itself within this
ACKS_BEFORE_RESTART = 20
ACKS_AFTER_RESTART = 20
RETRIED = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


@pytest.fixture
def restartable_postgres(create_postgres_database: Callable[[], str]) -> Iterator[str]:
    """A fresh database, and the promise that PostgreSQL is up again afterwards, whatever the test did."""
    require_cluster_tools()
    url = create_postgres_database()
    try:
        yield url
    finally:
        ensure_running(url.replace("+psycopg", ""))


@pytest.fixture
async def running_app(restartable_postgres: str, tracer_provider: TracerProvider) -> AsyncIterator[GrpcApp]:
    await migrate(restartable_postgres, to="head")
    app = await bootstrap(
        memory_settings(restartable_postgres), tracer_provider=tracer_provider, registry=CollectorRegistry()
    )
    await app.start()
    yield app
    await app.stop()


class Writer:
    """Appends events one after another; an event counts as acknowledged only once its call returned OK."""

    def __init__(self, stub: memory_pb2_grpc.MemoryServiceStub) -> None:
        self.stub = stub
        self.trace_id = uuid.uuid4().hex
        self.acknowledged: list[str] = []
        self.retries: dict[str, int] = {}
        self.unexpected: list[str] = []
        self.stop = asyncio.Event()
        self.progress = asyncio.Event()

    async def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            event = audit_event(self.trace_id, event_id=f"restart-{n:05d}", offset=n)
            while True:  # the same event until it is acknowledged
                try:
                    await self.stub.AppendAuditEvents(memory_pb2.AppendAuditEventsRequest(events=[event]), timeout=2)
                except grpc.aio.AioRpcError as error:
                    if error.code() not in RETRIED:
                        self.unexpected.append(f"{event.event_id}: {error.code().name} {error.details()}")
                        raise
                    self.retries[error.code().name] = self.retries.get(error.code().name, 0) + 1
                    await asyncio.sleep(0.05)
                    continue
                self.acknowledged.append(event.event_id)
                self.progress.set()
                break
            n += 1

    async def until_acknowledged(self, count: int) -> None:
        while len(self.acknowledged) < count:
            self.progress.clear()
            await self.progress.wait()


async def serving_again(channel: grpc.aio.Channel) -> None:
    """Returns once the service's health (its database probe) reports SERVING, as Health/Watch streams it."""
    request = health_pb2.HealthCheckRequest(service="")
    async for update in health_pb2_grpc.HealthStub(channel).Watch(request, timeout=30):
        if update.status == health_pb2.HealthCheckResponse.SERVING:
            return


async def test_a_postgresql_restart_loses_nothing_acknowledged(running_app: GrpcApp, restartable_postgres: str) -> None:
    libpq = restartable_postgres.replace("+psycopg", "")
    async with gate_channel(running_app.address) as channel:
        stub = memory_pb2_grpc.MemoryServiceStub(channel)
        writer = Writer(stub)
        task = asyncio.create_task(writer.run())
        restart: subprocess.CompletedProcess[str] | None = None
        try:
            async with asyncio.timeout(RUN_LIMIT_SECONDS):
                await writer.until_acknowledged(ACKS_BEFORE_RESTART)
                restart = await asyncio.to_thread(pg_ctlcluster, "restart")
                assert restart.returncode == 0, f"pg_ctlcluster restart failed: {restart.stderr.strip()}"
                restarted_at = len(writer.acknowledged)
                await writer.until_acknowledged(restarted_at + ACKS_AFTER_RESTART)
        finally:
            writer.stop.set()
            try:
                async with asyncio.timeout(10):
                    await task  # finishes its current event (or raises what it could not tolerate)
            finally:
                task.cancel()
        assert not writer.unexpected

        # Health is SERVING again (the probe reconnected), and the app's next call on a new code path succeeds.
        async with asyncio.timeout(10):
            await serving_again(channel)
        await stub.CreateApiKey(key_request(), timeout=10)
        trail = await stub.GetAuditTrail(memory_pb2.GetAuditTrailRequest(trace_id=writer.trace_id), timeout=10)

    acknowledged = writer.acknowledged
    assert len(acknowledged) >= ACKS_BEFORE_RESTART + ACKS_AFTER_RESTART
    assert len(set(acknowledged)) == len(acknowledged)
    with psycopg.connect(libpq) as connection:
        stored = {
            row[0]
            for row in connection.execute(
                "SELECT event_id FROM audit_events WHERE trace_id = %s", (writer.trace_id,)
            ).fetchall()
        }
    missing = [event_id for event_id in acknowledged if event_id not in stored]
    assert not missing, f"acknowledged but lost across the restart: {missing}"
    # Nothing unacknowledged beyond the one event in flight when the writer stopped, and no duplicates.
    assert len(stored) - len(acknowledged) in (0, 1)
    assert [event.event_id for event in trail.events][: len(acknowledged)] == acknowledged
