"""Valid requests for the RPCs the transport tests call, so a refusal can only come from who is calling."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf import json_format, timestamp_pb2

from techno.executor.v1 import executor_pb2
from techno.memory.v1 import memory_pb2, memory_pb2_grpc
from techno_gate.domain.keys import generate_key


def now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(datetime.now(UTC))
    return stamp


def trace_id() -> str:
    return secrets.token_hex(16)


def audit_event(trace: str, kind: memory_pb2.AuditEventKind) -> memory_pb2.AuditEvent:
    results = {
        memory_pb2.AUDIT_EVENT_KIND_DECISION: ("gate", "summarize", "ALLOW"),
        memory_pb2.AUDIT_EVENT_KIND_OUTCOME: ("gate", "summarize", "SUCCEEDED"),
        memory_pb2.AUDIT_EVENT_KIND_BREAKER: ("executor", "circuit_breaker", "CIRCUIT_OPENED"),
    }
    service, action, result = results[kind]
    return memory_pb2.AuditEvent(
        event_id=str(uuid.uuid4()),
        trace_id=trace,
        kind=kind,
        occurred_at=now(),
        service=service,
        principal_id="key:victim",
        action=action,
        context_id="fake",
        result=result,
    )


def forged_pair(trace: str) -> memory_pb2.AppendAuditEventsRequest:
    """A DECISION and its OUTCOME, as the gate would write them for a call that never happened."""
    return memory_pb2.AppendAuditEventsRequest(
        events=[
            audit_event(trace, memory_pb2.AUDIT_EVENT_KIND_DECISION),
            audit_event(trace, memory_pb2.AUDIT_EVENT_KIND_OUTCOME),
        ]
    )


def admin_key() -> memory_pb2.CreateApiKeyRequest:
    key = generate_key()
    return memory_pb2.CreateApiKeyRequest(
        key_id=key.key_id,
        prefix=key.prefix,
        key_hash=key.key_hash,
        name="minted",
        profile="default",
        scopes=["process", "audit:read", "admin"],
    )


def execute_request() -> executor_pb2.ExecuteRequest:
    request = executor_pb2.ExecuteRequest(action="summarize", context_id="mtls", profile="default")
    json_format.ParseDict({"text": "Mutual TLS between every service."}, request.payload)
    return request


def set_faults_request() -> executor_pb2.SetFaultsRequest:
    return executor_pb2.SetFaultsRequest(provider="fake", faults=executor_pb2.FaultProfile(error_rate=1.0))


async def refused(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    """The error a call fails with; fails the test when it succeeds."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value


async def trail(channel: grpc.aio.Channel, trace: str) -> list[memory_pb2.AuditEvent]:
    response = await memory_pb2_grpc.MemoryServiceStub(channel).GetAuditTrail(
        memory_pb2.GetAuditTrailRequest(trace_id=trace), timeout=5
    )
    return list(response.events)
