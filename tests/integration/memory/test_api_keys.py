"""The API key directory over a real channel, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from techno.memory.v1 import memory_pb2, memory_pb2_grpc
from techno_core.grpc_errors import error_info_of, rpc_status_of
from techno_core.server import GrpcApp
from techno_core.timestamps import to_timestamp

from .conftest import gate_channel

Stub = memory_pb2_grpc.MemoryServiceStub


def key_request(**fields: Any) -> memory_pb2.CreateApiKeyRequest:
    key_id = f"key_{uuid.uuid4().hex[:16]}"
    defaults = {
        "key_id": key_id,
        "prefix": "tk_ab12cd34",
        "key_hash": hashlib.sha256(key_id.encode()).hexdigest(),
        "name": "ci",
        "profile": "default",
    }
    return memory_pb2.CreateApiKeyRequest(**(defaults | fields))


def reason_of(error: grpc.aio.AioRpcError) -> str:
    info = error_info_of(rpc_status_of(error))
    return info.reason if info is not None else ""


def violated_fields(error: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status_of(error)
    bad_request = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad_request) for d in status.details if d.Is(bad_request.DESCRIPTOR))
    return [violation.field for violation in bad_request.field_violations]


async def list_keys(stub: Stub, since: Timestamp | None = None) -> memory_pb2.ListApiKeysResponse:
    request = memory_pb2.ListApiKeysRequest()
    if since is not None:
        request.updated_since.CopyFrom(since)
    response: memory_pb2.ListApiKeysResponse = await stub.ListApiKeys(request, timeout=10)
    return response


async def create(stub: Stub, **fields: Any) -> memory_pb2.ApiKey:
    response: memory_pb2.CreateApiKeyResponse = await stub.CreateApiKey(key_request(**fields), timeout=10)
    return response.api_key


async def revoke(stub: Stub, key_id: str) -> memory_pb2.ApiKey:
    request = memory_pb2.RevokeApiKeyRequest(key_id=key_id)
    response: memory_pb2.RevokeApiKeyResponse = await stub.RevokeApiKey(request, timeout=10)
    return response.api_key


async def test_create_list_and_revoke(stub: Stub) -> None:
    request = key_request()
    created = (await stub.CreateApiKey(request, timeout=10)).api_key
    assert (created.key_id, created.key_hash, created.profile) == (request.key_id, request.key_hash, "default")
    assert created.HasField("created_at")
    assert created.updated_at == created.created_at
    assert not created.HasField("revoked_at")

    listed = {key.key_id: key for key in (await stub.ListApiKeys(memory_pb2.ListApiKeysRequest())).api_keys}
    assert listed[request.key_id] == created

    revoked = (await stub.RevokeApiKey(memory_pb2.RevokeApiKeyRequest(key_id=request.key_id))).api_key
    assert revoked.HasField("revoked_at")
    assert revoked.updated_at == revoked.revoked_at
    again = (await stub.RevokeApiKey(memory_pb2.RevokeApiKeyRequest(key_id=request.key_id))).api_key
    assert again.revoked_at == revoked.revoked_at  # the first revocation time is kept
    assert again.updated_at == revoked.updated_at  # and nothing changed for the gates to refresh
    listed = {key.key_id: key for key in (await stub.ListApiKeys(memory_pb2.ListApiKeysRequest())).api_keys}
    assert listed[request.key_id].revoked_at == revoked.revoked_at


async def test_a_key_without_scopes_may_only_process_and_never_expires(stub: Stub) -> None:
    created = await create(stub)
    assert list(created.scopes) == ["process"]
    assert not created.HasField("expires_at")


async def test_scopes_and_expiry_are_stored(stub: Stub) -> None:
    # Whole milliseconds: both databases keep microseconds, so the value comes back exactly.
    expires_at = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=250_000)
    created = await create(stub, scopes=["audit:read", "admin"], expires_at=to_timestamp(expires_at))
    assert list(created.scopes) == ["audit:read", "admin"]
    assert created.expires_at.ToDatetime(tzinfo=UTC) == expires_at
    [listed] = [key for key in (await list_keys(stub)).api_keys if key.key_id == created.key_id]
    assert listed == created


async def test_unknown_scopes_and_a_past_expiry_are_refused_with_field_violations(stub: Stub) -> None:
    past = to_timestamp(datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await create(stub, scopes=["process", "superuser"], expires_at=past)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(raised.value) == "INVALID_API_KEY"
    assert violated_fields(raised.value) == ["scopes[1]", "expires_at"]
    assert (await list_keys(stub)).api_keys == []  # nothing was stored


async def test_updated_since_lists_only_the_keys_changed_since(stub: Stub) -> None:
    first = await list_keys(stub)
    assert first.HasField("read_at")
    key_a = await create(stub)
    middle = await list_keys(stub)
    assert [key.key_id for key in middle.api_keys] == [key_a.key_id]
    assert middle.read_at.ToDatetime() >= first.read_at.ToDatetime()

    key_b = await create(stub)
    revoked_a = await revoke(stub, key_a.key_id)
    changed = await list_keys(stub, since=middle.read_at)
    # Both changes after the read: B's creation and A's revocation (A listed in its revoked state).
    assert {key.key_id: key for key in changed.api_keys} == {key_a.key_id: revoked_a, key_b.key_id: key_b}
    assert changed.read_at.ToDatetime() >= middle.read_at.ToDatetime()

    assert (await list_keys(stub, since=changed.read_at)).api_keys == []
    assert len((await list_keys(stub)).api_keys) == 2  # without updated_since: every key


async def test_a_second_revocation_is_not_a_change(stub: Stub) -> None:
    key = await create(stub)
    await revoke(stub, key.key_id)
    after_first = await list_keys(stub)
    await revoke(stub, key.key_id)
    assert (await list_keys(stub, since=after_first.read_at)).api_keys == []


async def test_duplicate_key_id_or_hash_already_exists(stub: Stub) -> None:
    first = key_request()
    await stub.CreateApiKey(first, timeout=10)
    for duplicate in (key_request(key_id=first.key_id), key_request(key_hash=first.key_hash)):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.CreateApiKey(duplicate, timeout=10)
        assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert reason_of(raised.value) == "API_KEY_EXISTS"


async def test_revoking_an_unknown_key_is_not_found(stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.RevokeApiKey(memory_pb2.RevokeApiKeyRequest(key_id="key_unknown"), timeout=10)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(raised.value) == "API_KEY_NOT_FOUND"


async def test_a_malformed_key_hash_is_invalid(stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CreateApiKey(key_request(key_hash="ABC"), timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(raised.value) == "INVALID_API_KEY"


async def test_health_is_serving_when_the_database_answers(app: GrpcApp) -> None:
    # On the mutual TLS port to peers, and on the plaintext health-only port to probes.
    for channel in (gate_channel(app.address), grpc.aio.insecure_channel(f"127.0.0.1:{app.health_port}")):
        async with channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "readiness", "techno.memory.v1.MemoryService"):
                response = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert response.status == health_pb2.HealthCheckResponse.SERVING
    assert app.registry.get_sample_value("memory_db_up") == 1
