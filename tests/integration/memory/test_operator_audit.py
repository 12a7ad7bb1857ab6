"""Key changes by the operator identity (``techno-keys``) are recorded by memory itself as ADMIN events, and the
operator may append nothing but ADMIN events; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf import struct_pb2

from techno.memory.v1 import memory_pb2, memory_pb2_grpc
from techno_core.identity import Identity
from techno_core.server import GrpcApp
from techno_core.timestamps import to_timestamp
from techno_memory.adapters.chain import verify_chain
from techno_memory.adapters.database import create_database_engine
from tests.tls import certificate_files, connect

from .conftest import gate_channel
from .test_api_keys import key_request, reason_of

OPERATOR = "operator:operator"  # the development certificate's common name is its identity's name


def operator_channel(app: GrpcApp) -> grpc.aio.Channel:
    return connect(app.address, identity=Identity.OPERATOR, server=Identity.MEMORY)


async def admin_events(app: GrpcApp, principal_id: str) -> list[memory_pb2.AuditEvent]:
    async with gate_channel(app.address) as channel:
        reply = await memory_pb2_grpc.MemoryServiceStub(channel).ListAuditEvents(
            memory_pb2.ListAuditEventsRequest(principal_id=principal_id), timeout=10
        )
    return [event for event in reply.events if event.kind == memory_pb2.AUDIT_EVENT_KIND_ADMIN]


async def assert_chain_intact(url: str) -> None:
    engine = create_database_engine(url, pool_size=1, tracer_provider=None)
    try:
        report = await verify_chain(engine)
    finally:
        await engine.dispose()
    assert report.intact, report.summary()


async def test_operator_key_changes_are_recorded_before_and_after(app: GrpcApp, migrated_url: str) -> None:
    request = key_request(name="bootstrap admin", scopes=["admin"])
    async with operator_channel(app) as channel:
        stub = memory_pb2_grpc.MemoryServiceStub(channel)
        await stub.CreateApiKey(request, timeout=10)
        await stub.RevokeApiKey(memory_pb2.RevokeApiKeyRequest(key_id=request.key_id), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.RevokeApiKey(memory_pb2.RevokeApiKeyRequest(key_id="key_unknown"), timeout=10)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND

    events = await admin_events(app, OPERATOR)
    assert [(e.action, e.context_id, e.result) for e in events] == [
        ("api_key.create", request.key_id, "REQUESTED"),
        ("api_key.create", request.key_id, "SUCCEEDED"),
        ("api_key.revoke", request.key_id, "REQUESTED"),
        ("api_key.revoke", request.key_id, "SUCCEEDED"),
        ("api_key.revoke", "key_unknown", "REQUESTED"),
        ("api_key.revoke", "key_unknown", "FAILED"),
    ]
    assert {e.service for e in events} == {"memory"}
    assert list(events[-1].reason_codes) == [reason_of(raised.value)]
    assert events[0].trace_id == events[1].trace_id != events[2].trace_id
    created = events[0].attributes
    assert dict(created) == {
        "key_id": request.key_id, "name": "bootstrap admin", "profile": "default", "scopes": ["admin"]
    }  # fmt: skip
    assert request.key_hash not in str(events)  # never the key's hash, let alone the key
    await assert_chain_intact(migrated_url)


async def test_key_changes_by_the_gate_are_left_to_the_gate(app: GrpcApp) -> None:
    """The gate records its own admin events (with the admin key as principal): memory adds none."""
    async with gate_channel(app.address) as channel:
        stub = memory_pb2_grpc.MemoryServiceStub(channel)
        request = key_request()
        await stub.CreateApiKey(request, timeout=10)
        await stub.RevokeApiKey(memory_pb2.RevokeApiKeyRequest(key_id=request.key_id), timeout=10)
        reply = await stub.ListAuditEvents(memory_pb2.ListAuditEventsRequest(), timeout=10)
    assert list(reply.events) == []


def event(kind: memory_pb2.AuditEventKind) -> memory_pb2.AuditEvent:
    attributes = struct_pb2.Struct()
    attributes.update({"note": "appended by an operator tool"})
    return memory_pb2.AuditEvent(
        event_id=str(uuid.uuid4()),
        trace_id=uuid.uuid4().hex,
        kind=kind,
        occurred_at=to_timestamp(datetime.now(UTC)),
        service="techno-keys",
        principal_id=OPERATOR,
        action="api_key.create",
        result="SUCCEEDED",
        attributes=attributes,
    )


@pytest.mark.parametrize(
    "kind",
    [memory_pb2.AUDIT_EVENT_KIND_DECISION, memory_pb2.AUDIT_EVENT_KIND_OUTCOME, memory_pb2.AUDIT_EVENT_KIND_BREAKER],
)
async def test_the_operator_cannot_append_what_only_services_write(
    app: GrpcApp, kind: memory_pb2.AuditEventKind
) -> None:
    async with operator_channel(app) as channel:
        stub = memory_pb2_grpc.MemoryServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.AppendAuditEvents(
                memory_pb2.AppendAuditEventsRequest(events=[event(memory_pb2.AUDIT_EVENT_KIND_ADMIN), event(kind)]),
                timeout=10,
            )
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert reason_of(raised.value) == "PEER_NOT_AUTHORIZED"
        reply = await stub.ListAuditEvents(memory_pb2.ListAuditEventsRequest(), timeout=10)
    assert list(reply.events) == []  # the whole request is refused, its ADMIN event too


async def test_the_operator_may_append_admin_events(app: GrpcApp, migrated_url: str) -> None:
    async with operator_channel(app) as channel:
        stub = memory_pb2_grpc.MemoryServiceStub(channel)
        reply = await stub.AppendAuditEvents(
            memory_pb2.AppendAuditEventsRequest(events=[event(memory_pb2.AUDIT_EVENT_KIND_ADMIN)]), timeout=10
        )
    assert reply.appended == 1
    await assert_chain_intact(migrated_url)


async def test_techno_keys_with_the_operator_certificate_is_recorded(app: GrpcApp) -> None:
    files = certificate_files(Identity.OPERATOR)
    env = os.environ | {
        "TECHNO_TLS_CERT_FILE": str(files.certificate),
        "TECHNO_TLS_KEY_FILE": str(files.key),
        "TECHNO_TLS_CA_FILE": str(files.ca),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "techno_gate.keys_cli", "--memory", app.address,
        "create", "--name", "first admin", "--scope", "admin",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    key_id = err.decode().split()[1]
    events = await admin_events(app, OPERATOR)
    assert [(e.action, e.context_id, e.result) for e in events] == [
        ("api_key.create", key_id, "REQUESTED"),
        ("api_key.create", key_id, "SUCCEEDED"),
    ]
    assert out.decode().strip() not in str(events)
