"""The issue's attack list, tried against real memory and executor servers by a caller on the internal network:
with no certificate at all, with a certificate of another CA, with one of our CA naming no identity, and with
the edge's own certificate (a compromised edge). Every attempt is refused, and nothing it asked for happened."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
import pytest

from techno.executor.v1 import executor_pb2, executor_pb2_grpc
from techno.memory.v1 import memory_pb2, memory_pb2_grpc
from techno_core.identity import Identity

from .calls import admin_key, execute_request, forged_pair, refused, set_faults_request, trace_id, trail
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

Attack = Callable[[grpc.aio.Channel, "Victim"], Awaitable[object]]


@dataclass(frozen=True)
class Victim:
    """What the attacks aim at: a principal's session and a real decision's trace."""

    principal: str
    session_id: str
    trace: str


def memory(channel: grpc.aio.Channel) -> memory_pb2_grpc.MemoryServiceStub:
    return memory_pb2_grpc.MemoryServiceStub(channel)


MEMORY_ATTACKS: dict[str, Attack] = {
    "list key hashes": lambda c, v: memory(c).ListApiKeys(memory_pb2.ListApiKeysRequest(), timeout=5),
    "mint an admin key": lambda c, v: memory(c).CreateApiKey(admin_key(), timeout=5),
    "forge a decision and its outcome": lambda c, v: memory(c).AppendAuditEvents(forged_pair(v.trace), timeout=5),
    "read the audit trail": lambda c, v: memory(c).GetAuditTrail(
        memory_pb2.GetAuditTrailRequest(trace_id=v.trace), timeout=5
    ),
    "search the audit trail": lambda c, v: memory(c).ListAuditEvents(memory_pb2.ListAuditEventsRequest(), timeout=5),
    "create a session for someone else": lambda c, v: memory(c).CreateSession(
        memory_pb2.CreateSessionRequest(principal_id=v.principal), timeout=5
    ),
    "read someone else's session": lambda c, v: memory(c).GetSession(
        memory_pb2.GetSessionRequest(session_id=v.session_id, principal_id=v.principal), timeout=5
    ),
    "delete someone else's session": lambda c, v: memory(c).DeleteSession(
        memory_pb2.DeleteSessionRequest(session_id=v.session_id, principal_id=v.principal), timeout=5
    ),
    "export someone else's data": lambda c, v: memory(c).ExportPrincipalData(
        memory_pb2.ExportPrincipalDataRequest(principal_id=v.principal), timeout=5
    ),
}
EXECUTOR_ATTACKS: dict[str, Attack] = {
    "execute without a decision": lambda c, v: executor_pb2_grpc.ExecutorServiceStub(c).Execute(
        execute_request(), timeout=5
    ),
    "inject provider faults": lambda c, v: executor_pb2_grpc.ExecutorAdminServiceStub(c).SetFaults(
        set_faults_request(), timeout=5
    ),
    "force a breaker open": lambda c, v: executor_pb2_grpc.ExecutorAdminServiceStub(c).SetBreaker(
        executor_pb2.SetBreakerRequest(provider="fake", command=executor_pb2.BREAKER_COMMAND_FORCE_OPEN), timeout=5
    ),
}
# How each attacker is turned away: at the handshake (UNAVAILABLE, the call never reaches a handler) or by the
# authorization interceptor with a reason.
ATTACKERS = {
    "plaintext": grpc.StatusCode.UNAVAILABLE,
    "no certificate": grpc.StatusCode.UNAVAILABLE,
    "another CA": grpc.StatusCode.UNAVAILABLE,
    "our CA, no identity": UNAUTHENTICATED,
    "the edge's certificate": NOT_AUTHORIZED,
}


def attacker_channel(attacker: str, address: str, peers: Peers) -> grpc.aio.Channel:
    if attacker == "plaintext":
        return plaintext_channel(address)
    if attacker == "no certificate":
        return no_certificate_channel(address)
    if attacker == "another CA":
        return secure_channel(address, peers.outsider)
    if attacker == "our CA, no identity":
        return secure_channel(address, peers.stranger)
    return as_peer(address, Identity.EDGE)


@pytest.fixture
async def victim(services: Services) -> Victim:
    """A real session and a real audited decision, made by the gate, as the attacks' targets."""
    trace = trace_id()
    async with as_peer(services.memory.address, Identity.GATE) as channel:
        session = await memory(channel).CreateSession(memory_pb2.CreateSessionRequest(principal_id="key:victim"))
        pair = forged_pair(trace)  # here written by the gate itself: the genuine record
        await memory(channel).AppendAuditEvents(pair, timeout=5)
    return Victim("key:victim", session.session.session_id, trace)


async def assert_nothing_happened(services: Services, victim: Victim) -> None:
    async with as_peer(services.memory.address, Identity.GATE) as channel:
        keys = await memory(channel).ListApiKeys(memory_pb2.ListApiKeysRequest(), timeout=5)
        assert list(keys.api_keys) == [], "a key was minted"
        assert len(await trail(channel, victim.trace)) == 2, "the audit trail changed"
        sessions = await memory(channel).ExportPrincipalData(
            memory_pb2.ExportPrincipalDataRequest(principal_id=victim.principal), timeout=5
        )
        assert [s.session_id for s in sessions.sessions] == [victim.session_id], "sessions changed"
    async with as_peer(services.executor.address, Identity.GATE) as channel:
        breakers = await executor_pb2_grpc.ExecutorAdminServiceStub(channel).ListBreakers(
            executor_pb2.ListBreakersRequest(), timeout=5
        )
        assert [b.state for b in breakers.breakers] == [executor_pb2.BREAKER_STATE_CLOSED], "a breaker was forced"
        executed = await executor_pb2_grpc.ExecutorServiceStub(channel).Execute(execute_request(), timeout=10)
        assert executed.attempts == 1, "faults were injected"
    calls = services.executor.registry.get_sample_value("executor_calls_total", {"executor": "executor-mtls"})
    assert calls == 1, "an attacker's Execute reached the executor"


@pytest.mark.parametrize("attacker", list(ATTACKERS))
async def test_every_attack_is_refused_and_changes_nothing(
    services: Services, peers: Peers, victim: Victim, attacker: str
) -> None:
    expected = ATTACKERS[attacker]
    outcomes: dict[str, object] = {}
    for targets, address in ((MEMORY_ATTACKS, services.memory.address), (EXECUTOR_ATTACKS, services.executor.address)):
        for name, attack in targets.items():
            async with attacker_channel(attacker, address, peers) as channel:
                error = await refused(attack(channel, victim))
            outcomes[name] = error.code() if isinstance(expected, grpc.StatusCode) else denial(error)
    assert outcomes == dict.fromkeys([*MEMORY_ATTACKS, *EXECUTOR_ATTACKS], expected)
    await assert_nothing_happened(services, victim)
