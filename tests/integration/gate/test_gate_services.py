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
from tests.integration.keys import store_key
from tests.integration.services import InProcess, migrated_sqlite
from tests.tls import connect

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


@pytest.fixture
async def services(tmp_path: Path, tracer_provider: TracerProvider) -> AsyncIterator[Services]:
    async with InProcess(tracer_provider) as start:
        memory = await start.memory(await migrated_sqlite(tmp_path / "memory.db"))
        executor = await start.executor(memory, executor_id="executor-it")
        key = await store_key(memory.address)
        gate = await start.gate(memory, executor, policy_file=POLICY, gate_id="gate-it", gate_audit_timeout_seconds=1.0)
        yield Services(memory, executor, gate, key.secret, gate.registry)


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
