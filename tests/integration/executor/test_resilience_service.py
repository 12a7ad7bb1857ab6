"""The resilience policy over real gRPC on loopback: fallback across providers, fail-closed when every circuit
is open, the admin API (breakers and faults), and breaker transitions reaching a memory servicer with the trace
id of the request that caused them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from techno.executor.v1 import executor_pb2, executor_pb2_grpc
from techno.memory.v1 import memory_pb2, memory_pb2_grpc
from techno_core.grpc_errors import error_info_of, rpc_status_of
from techno_core.identity import Identity
from techno_core.server import GrpcApp
from techno_executor.adapters.fake_provider import FakeProvider
from techno_executor.bootstrap import bootstrap
from techno_executor.domain.faults import FaultProfile, FaultSwitch
from techno_executor.domain.provider import Completion, Provider, ProviderServerError
from techno_executor.settings import ExecutorSettings
from tests.tls import add_port, as_identity, connect

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
PAYLOAD = {"text": "The cat sat on the mat. Then it slept all day."}


class Counting:
    """A provider that answers like the fake, fails while ``failing``, and counts its calls."""

    model = "fake-echo-1"

    def __init__(self, name: str) -> None:
        self.name = name
        self._fake = FakeProvider(name=name, model=self.model)
        self.failing = False
        self.calls = 0

    async def complete(self, prompt: str, *, timeout: float) -> Completion:
        self.calls += 1
        if self.failing:
            raise ProviderServerError("down", status=503)
        return await self._fake.complete(prompt, timeout=timeout)


async def compose(
    providers: Sequence[Provider],
    tracer_provider: TracerProvider,
    *,
    memory_target: str | None = None,
    clock: Callable[[], float] | None = None,
    **overrides: Any,
) -> GrpcApp:
    """The executor as its composition root builds it, with these providers (in fallback order)."""
    values: dict[str, Any] = {
        **as_identity(Identity.EXECUTOR),
        "host": "127.0.0.1",
        "executor_port": 0,
        "executor_metrics_port": 0,
        "executor_id": "executor-test",
        "executor_provider_timeout_seconds": 5,
        "executor_retry_initial_backoff_seconds": 0.001,
        "executor_retry_max_backoff_seconds": 0.01,
        "executor_audit_breaker_transitions": memory_target is not None,
        "memory_target": memory_target or "127.0.0.1:1",
        "cb_threshold": 1,
        "cb_timeout": 60,
        **overrides,
    }
    return await bootstrap(
        ExecutorSettings(**values),
        tracer_provider=tracer_provider,
        registry=CollectorRegistry(),
        providers=providers,
        clock=clock,
    )


async def metric_reaches(app: GrpcApp, name: str, labels: dict[str, str], value: float) -> None:
    """Await a counter value (the audit writer works in the background)."""
    for _ in range(500):
        if app.registry.get_sample_value(name, labels) == value:
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"{name}{labels} never reached {value}: {app.registry.get_sample_value(name, labels)}")


@pytest.fixture
async def apps() -> AsyncIterator[list[GrpcApp]]:
    started: list[GrpcApp] = []
    yield started
    for app in started:
        await app.stop()


async def start(apps: list[GrpcApp], app: GrpcApp) -> GrpcApp:
    await app.start()
    apps.append(app)
    return app


async def execute(app: GrpcApp, providers: Sequence[str] = (), **kwargs: Any) -> executor_pb2.ExecuteResponse:
    request = executor_pb2.ExecuteRequest(action="summarize", providers=providers)
    json_format.ParseDict(PAYLOAD, request.payload)
    async with connect(app.address, identity=Identity.GATE, server=Identity.EXECUTOR) as channel:
        response: executor_pb2.ExecuteResponse = await executor_pb2_grpc.ExecutorServiceStub(channel).Execute(
            request, timeout=5, **kwargs
        )
        return response


async def admin(app: GrpcApp, method: str, request: Any) -> Any:
    async with connect(app.address, identity=Identity.GATE, server=Identity.EXECUTOR) as channel:
        return await getattr(executor_pb2_grpc.ExecutorAdminServiceStub(channel), method)(request, timeout=5)


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value


def reason_of(error: grpc.aio.AioRpcError) -> str:
    info = error_info_of(rpc_status_of(error))
    assert info is not None
    return str(info.reason)


async def test_fallback_answers_when_the_primary_is_open_and_says_who_answered(
    apps: list[GrpcApp], tracer_provider: TracerProvider
) -> None:
    primary, backup = Counting("primary"), Counting("backup")
    app = await compose([primary, backup], tracer_provider)
    await start(apps, app)
    primary.failing = True
    response = await execute(app)  # primary spends its attempts and opens; backup answers
    assert (response.provider, response.model, response.attempts) == ("backup", "fake-echo-1", 4)
    calls = primary.calls
    response = await execute(app, providers=["primary", "backup"])
    assert (response.provider, response.attempts, primary.calls) == ("backup", 1, calls)  # open: not called
    assert app.registry.get_sample_value("llm_errors_total", {"provider": "primary", "error_type": "circuit_open"})
    response = await execute(app, providers=["backup", "primary"])
    assert response.provider == "backup"


async def test_unknown_providers_only_is_failed_precondition(
    apps: list[GrpcApp], tracer_provider: TracerProvider
) -> None:
    app = await compose([Counting("a")], tracer_provider)
    await start(apps, app)
    error = await rpc_error(execute(app, providers=["openai"]))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(error) == "PROVIDER_NOT_ALLOWED"


async def test_all_open_fails_closed_fast_with_retry_info_without_calling_anyone(
    apps: list[GrpcApp], tracer_provider: TracerProvider
) -> None:
    a, b = Counting("a"), Counting("b")
    app = await compose([a, b], tracer_provider, cb_timeout=30)
    await start(apps, app)
    for name in ("a", "b"):
        request = executor_pb2.SetBreakerRequest(provider=name, command=executor_pb2.BREAKER_COMMAND_FORCE_OPEN)
        await admin(app, "SetBreaker", request)
    began = time.perf_counter()
    error = await rpc_error(execute(app))
    assert time.perf_counter() - began < 1.0
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert reason_of(error) == "CIRCUIT_OPEN"
    retry = error_details_pb2.RetryInfo()
    assert any(d.Unpack(retry) for d in rpc_status_of(error).details if d.Is(retry.DESCRIPTOR))
    assert 0 < retry.retry_delay.ToNanoseconds() <= 30 * 10**9
    assert (a.calls, b.calls) == (0, 0)


async def test_admin_lists_forces_and_resets_breakers(apps: list[GrpcApp], tracer_provider: TracerProvider) -> None:
    a = Counting("a")
    now = [0.0]
    app = await compose([a, Counting("b")], tracer_provider, clock=lambda: now[0], cb_timeout=30)
    await start(apps, app)
    listed = await admin(app, "ListBreakers", executor_pb2.ListBreakersRequest())
    assert [(b.provider, b.state) for b in listed.breakers] == [
        ("a", executor_pb2.BREAKER_STATE_CLOSED),
        ("b", executor_pb2.BREAKER_STATE_CLOSED),
    ]
    forced = await admin(
        app, "SetBreaker", executor_pb2.SetBreakerRequest(provider="a", command=executor_pb2.BREAKER_COMMAND_FORCE_OPEN)
    )
    assert forced.breaker.state == executor_pb2.BREAKER_STATE_FORCED_OPEN
    now[0] += 60  # past the cooldown: a forced state does not expire
    assert (await execute(app, providers=["a", "b"])).provider == "b"
    assert a.calls == 0
    reset = await admin(
        app, "SetBreaker", executor_pb2.SetBreakerRequest(provider="a", command=executor_pb2.BREAKER_COMMAND_RESET)
    )
    assert reset.breaker.state == executor_pb2.BREAKER_STATE_CLOSED
    assert (await execute(app, providers=["a", "b"])).provider == "a"

    a.failing = True
    closed = await admin(
        app,
        "SetBreaker",
        executor_pb2.SetBreakerRequest(provider="a", command=executor_pb2.BREAKER_COMMAND_FORCE_CLOSED),
    )
    assert closed.breaker.state == executor_pb2.BREAKER_STATE_FORCED_CLOSED
    await rpc_error(execute(app, providers=["a"]))
    listed = await admin(app, "ListBreakers", executor_pb2.ListBreakersRequest())
    assert listed.breakers[0].state == executor_pb2.BREAKER_STATE_FORCED_CLOSED  # failures do not open it

    unknown = await rpc_error(
        admin(app, "SetBreaker", executor_pb2.SetBreakerRequest(provider="zz", command=1))  # type: ignore[arg-type]
    )
    assert unknown.code() == grpc.StatusCode.NOT_FOUND
    no_command = await rpc_error(admin(app, "SetBreaker", executor_pb2.SetBreakerRequest(provider="a")))
    assert no_command.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_admin_sets_faults_of_fake_providers_only(apps: list[GrpcApp], tracer_provider: TracerProvider) -> None:
    switch = FaultSwitch()
    fake = FakeProvider(name="fake", faults=switch, seed=1)
    app = await compose([fake, Counting("real")], tracer_provider)
    await start(apps, app)
    faults = executor_pb2.FaultProfile(error_rate=1.0, latency_ms=5)
    answer = await admin(app, "SetFaults", executor_pb2.SetFaultsRequest(provider="fake", faults=faults))
    assert (answer.provider, answer.faults) == ("fake", faults)
    assert switch.current == FaultProfile(error_rate=1.0, latency_ms=5, retry_after_seconds=0)  # the whole profile
    assert (await execute(app)).provider == "real"  # the fake now fails: fallback

    not_fake = await rpc_error(admin(app, "SetFaults", executor_pb2.SetFaultsRequest(provider="real")))
    assert not_fake.code() == grpc.StatusCode.FAILED_PRECONDITION
    invalid = executor_pb2.FaultProfile(error_rate=1.5, latency_ms=-1)
    error = await rpc_error(admin(app, "SetFaults", executor_pb2.SetFaultsRequest(provider="fake", faults=invalid)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad_request = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad_request) for d in rpc_status_of(error).details if d.Is(bad_request.DESCRIPTOR))
    assert {v.field for v in bad_request.field_violations} >= {"faults.error_rate", "faults.latency_ms"}
    assert switch.current.error_rate == 1.0  # unchanged


class RecordingMemory(memory_pb2_grpc.MemoryServiceServicer):
    def __init__(self) -> None:
        self.events: list[memory_pb2.AuditEvent] = []
        self.arrived = asyncio.Event()

    async def AppendAuditEvents(
        self, request: memory_pb2.AppendAuditEventsRequest, context: Any
    ) -> memory_pb2.AppendAuditEventsResponse:
        self.events.extend(request.events)
        self.arrived.set()
        return memory_pb2.AppendAuditEventsResponse(appended=len(request.events))


@pytest.fixture
async def memory() -> AsyncIterator[tuple[RecordingMemory, str]]:
    servicer = RecordingMemory()
    server = grpc.aio.server()
    memory_pb2_grpc.add_MemoryServiceServicer_to_server(servicer, server)
    port = add_port(server, Identity.MEMORY)
    await server.start()
    yield servicer, f"127.0.0.1:{port}"
    await server.stop(None)


async def wait_for_events(memory: RecordingMemory, count: int) -> list[memory_pb2.AuditEvent]:
    async with asyncio.timeout(5):
        while len(memory.events) < count:
            memory.arrived.clear()
            await memory.arrived.wait()
    return memory.events


async def test_transitions_reach_the_audit_trail_with_the_causing_trace_id(
    apps: list[GrpcApp], tracer_provider: TracerProvider, memory: tuple[RecordingMemory, str]
) -> None:
    recorder, target = memory
    primary = Counting("primary")
    app = await compose([primary, Counting("backup")], tracer_provider, memory_target=target)
    await start(apps, app)
    primary.failing = True
    response = await execute(app, metadata=(("traceparent", TRACEPARENT),))
    assert response.provider == "backup"
    (opened,) = await wait_for_events(recorder, 1)
    assert (opened.trace_id, opened.service, opened.result) == (TRACE_ID, "executor", "CIRCUIT_OPENED")
    assert opened.kind == memory_pb2.AUDIT_EVENT_KIND_BREAKER
    assert opened.context_id == "primary"
    assert dict(opened.attributes) == {
        "provider": "primary",
        "from_state": "closed",
        "to_state": "open",
        "executor_id": "executor-test",
        "traced": True,
    }
    await admin(
        app,
        "SetBreaker",
        executor_pb2.SetBreakerRequest(provider="primary", command=executor_pb2.BREAKER_COMMAND_RESET),
    )
    events = await wait_for_events(recorder, 2)
    assert events[1].result == "CIRCUIT_CLOSED"
    assert len(events[1].trace_id) == 32
    await metric_reaches(app, "executor_audit_writes_total", {"result": "written"}, 2)


async def test_a_failed_audit_write_never_fails_the_call(apps: list[GrpcApp], tracer_provider: TracerProvider) -> None:
    primary = Counting("primary")
    # Nothing listens there: the write fails, the execution still answers.
    app = await compose([primary, Counting("backup")], tracer_provider, memory_target="127.0.0.1:1")
    await start(apps, app)
    primary.failing = True
    assert (await execute(app)).provider == "backup"
    await metric_reaches(app, "executor_audit_writes_total", {"result": "failed"}, 1)
