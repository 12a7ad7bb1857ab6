"""Admin operations through the gate as ADMIN events of the audit trail: who asked, what, and the result; recorded
before they run (fail closed) and verified in the hash chain. Real memory (SQLite), executor and gate servers on
loopback with mutual TLS, in one process."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider

from techno.executor.v1 import executor_pb2, executor_pb2_grpc
from techno.gate.v1 import admin_pb2, admin_pb2_grpc, gate_pb2
from techno.memory.v1 import memory_pb2, memory_pb2_grpc
from techno_core.grpc_errors import error_info_of, rpc_status_of
from techno_core.identity import Identity
from techno_core.server import GrpcApp
from techno_memory.adapters.chain import verify_chain
from techno_memory.adapters.database import create_database_engine
from tests.integration.keys import store_key
from tests.integration.services import InProcess, migrated_sqlite
from tests.tls import connect
from tests.waiting import eventually

POLICY = Path(__file__).resolve().parents[3] / "config" / "policy.yaml"
WATCH_SECONDS = 0.05


@dataclass
class Admin:
    key_id: str
    secret: str

    @property
    def metadata(self) -> tuple[tuple[str, str]]:
        return (("x-api-key", self.secret),)


@dataclass
class Services:
    memory: GrpcApp
    executor: GrpcApp
    gate: GrpcApp
    database_url: str
    policy_file: Path
    admin: Admin
    operator: Admin  # a key with the process scope only

    def gate_channel(self) -> grpc.aio.Channel:
        return connect(self.gate.address, identity=Identity.EDGE, server=Identity.GATE)

    def memory_channel(self) -> grpc.aio.Channel:
        return connect(self.memory.address, identity=Identity.OPERATOR, server=Identity.MEMORY)

    async def events(self, *, trace_id: str = "", principal_id: str = "") -> list[memory_pb2.AuditEvent]:
        request = memory_pb2.ListAuditEventsRequest(trace_id=trace_id, principal_id=principal_id, page_size=1000)
        async with self.memory_channel() as channel:
            reply = await memory_pb2_grpc.MemoryServiceStub(channel).ListAuditEvents(request, timeout=10)
        return list(reply.events)

    async def admin_events(self, principal_id: str) -> list[memory_pb2.AuditEvent]:
        events = await self.events(principal_id=principal_id)
        return [e for e in events if e.kind == memory_pb2.AUDIT_EVENT_KIND_ADMIN]

    async def assert_chain_intact(self) -> None:
        engine = create_database_engine(self.database_url, pool_size=1, tracer_provider=None)
        try:
            report = await verify_chain(engine)
        finally:
            await engine.dispose()
        assert report.intact, report.summary()
        assert report.verified == len(await self.events())


async def create_key(memory: GrpcApp, *scopes: str) -> Admin:
    key = await store_key(memory.address, scopes=scopes)
    return Admin(key.key_id, key.secret)


@pytest.fixture
async def services(tmp_path: Path, tracer_provider: TracerProvider) -> AsyncIterator[Services]:
    url = await migrated_sqlite(tmp_path / "memory.db")
    async with InProcess(tracer_provider) as start:
        memory = await start.memory(url)
        executor = await start.executor(memory, executor_id="executor-it")
        admin = await create_key(memory, "admin", "audit:read", "process")
        process_only = await create_key(memory, "process")
        policy_file = tmp_path / "policy.yaml"
        policy_file.write_bytes(POLICY.read_bytes())
        gate = await start.gate(
            memory,
            executor,
            policy_file=policy_file,
            gate_id="gate-it",
            gate_policy_watch_seconds=WATCH_SECONDS,
            gate_audit_timeout_seconds=1.0,
        )
        yield Services(memory, executor, gate, url, policy_file, admin, process_only)


def reason_of(error: grpc.aio.AioRpcError) -> str:
    info = error_info_of(rpc_status_of(error))
    return info.reason if info is not None else ""


def results(events: list[memory_pb2.AuditEvent]) -> list[tuple[str, str, str]]:
    return [(e.action, e.context_id, e.result) for e in events]


async def test_key_operations_are_recorded_with_the_admin_principal(services: Services) -> None:
    admin = services.admin
    async with services.gate_channel() as channel:
        stub = admin_pb2_grpc.GateAdminServiceStub(channel)
        created = await stub.CreateApiKey(
            admin_pb2.CreateApiKeyRequest(name="ci", scopes=["process"]), metadata=admin.metadata, timeout=10
        )
        rotated = await stub.RotateApiKey(
            admin_pb2.RotateApiKeyRequest(key_id=created.api_key.key_id), metadata=admin.metadata, timeout=10
        )
        await stub.RevokeApiKey(
            admin_pb2.RevokeApiKeyRequest(key_id=rotated.api_key.key_id), metadata=admin.metadata, timeout=10
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.CreateApiKey(
                admin_pb2.CreateApiKeyRequest(name="ci", profile="no-such-profile"), metadata=admin.metadata, timeout=10
            )
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # Through the gate's own audit API, the new kind is named.
        listed = await stub.ListAuditEvents(
            admin_pb2.ListAuditEventsRequest(principal_id=admin.key_id), metadata=admin.metadata, timeout=10
        )
    old, new = created.api_key.key_id, rotated.api_key.key_id
    events = await services.admin_events(admin.key_id)
    failed_id = events[-1].context_id
    assert results(events) == [
        ("api_key.create", old, "REQUESTED"),
        ("api_key.create", old, "SUCCEEDED"),
        ("api_key.rotate", old, "REQUESTED"),
        ("api_key.rotate", old, "SUCCEEDED"),
        ("api_key.revoke", new, "REQUESTED"),
        ("api_key.revoke", new, "SUCCEEDED"),
        ("api_key.create", failed_id, "REQUESTED"),
        ("api_key.create", failed_id, "FAILED"),
    ]
    assert {e.service for e in events} == {"gate"}
    assert list(events[-1].reason_codes) == ["INVALID_ARGUMENT"]
    assert events[2].attributes["new_key_id"] == new
    assert events[0].attributes["scopes"] == ["process"]
    assert created.secret not in str(events)
    assert [e.kind for e in listed.events] == ["ADMIN"] * len(events)
    # One trace per operation: the request and its result share it.
    assert events[0].trace_id == events[1].trace_id != events[2].trace_id
    await services.assert_chain_intact()


@pytest.mark.parametrize("name", ["nul\x00in name", "line\nbreak", " ", "\x85"])
async def test_a_key_name_unfit_for_the_audit_trail_is_400_and_nothing_is_recorded(
    services: Services, name: str
) -> None:
    # Found by the OpenAPI fuzzer: a NUL in the name made the REQUESTED event unstorable, answered 503.
    admin = services.admin
    before = await services.admin_events(admin.key_id)
    async with services.gate_channel() as channel:
        stub = admin_pb2_grpc.GateAdminServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.CreateApiKey(
                admin_pb2.CreateApiKeyRequest(name=name, scopes=["process"]), metadata=admin.metadata, timeout=10
            )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await services.admin_events(admin.key_id) == before
    await services.assert_chain_intact()


async def test_forced_breaker_and_faults_are_recorded_and_reach_the_executor_with_the_principal(
    services: Services,
) -> None:
    admin = services.admin
    async with services.gate_channel() as channel:
        stub = admin_pb2_grpc.GateAdminServiceStub(channel)
        await stub.SetCircuitBreaker(
            admin_pb2.SetCircuitBreakerRequest(provider="fake", command=executor_pb2.BREAKER_COMMAND_FORCE_OPEN),
            metadata=admin.metadata,
            timeout=10,
        )
        await stub.SetProviderFaults(
            admin_pb2.SetProviderFaultsRequest(
                provider="fake", faults=executor_pb2.FaultProfile(error_rate=0.5, latency_ms=20)
            ),
            metadata=admin.metadata,
            timeout=10,
        )
    events = await services.admin_events(admin.key_id)
    assert results(events) == [
        ("breaker.set", "fake", "REQUESTED"),
        ("breaker.set", "fake", "SUCCEEDED"),
        ("faults.set", "fake", "REQUESTED"),
        ("faults.set", "fake", "SUCCEEDED"),
    ]
    assert events[0].attributes["command"] == "BREAKER_COMMAND_FORCE_OPEN"
    faults = events[2].attributes
    assert (faults["provider"], faults["error_rate"], faults["latency_ms"], faults["timeout_rate"]) == (
        "fake", 0.5, 20, 0
    )  # fmt: skip

    async def breaker_recorded() -> bool:
        trail = await services.events(trace_id=events[0].trace_id)
        return any(e.kind == memory_pb2.AUDIT_EVENT_KIND_BREAKER for e in trail)

    await eventually(breaker_recorded)  # the executor writes its transitions without waiting
    [transition] = [e for e in await services.events(trace_id=events[0].trace_id) if e.service == "executor"]
    assert transition.result == "CIRCUIT_FORCED_OPEN"
    assert transition.attributes["requested_by"] == admin.key_id
    await services.assert_chain_intact()


async def test_a_caller_without_the_admin_scope_is_refused_and_recorded(services: Services) -> None:
    caller = services.operator
    async with services.gate_channel() as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await admin_pb2_grpc.GateAdminServiceStub(channel).SetCircuitBreaker(
                admin_pb2.SetCircuitBreakerRequest(provider="fake", command=executor_pb2.BREAKER_COMMAND_FORCE_OPEN),
                metadata=caller.metadata,
                timeout=10,
            )
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    events = await services.admin_events(caller.key_id)
    assert results(events) == [("breaker.set", "fake", "REFUSED")]
    assert list(events[0].reason_codes) == [reason_of(raised.value)]
    assert await breaker_state(services) == executor_pb2.BREAKER_STATE_CLOSED


async def breaker_state(services: Services) -> int:
    async with connect(services.executor.address, identity=Identity.OPERATOR, server=Identity.EXECUTOR) as channel:
        reply = await executor_pb2_grpc.ExecutorAdminServiceStub(channel).ListBreakers(
            executor_pb2.ListBreakersRequest(), timeout=10
        )
    [fake] = [b for b in reply.breakers if b.provider == "fake"]
    state: int = fake.state
    return state


async def test_an_admin_operation_that_cannot_be_recorded_is_not_run(services: Services) -> None:
    await services.memory.stop()
    async with services.gate_channel() as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await admin_pb2_grpc.GateAdminServiceStub(channel).SetCircuitBreaker(
                admin_pb2.SetCircuitBreakerRequest(provider="fake", command=executor_pb2.BREAKER_COMMAND_FORCE_OPEN),
                metadata=services.admin.metadata,
                timeout=10,
            )
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert reason_of(raised.value) == "AUDIT_UNAVAILABLE"
    assert await breaker_state(services) == executor_pb2.BREAKER_STATE_CLOSED


async def policy_version(services: Services) -> str:
    request = gate_pb2.ProcessRequest(action="summarize", context_id="it")
    request.payload.update({"text": "which policy?"})
    async with services.gate_channel() as channel:
        reply = await admin_pb2_grpc.GateAdminServiceStub(channel).DryRun(
            admin_pb2.DryRunRequest(request=request), metadata=services.admin.metadata, timeout=10
        )
    version: str = reply.policy_version
    return version


async def reloads(services: Services) -> list[memory_pb2.AuditEvent]:
    return await services.admin_events("system:policy-file")


async def test_a_changed_policy_file_is_applied_without_a_signal_and_recorded(services: Services) -> None:
    before = await policy_version(services)
    services.policy_file.write_text(POLICY.read_text() + "\n# a comment changes the content hash\n")

    async def reloaded() -> bool:
        return len(await reloads(services)) == 1

    await eventually(reloaded)
    [event] = await reloads(services)
    after = await policy_version(services)
    assert after != before
    assert (event.action, event.result, event.service) == ("policy.reload", "SUCCEEDED", "gate")
    assert (event.attributes["previous_version"], event.attributes["version"]) == (before, after)

    services.policy_file.write_text("actions: {}\nprofiles: nonsense\n")

    async def refused() -> bool:
        return len(await reloads(services)) == 2

    await eventually(refused)
    refusal = (await reloads(services))[-1]
    assert (refusal.result, list(refusal.reason_codes)) == ("REFUSED", ["POLICY_INVALID"])
    assert refusal.attributes["version"] == after
    assert "invalid policy file" in str(refusal.attributes["error"])
    assert await policy_version(services) == after  # the last good policy stays
    await services.assert_chain_intact()


async def test_a_configmap_style_symlink_swap_is_applied(services: Services, tmp_path: Path) -> None:
    """A ConfigMap volume updates by pointing ``..data`` at a new directory: the file's path never changes."""
    volume = tmp_path / "configmap"
    for version, text in (("v1", POLICY.read_text()), ("v2", POLICY.read_text() + "\n# v2\n")):
        (volume / version).mkdir(parents=True)
        (volume / version / "policy.yaml").write_text(text)
    (volume / "..data").symlink_to("v1")
    (volume / "policy.yaml").symlink_to("..data/policy.yaml")
    services.policy_file.unlink()
    services.policy_file.symlink_to(volume / "policy.yaml")  # same content as before: nothing to apply yet
    before = await policy_version(services)

    (volume / "..data_tmp").symlink_to("v2")
    os.replace(volume / "..data_tmp", volume / "..data")  # the kubelet's atomic swap

    async def reloaded() -> bool:
        return len(await reloads(services)) == 1

    await eventually(reloaded)
    [event] = await reloads(services)
    assert event.result == "SUCCEEDED"
    assert event.attributes["previous_version"] == before
    assert await policy_version(services) == event.attributes["version"] != before
