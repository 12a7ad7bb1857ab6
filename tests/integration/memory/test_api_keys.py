"""The API key directory over a real channel, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from techno.memory.v1 import memory_pb2, memory_pb2_grpc
from techno_core.grpc_errors import error_info_of, rpc_status_of
from techno_core.server import GrpcApp

Stub = memory_pb2_grpc.MemoryServiceStub


def key_request(**fields: str) -> memory_pb2.CreateApiKeyRequest:
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


async def test_create_list_and_revoke(stub: Stub) -> None:
    request = key_request()
    created = (await stub.CreateApiKey(request, timeout=10)).api_key
    assert (created.key_id, created.key_hash, created.profile) == (request.key_id, request.key_hash, "default")
    assert created.HasField("created_at")
    assert not created.HasField("revoked_at")

    listed = {key.key_id: key for key in (await stub.ListApiKeys(memory_pb2.ListApiKeysRequest())).api_keys}
    assert listed[request.key_id] == created

    revoked = (await stub.RevokeApiKey(memory_pb2.RevokeApiKeyRequest(key_id=request.key_id))).api_key
    assert revoked.HasField("revoked_at")
    again = (await stub.RevokeApiKey(memory_pb2.RevokeApiKeyRequest(key_id=request.key_id))).api_key
    assert again.revoked_at == revoked.revoked_at  # the first revocation time is kept
    listed = {key.key_id: key for key in (await stub.ListApiKeys(memory_pb2.ListApiKeysRequest())).api_keys}
    assert listed[request.key_id].revoked_at == revoked.revoked_at


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
    async with grpc.aio.insecure_channel(app.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "techno.memory.v1.MemoryService"):
            response = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert response.status == health_pb2.HealthCheckResponse.SERVING
    assert app.registry.get_sample_value("memory_db_up") == 1
