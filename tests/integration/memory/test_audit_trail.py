"""Audit appends and reads over a real channel, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from techno.memory.v1 import memory_pb2, memory_pb2_grpc
from techno_core.channels import open_channel
from techno_core.grpc_errors import error_info_of, rpc_status_of
from techno_core.identity import Identity
from techno_core.server import GrpcApp
from techno_core.timestamps import to_timestamp
from tests.tls import certificate_files

Stub = memory_pb2_grpc.MemoryServiceStub
T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def new_trace_id() -> str:
    return uuid.uuid4().hex


def audit_event(trace_id: str, *, event_id: str | None = None, offset: int = 0, **fields: Any) -> memory_pb2.AuditEvent:
    attributes = struct_pb2.Struct()
    attributes.update({"policy_version": "v1", "latency_ms": 12})
    defaults: dict[str, Any] = {
        "event_id": str(uuid.uuid4()) if event_id is None else event_id,
        "trace_id": trace_id,
        "kind": memory_pb2.AUDIT_EVENT_KIND_DECISION,
        "occurred_at": to_timestamp(T0 + timedelta(seconds=offset)),
        "service": "gate",
        "principal_id": "key_1",
        "action": "summarize",
        "context_id": "ctx-1",
        "result": "ALLOW",
        "reason_codes": ["ALLOWED"],
        "attributes": attributes,
    }
    return memory_pb2.AuditEvent(**(defaults | fields))


async def append(stub: Stub, *events: memory_pb2.AuditEvent) -> int:
    response = await stub.AppendAuditEvents(memory_pb2.AppendAuditEventsRequest(events=events), timeout=10)
    return int(response.appended)


async def trail(stub: Stub, trace_id: str) -> list[memory_pb2.AuditEvent]:
    response = await stub.GetAuditTrail(memory_pb2.GetAuditTrailRequest(trace_id=trace_id), timeout=10)
    return list(response.events)


async def test_trail_returns_a_traces_events_in_append_order(stub: Stub) -> None:
    trace_id, other = new_trace_id(), new_trace_id()
    decision = audit_event(trace_id, event_id="d-1", offset=5)
    # Appended second but with an earlier writer clock: the trail follows the append order, not occurred_at.
    outcome = audit_event(
        trace_id,
        event_id="o-1",
        offset=1,
        kind=memory_pb2.AUDIT_EVENT_KIND_OUTCOME,
        service="executor",
        result="SUCCEEDED",
        reason_codes=[],
    )
    assert await append(stub, decision, audit_event(other)) == 2
    assert await append(stub, outcome) == 1
    assert await append(stub, audit_event(trace_id, event_id="o-2", offset=9)) == 1

    events = await trail(stub, trace_id)
    assert [e.event_id for e in events] == ["d-1", "o-1", "o-2"]
    # Stored events carry the time this service committed them; a writer's recorded_at is never taken.
    assert all(event.HasField("recorded_at") for event in events)
    for event in events:
        event.ClearField("recorded_at")
    assert events[0] == decision  # every field survives the database, attributes and timestamps included
    assert events[1] == outcome
    assert await trail(stub, new_trace_id()) == []


async def test_a_repeated_event_id_is_stored_once(stub: Stub) -> None:
    trace_id = new_trace_id()
    event = audit_event(trace_id, event_id=str(uuid.uuid4()))
    assert await append(stub, event) == 1
    assert await append(stub, event) == 0  # a writer's retry: acknowledged, not stored again
    twin = audit_event(trace_id, event_id=str(uuid.uuid4()))
    assert await append(stub, twin, twin, audit_event(trace_id)) == 2
    assert [e.event_id for e in await trail(stub, trace_id)].count(event.event_id) == 1
    assert len(await trail(stub, trace_id)) == 3


async def test_concurrent_appends_are_group_committed(app: GrpcApp, stub: Stub) -> None:
    trace_id = new_trace_id()
    calls = 200
    results = await asyncio.gather(*(append(stub, audit_event(trace_id, offset=n)) for n in range(calls)))
    assert results == [1] * calls  # every call acknowledged only once its event is committed
    assert len(await trail(stub, trace_id)) == calls
    transactions = app.registry.get_sample_value("memory_audit_append_batch_size_count")
    assert app.registry.get_sample_value("memory_audit_append_batch_size_sum") == calls
    assert transactions is not None
    assert transactions < calls  # many calls shared a transaction
    assert app.registry.get_sample_value("memory_audit_events_appended_total") == calls
    assert app.registry.get_sample_value("memory_audit_append_failures_total") == 0


async def test_invalid_events_are_refused_with_field_violations(stub: Stub) -> None:
    bad = audit_event("4BF92F3577B34DA6A3CE929D0E0E4736", event_id="")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await append(stub, audit_event(new_trace_id()), bad)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status_of(raised.value)
    info = error_info_of(status)
    assert info is not None
    assert info.reason == "INVALID_AUDIT_EVENT"
    bad_request = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad_request) for d in status.details if d.Is(bad_request.DESCRIPTOR))
    assert {v.field for v in bad_request.field_violations} == {"events[1].event_id", "events[1].trace_id"}

    with pytest.raises(grpc.aio.AioRpcError) as empty_trace:
        await trail(stub, "")
    assert empty_trace.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_database_spans_belong_to_the_requests_trace(
    app: GrpcApp, tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    # A traced client: its span's context travels in the call's metadata, as from the gate.
    async with open_channel(
        app.address, tracer_provider, certificates=certificate_files(Identity.GATE), server=Identity.MEMORY
    ) as channel:
        with tracer_provider.get_tracer("test").start_as_current_span("writer") as writer:
            await append(memory_pb2_grpc.MemoryServiceStub(channel), audit_event(new_trace_id()))
    # The INSERT ended before the commit, and the commit before the answer: its span is already exported.
    inserts = [span for span in span_exporter.get_finished_spans() if span.name.startswith("INSERT")]
    assert inserts
    assert {span.context.trace_id for span in inserts if span.context is not None} == {
        writer.get_span_context().trace_id
    }
