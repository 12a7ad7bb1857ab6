"""The authorization tables: complete (every RPC a service registers names its callers), saying what the issue
asks (as data), and enforced on real servers (live calls with each identity's certificate)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from techno.executor.v1 import executor_pb2, executor_pb2_grpc
from techno.gate.v1 import gate_pb2, gate_pb2_grpc
from techno.memory.v1 import memory_pb2, memory_pb2_grpc
from techno_core import errors
from techno_core.identity import Identity
from techno_executor.entrypoints.authorization import CALLERS as EXECUTOR_CALLERS
from techno_gate.entrypoints.authorization import CALLERS as GATE_CALLERS
from techno_memory.entrypoints.authorization import CALLERS as MEMORY_CALLERS
from techno_memory.entrypoints.authorization import check_appendable

from .calls import audit_event, execute_request, refused, set_faults_request, trace_id, trail
from .conftest import NOT_AUTHORIZED, Services, as_peer, denial

GATE, EXECUTOR, OPERATOR, EDGE, MEMORY = (
    Identity.GATE,
    Identity.EXECUTOR,
    Identity.OPERATOR,
    Identity.EDGE,
    Identity.MEMORY,
)
M = "/techno.memory.v1.MemoryService/"
X = "/techno.executor.v1.ExecutorService/"
XA = "/techno.executor.v1.ExecutorAdminService/"


class RecordingServer:
    """Stands in for ``grpc.aio.Server`` while a service's registrations run, recording every method they add."""

    def __init__(self) -> None:
        self.methods: set[str] = set()

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass  # the same handlers arrive by name below

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.methods |= {f"/{service}/{method}" for method in handlers}


@pytest.mark.parametrize("name", ["memory", "executor", "gate"])
async def test_every_registered_method_names_its_callers(services: Services, name: str) -> None:
    definition = services.app(name).definition
    server = RecordingServer()
    for register in definition.registrations:
        register(server)  # type: ignore[arg-type]
    assert len(server.methods) >= 4  # memory 17, executor 4, gate 10+: the recorder saw the registrations
    assert server.methods - set(definition.callers) == set(), "RPCs nobody decided who may call"
    assert set(definition.callers) - server.methods == set(), "table entries for RPCs that do not exist"
    assert all(definition.callers.values()), "an entry allowing nobody"


def test_memory_table_keeps_keys_and_the_audit_trail_to_the_gate_and_the_operator() -> None:
    for method in ("CreateApiKey", "ListApiKeys", "RevokeApiKey", "GetAuditTrail", "ListAuditEvents"):
        assert MEMORY_CALLERS[M + method] == {GATE, OPERATOR}, method
    assert MEMORY_CALLERS[M + "AppendAuditEvents"] == {GATE, EXECUTOR, OPERATOR}
    for method in ("CreateSession", "GetSession", "DeleteSession", "AppendSessionMessages"):
        assert MEMORY_CALLERS[M + method] == {GATE, EXECUTOR}, method
    for method in ("GetPreferences", "SetPreferences"):
        assert MEMORY_CALLERS[M + method] == {GATE, EXECUTOR}, method
    for method in ("ClaimIdempotencyKey", "CompleteIdempotencyKey", "ReleaseIdempotencyKey"):
        assert MEMORY_CALLERS[M + method] == {GATE}, method
    everyone = set().union(*MEMORY_CALLERS.values())
    assert EDGE not in everyone
    assert MEMORY not in everyone


def test_executor_table_keeps_execute_to_the_gate_and_admin_to_gate_and_operator() -> None:
    assert EXECUTOR_CALLERS[X + "Execute"] == {GATE}
    for method in ("SetFaults", "ListBreakers", "SetBreaker"):
        assert EXECUTOR_CALLERS[XA + method] == {GATE, OPERATOR}, method


def test_gate_table_lets_only_the_edge_and_the_operator_in() -> None:
    assert GATE_CALLERS
    assert all(allowed == {EDGE, OPERATOR} for allowed in GATE_CALLERS.values())


@pytest.mark.parametrize(
    ("peer", "kinds", "allowed"),
    [
        (EXECUTOR, [memory_pb2.AUDIT_EVENT_KIND_BREAKER], True),
        (EXECUTOR, [memory_pb2.AUDIT_EVENT_KIND_DECISION], False),
        (EXECUTOR, [memory_pb2.AUDIT_EVENT_KIND_OUTCOME], False),
        (EXECUTOR, [memory_pb2.AUDIT_EVENT_KIND_BREAKER, memory_pb2.AUDIT_EVENT_KIND_OUTCOME], False),
        (GATE, [memory_pb2.AUDIT_EVENT_KIND_DECISION, memory_pb2.AUDIT_EVENT_KIND_OUTCOME], True),
    ],
)
def test_check_appendable(peer: Identity, kinds: list[int], allowed: bool) -> None:
    if allowed:
        check_appendable(peer, kinds)
        return
    with pytest.raises(errors.PermissionDenied) as raised:
        check_appendable(peer, kinds)
    assert raised.value.reason == "PEER_NOT_AUTHORIZED"


async def test_the_executor_identity_cannot_touch_keys_on_memory(services: Services) -> None:
    async with as_peer(services.memory.address, EXECUTOR) as channel:
        stub = memory_pb2_grpc.MemoryServiceStub(channel)
        listing = await refused(stub.ListApiKeys(memory_pb2.ListApiKeysRequest(), timeout=5))
        creation = await refused(
            stub.CreateApiKey(
                memory_pb2.CreateApiKeyRequest(key_id="k", prefix="p", key_hash="0" * 64, profile="default"), timeout=5
            )
        )
    assert denial(listing) == NOT_AUTHORIZED
    assert denial(creation) == NOT_AUTHORIZED
    async with as_peer(services.memory.address, GATE) as channel:
        keys = await memory_pb2_grpc.MemoryServiceStub(channel).ListApiKeys(memory_pb2.ListApiKeysRequest(), timeout=5)
    assert list(keys.api_keys) == []


@pytest.mark.parametrize(
    "kinds",
    [
        [memory_pb2.AUDIT_EVENT_KIND_DECISION],
        [memory_pb2.AUDIT_EVENT_KIND_OUTCOME],
        [memory_pb2.AUDIT_EVENT_KIND_BREAKER, memory_pb2.AUDIT_EVENT_KIND_DECISION],
    ],
    ids=["decision", "outcome", "breaker-with-decision"],
)
async def test_the_executor_cannot_append_decisions_or_outcomes(
    services: Services, kinds: list[memory_pb2.AuditEventKind]
) -> None:
    trace = trace_id()
    request = memory_pb2.AppendAuditEventsRequest(events=[audit_event(trace, kind) for kind in kinds])
    async with as_peer(services.memory.address, EXECUTOR) as channel:
        error = await refused(memory_pb2_grpc.MemoryServiceStub(channel).AppendAuditEvents(request, timeout=5))
    assert denial(error) == NOT_AUTHORIZED
    assert "may not append" in (error.details() or "")
    async with as_peer(services.memory.address, GATE) as channel:
        assert await trail(channel, trace) == []  # not even the breaker event of a mixed request


async def test_the_executor_can_append_a_breaker_event(services: Services) -> None:
    trace = trace_id()
    request = memory_pb2.AppendAuditEventsRequest(events=[audit_event(trace, memory_pb2.AUDIT_EVENT_KIND_BREAKER)])
    async with as_peer(services.memory.address, EXECUTOR) as channel:
        response = await memory_pb2_grpc.MemoryServiceStub(channel).AppendAuditEvents(request, timeout=5)
    assert response.appended == 1
    async with as_peer(services.memory.address, GATE) as channel:
        events = await trail(channel, trace)
    assert [(e.kind, e.result) for e in events] == [(memory_pb2.AUDIT_EVENT_KIND_BREAKER, "CIRCUIT_OPENED")]


@pytest.mark.parametrize("identity", [EXECUTOR, GATE])
async def test_sessions_and_preferences_are_open_to_gate_and_executor(services: Services, identity: Identity) -> None:
    async with as_peer(services.memory.address, identity) as channel:
        stub = memory_pb2_grpc.MemoryServiceStub(channel)
        created = await stub.CreateSession(memory_pb2.CreateSessionRequest(principal_id="key:someone"), timeout=5)
        await stub.SetPreferences(
            memory_pb2.SetPreferencesRequest(
                principal_id="key:someone", preferences=memory_pb2.Preferences(tone="concise")
            ),
            timeout=5,
        )
        preferences = await stub.GetPreferences(memory_pb2.GetPreferencesRequest(principal_id="key:someone"))
    assert created.session.principal_id == "key:someone"
    assert preferences.preferences.tone == "concise"


@pytest.mark.parametrize("identity", [EDGE, OPERATOR])
async def test_sessions_are_closed_to_everyone_else(services: Services, identity: Identity) -> None:
    async with as_peer(services.memory.address, identity) as channel:
        error = await refused(
            memory_pb2_grpc.MemoryServiceStub(channel).CreateSession(
                memory_pb2.CreateSessionRequest(principal_id="key:someone"), timeout=5
            )
        )
    assert denial(error) == NOT_AUTHORIZED


@pytest.mark.parametrize("identity", [EDGE, EXECUTOR, MEMORY, OPERATOR])
async def test_no_identity_but_the_gate_can_execute(services: Services, identity: Identity) -> None:
    async with as_peer(services.executor.address, identity) as channel:
        error = await refused(executor_pb2_grpc.ExecutorServiceStub(channel).Execute(execute_request(), timeout=5))
    assert denial(error) == NOT_AUTHORIZED
    labels = {"grpc_service": X.strip("/"), "grpc_method": "Execute", "grpc_code": "PERMISSION_DENIED"}
    assert services.executor.registry.get_sample_value("grpc_server_peer_denied_total", {**labels, "peer": identity})
    calls = services.executor.registry.get_sample_value("executor_calls_total", {"executor": "executor-mtls"})
    assert (calls or 0) == 0, "a refused call reached the servicer"


async def test_the_gate_can_execute(services: Services) -> None:
    async with as_peer(services.executor.address, GATE) as channel:
        response = await executor_pb2_grpc.ExecutorServiceStub(channel).Execute(execute_request(), timeout=10)
    assert response.executor_id == "executor-mtls"
    assert response.provider == "fake"


async def test_the_edge_cannot_set_faults_or_breakers(services: Services) -> None:
    async with as_peer(services.executor.address, EDGE) as channel:
        admin = executor_pb2_grpc.ExecutorAdminServiceStub(channel)
        faults = await refused(admin.SetFaults(set_faults_request(), timeout=5))
        breakers = await refused(admin.ListBreakers(executor_pb2.ListBreakersRequest(), timeout=5))
    assert denial(faults) == NOT_AUTHORIZED
    assert denial(breakers) == NOT_AUTHORIZED


@pytest.mark.parametrize("identity", [GATE, OPERATOR])
async def test_gate_and_operator_may_use_the_executor_admin(services: Services, identity: Identity) -> None:
    async with as_peer(services.executor.address, identity) as channel:
        breakers = await executor_pb2_grpc.ExecutorAdminServiceStub(channel).ListBreakers(
            executor_pb2.ListBreakersRequest(), timeout=5
        )
    assert [b.provider for b in breakers.breakers] == ["fake"]


@pytest.mark.parametrize("identity", [EXECUTOR, MEMORY, GATE])
async def test_only_the_edge_and_the_operator_reach_the_gate(services: Services, identity: Identity) -> None:
    async with as_peer(services.gate.address, identity) as channel:
        error = await refused(
            gate_pb2_grpc.GateServiceStub(channel).ListActions(gate_pb2.ListActionsRequest(), timeout=5)
        )
    assert denial(error) == NOT_AUTHORIZED


async def test_the_edge_passes_the_gate_table_and_meets_end_user_authentication(services: Services) -> None:
    async with as_peer(services.gate.address, EDGE) as channel:
        error = await refused(
            gate_pb2_grpc.GateServiceStub(channel).ListActions(gate_pb2.ListActionsRequest(), timeout=5)
        )
    code, reason = denial(error)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert not reason.startswith("PEER_"), reason  # the gate's own check of the API key, past the table
