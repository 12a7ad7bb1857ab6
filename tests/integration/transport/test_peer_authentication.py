"""Who gets through a service's main port: only a client certificate of our CA naming a Techno identity that the
service's table allows. Everything else is refused, at the handshake or with a machine-readable reason."""

from __future__ import annotations

import logging

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from techno.memory.v1 import memory_pb2, memory_pb2_grpc
from techno_core.identity import Identity
from techno_core.tls import CertificateFiles

from .conftest import (
    NOT_AUTHORIZED,
    UNAUTHENTICATED,
    Peers,
    Services,
    as_peer,
    denial,
    no_certificate_channel,
    plaintext_channel,
    secure_channel,
)

SERVICES = ["memory", "executor", "gate"]
LIST_KEYS = "/techno.memory.v1.MemoryService/ListApiKeys"


async def health_check(channel: grpc.aio.Channel) -> int:
    async with channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    status: int = response.status
    return status


async def refused_at_handshake(channel: grpc.aio.Channel) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await health_check(channel)
    return raised.value.code()


@pytest.mark.parametrize("name", SERVICES)
async def test_a_plaintext_call_to_the_main_port_fails(services: Services, name: str) -> None:
    assert await refused_at_handshake(plaintext_channel(services.app(name).address)) == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("name", SERVICES)
async def test_tls_without_a_client_certificate_fails(services: Services, name: str) -> None:
    channel = no_certificate_channel(services.app(name).address)
    assert await refused_at_handshake(channel) == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("name", SERVICES)
async def test_a_client_certificate_from_another_ca_fails_even_naming_the_gate(
    services: Services, peers: Peers, name: str
) -> None:
    channel = secure_channel(services.app(name).address, peers.outsider)
    assert await refused_at_handshake(channel) == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("name", SERVICES)
async def test_every_identity_of_our_ca_reaches_health_on_the_main_port(services: Services, name: str) -> None:
    for identity in Identity:
        channel = as_peer(services.app(name).address, identity)
        assert await health_check(channel) == health_pb2.HealthCheckResponse.SERVING, identity


async def list_keys_error(channel: grpc.aio.Channel) -> grpc.aio.AioRpcError:
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await memory_pb2_grpc.MemoryServiceStub(channel).ListApiKeys(memory_pb2.ListApiKeysRequest(), timeout=5)
    return raised.value


def denied_count(services: Services, method: str, code: str, peer: str) -> float:
    service, _, name = method.lstrip("/").rpartition("/")
    labels = {"grpc_service": service, "grpc_method": name, "grpc_code": code, "peer": peer}
    return services.memory.registry.get_sample_value("grpc_server_peer_denied_total", labels) or 0.0


@pytest.mark.parametrize("certificate", ["stranger", "foreign"])
async def test_our_ca_without_a_techno_identity_is_unauthenticated(
    services: Services, peers: Peers, certificate: str
) -> None:
    files = peers.named(certificate)
    error = await list_keys_error(secure_channel(services.memory.address, files))
    assert denial(error) == UNAUTHENTICATED
    assert denied_count(services, LIST_KEYS, "UNAUTHENTICATED", "none") == 1
    # Health is open to every identity, not to a certificate without one.
    error_on_health = await refused_health(services, files)
    assert denial(error_on_health) == UNAUTHENTICATED


async def refused_health(services: Services, files: CertificateFiles) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await health_check(secure_channel(services.memory.address, files))
    return raised.value


async def test_a_wrong_identity_is_not_authorized_counted_and_logged(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="techno_core.authorization")
    assert denied_count(services, LIST_KEYS, "PERMISSION_DENIED", "edge") == 0
    for expected in (1, 2):
        error = await list_keys_error(as_peer(services.memory.address, Identity.EDGE))
        assert denial(error) == NOT_AUTHORIZED
        assert "edge" in (error.details() or "")
        assert denied_count(services, LIST_KEYS, "PERMISSION_DENIED", "edge") == expected
    # Only the refused peer and method are counted: nothing under another peer or code.
    assert denied_count(services, LIST_KEYS, "UNAUTHENTICATED", "none") == 0
    assert denied_count(services, LIST_KEYS, "PERMISSION_DENIED", "executor") == 0
    refusals = [r for r in caplog.records if r.name == "techno_core.authorization"]
    assert [r.getMessage() for r in refusals] == [f"refused {LIST_KEYS} from peer edge"] * 2
    assert all(r.levelno == logging.WARNING for r in refusals)


@pytest.mark.parametrize("identity", [Identity.GATE, Identity.OPERATOR])
async def test_the_right_identity_succeeds(services: Services, identity: Identity) -> None:
    async with as_peer(services.memory.address, identity) as channel:
        response = await memory_pb2_grpc.MemoryServiceStub(channel).ListApiKeys(
            memory_pb2.ListApiKeysRequest(), timeout=5
        )
    assert list(response.api_keys) == []
    assert denied_count(services, LIST_KEYS, "PERMISSION_DENIED", identity.value) == 0
