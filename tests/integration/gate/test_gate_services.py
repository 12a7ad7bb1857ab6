"""The gate against real memory (SQLite) and executor servers on loopback, in one process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2, timestamp_pb2
from grpc_health.v1 import health_pb2
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from techno.gate.v1 import admin_pb2, admin_pb2_grpc, gate_pb2, gate_pb2_grpc
from techno.memory.v1 import memory_pb2, memory_pb2_grpc
from techno_core.grpc_errors import error_info_of, rpc_status_of
from techno_core.identity import Identity
from techno_core.server import GrpcApp
from techno_executor.bootstrap import bootstrap as executor_bootstrap
from techno_executor.settings import ExecutorSettings
from techno_gate.bootstrap import bootstrap as gate_bootstrap
from techno_gate.domain.keys import generate_key
from techno_gate.settings import GateSettings
from techno_memory.adapters.database import create_database_engine
from techno_memory.adapters.migrations import upgrade
from techno_memory.bootstrap import bootstrap as memory_bootstrap
from techno_memory.settings import MemorySettings
from tests.tls import as_identity, connect

POLICY = Path(__file__).resolve().parents[3] / "config" / "policy.yaml"


@dataclass
class Services:
    memory: GrpcApp
    executor: GrpcApp
    gate: GrpcApp
    key: str
    gate_registry: CollectorRegistry

    def channel(self) -> grpc.aio.Channel:
        """To the gate as the edge, its caller on every REST route."""
        return connect(self.gate.address, identity=Identity.EDGE, server=Identity.GATE)

    def memory_channel(self) -> grpc.aio.Channel:
        """To memory as the operator's tools (keys, audit trail), not as the gate under test."""
        return connect(self.memory.address, identity=Identity.OPERATOR, server=Identity.MEMORY)


async def migrated_sqlite(path: Path) -> str:
    url = f"sqlite+aiosqlite:///{path}"
    engine = create_database_engine(url, pool_size=1, tracer_provider=None)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
    return url


@pytest.fixture
async def services(tmp_path: Path, tracer_provider: TracerProvider) -> AsyncIterator[Services]:
    url = await migrated_sqlite(tmp_path / "memory.db")
    memory = await memory_bootstrap(
        MemorySettings(**as_identity(Identity.MEMORY), memory_database_url=url, memory_port=0, memory_metrics_port=0),
        tracer_provider=tracer_provider,
    )
    await memory.start()
    executor = await executor_bootstrap(
        ExecutorSettings(
            **as_identity(Identity.EXECUTOR),
            executor_id="executor-it",
            executor_port=0,
            executor_metrics_port=0,
            memory_target=memory.address,
        ),
        tracer_provider=tracer_provider,
    )
    await executor.start()
    key = generate_key()
    async with connect(memory.address, identity=Identity.OPERATOR, server=Identity.MEMORY) as channel:
        await memory_pb2_grpc.MemoryServiceStub(channel).CreateApiKey(
            memory_pb2.CreateApiKeyRequest(
                key_id=key.key_id, prefix=key.prefix, key_hash=key.key_hash, name="it", profile="default"
            )
        )
    registry = CollectorRegistry()
    gate = await gate_bootstrap(
        GateSettings(
            **as_identity(Identity.GATE),
            gate_id="gate-it",
            gate_port=0,
            gate_metrics_port=0,
            memory_target=memory.address,
            executor_target=executor.address,
            gate_policy_file=str(POLICY),
            gate_audit_timeout_seconds=1.0,
        ),
        tracer_provider=tracer_provider,
        registry=registry,
    )
    await gate.start()
    yield Services(memory, executor, gate, key.secret, registry)
    for app in (gate, executor, memory):
        await app.stop()


def process_request(action: str = "summarize") -> gate_pb2.ProcessRequest:
    payload = struct_pb2.Struct()
    payload.update({"text": "Governed actions, recorded before they run."})
    return gate_pb2.ProcessRequest(action=action, context_id="it", payload=payload)


async def test_process_records_decision_and_outcome(services: Services, span_exporter: InMemorySpanExporter) -> None:
    async with services.channel() as channel:
        response = await gate_pb2_grpc.GateServiceStub(channel).Process(
            process_request(), metadata=[("x-api-key", services.key)], timeout=10
        )
    async with services.memory_channel() as channel:
        trail = await memory_pb2_grpc.MemoryServiceStub(channel).GetAuditTrail(
            memory_pb2.GetAuditTrailRequest(trace_id=response.trace_id)
        )
    assert [e.result for e in trail.events] == ["ALLOW", "SUCCEEDED"]
    assert trail.events[1].attributes["provider"] == response.provider
    traced = {span.context.trace_id for span in span_exporter.get_finished_spans()}
    assert int(response.trace_id, 16) in traced
    labels = {"gate": "gate-it", "decision": "ALLOW", "reason": "ALLOWED"}
    assert services.gate_registry.get_sample_value("gate_decisions_total", labels) == 1


async def test_fails_closed_when_memory_is_down(services: Services) -> None:
    calls = {"executor": "executor-it"}
    executed_before = services.executor.registry.get_sample_value("executor_calls_total", calls)
    await services.memory.stop()
    async with services.channel() as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await gate_pb2_grpc.GateServiceStub(channel).Process(
                process_request(), metadata=[("x-api-key", services.key)], timeout=10
            )
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    info = error_info_of(rpc_status_of(raised.value))
    assert info is not None
    assert info.reason == "AUDIT_UNAVAILABLE"
    assert services.executor.registry.get_sample_value("executor_calls_total", calls) == executed_before
    assert services.gate_registry.get_sample_value("gate_audit_write_failures_total", {"kind": "DECISION"}) == 1


async def test_health_follows_memory(services: Services) -> None:
    assert services.gate.health_status() == health_pb2.HealthCheckResponse.SERVING
    await services.memory.stop()
    assert services.gate._monitor is not None
    assert not await services.gate._monitor.check_once()
    assert services.gate.health_status() == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_list_actions_needs_a_key_and_follows_the_profile(services: Services) -> None:
    async with services.channel() as channel:
        stub = gate_pb2_grpc.GateServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.ListActions(gate_pb2.ListActionsRequest())
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        listed = await stub.ListActions(gate_pb2.ListActionsRequest(), metadata=[("x-api-key", services.key)])
    assert {a.name for a in listed.actions} == {"chat", "summarize", "classify", "extract", "analyze_document"}
    assert listed.policy_version
    assert len(listed.trace_id) == 32


async def test_out_of_range_timestamps_are_the_callers_error(services: Services) -> None:
    """Over gRPC a Timestamp can be outside years 1-9999; that is INVALID_ARGUMENT naming the field, never a 500."""
    never = timestamp_pb2.Timestamp(seconds=10**12)
    key = [("x-api-key", services.key)]
    async with services.channel() as channel:
        admin = admin_pb2_grpc.GateAdminServiceStub(channel)
        for call in (
            admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(name="k", expires_at=never), metadata=key),
            admin.ListAuditEvents(admin_pb2.ListAuditEventsRequest(start_time=never), metadata=key),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
