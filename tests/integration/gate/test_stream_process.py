"""StreamProcess, ListModels and ProcessRequest.provider through the real gate and memory (SQLite), against a
scripted executor: a real gRPC server on loopback with the executor's certificate, so each test decides what the
executor streams (chunks, then its result, a failure or a hang) and can look at the audit trail when it is
called."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from google.protobuf import struct_pb2
from opentelemetry.sdk.trace import TracerProvider

from techno.executor.v1 import executor_pb2, executor_pb2_grpc
from techno.gate.v1 import gate_pb2, gate_pb2_grpc
from techno.memory.v1 import memory_pb2, memory_pb2_grpc
from techno_core import errors
from techno_core.grpc_errors import error_info_of, rpc_status_of, to_grpc_status
from techno_core.identity import Identity
from techno_core.server import GrpcApp
from tests.integration.keys import store_key
from tests.integration.services import InProcess, migrated_sqlite
from tests.tls import add_port, connect
from tests.waiting import eventually

POLICY = textwrap.dedent(
    """
    actions:
      chat:
        description: Converse.
        providers: ["*"]
        input:
          message: {type: string, required: true}
      summarize:
        description: Summarize.
        providers: [fake, openai]
        input:
          text: {type: string, required: true}
    profiles:
      default:
        actions: [chat, summarize]
        providers: ["*"]
        limits: {max_in_flight: 1}
      restricted:
        actions: [summarize]
        providers: [fake]
    """
)
PROVIDERS = [("openai", "gpt-test"), ("fake", "fake-1")]


@dataclass
class ScriptedExecutor(executor_pb2_grpc.ExecutorServiceServicer):
    """Streams ``chunks``, then ends as ``ending`` says: ``done`` (its result), ``fail`` (PROVIDER_UNAVAILABLE)
    or ``hang`` (until cancelled). Remembers each call and the audit trail of its trace when it was called."""

    memory_address: str
    chunks: list[str] = field(default_factory=lambda: ["Hel", "lo"])
    ending: str = "done"
    calls: list[executor_pb2.ExecuteRequest] = field(default_factory=list)
    trails_when_called: list[list[str]] = field(default_factory=list)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    async def StreamExecute(
        self, request: executor_pb2.StreamExecuteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[executor_pb2.StreamExecuteResponse]:
        self.calls.append(request.request)
        self.trails_when_called.append(await self._trail(context))
        ended = False
        try:
            for text in self.chunks:
                yield executor_pb2.StreamExecuteResponse(chunk=executor_pb2.TextChunk(text=text))
            if self.ending == "fail":
                ended = True
                failure = errors.Unavailable(reason="PROVIDER_UNAVAILABLE", message="the provider dropped the stream")
                await context.abort_with_status(to_grpc_status(failure))  # type: ignore[attr-defined]
            if self.ending == "hang":
                await asyncio.Event().wait()
            ended = True
            yield executor_pb2.StreamExecuteResponse(done=self._done(request.request))
        finally:
            if not ended:
                self.cancelled.set()

    async def Execute(
        self, request: executor_pb2.ExecuteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> executor_pb2.ExecuteResponse:
        self.calls.append(request)
        return self._done(request)

    async def ListProviders(
        self, request: executor_pb2.ListProvidersRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> executor_pb2.ListProvidersResponse:
        return executor_pb2.ListProvidersResponse(
            providers=[executor_pb2.ProviderInfo(name=n, model=m) for n, m in PROVIDERS]
        )

    def _done(self, request: executor_pb2.ExecuteRequest) -> executor_pb2.ExecuteResponse:
        result = struct_pb2.Struct()
        result.update({"reply": "".join(self.chunks)})
        provider = request.providers[0]
        return executor_pb2.ExecuteResponse(
            result=result,
            executor_id="scripted",
            provider=provider,
            model=dict(PROVIDERS)[provider],
            usage=executor_pb2.Usage(input_tokens=7, output_tokens=2),
            attempts=1,
        )

    async def _trail(self, context: grpc.aio.ServicerContext[Any, Any]) -> list[str]:
        """The results recorded under the caller's trace (from its W3C traceparent) at this moment."""
        traceparent = dict(context.invocation_metadata() or ())["traceparent"]
        assert isinstance(traceparent, str)
        async with connect(self.memory_address, identity=Identity.OPERATOR, server=Identity.MEMORY) as channel:
            trail = await memory_pb2_grpc.MemoryServiceStub(channel).GetAuditTrail(
                memory_pb2.GetAuditTrailRequest(trace_id=traceparent.split("-")[1])
            )
        return [event.result for event in trail.events]


@dataclass
class Stack:
    gate: GrpcApp
    memory: GrpcApp
    executor: ScriptedExecutor
    keys: dict[str, tuple[str, str]]  # name → (key id, secret)

    def stub(self, channel: grpc.aio.Channel) -> gate_pb2_grpc.GateServiceStub:
        return gate_pb2_grpc.GateServiceStub(channel)

    def channel(self) -> grpc.aio.Channel:
        return connect(self.gate.address, identity=Identity.EDGE, server=Identity.GATE)

    def key(self, name: str = "default") -> list[tuple[str, str]]:
        return [("x-api-key", self.keys[name][1])]

    async def trail(self, trace_id: str) -> list[memory_pb2.AuditEvent]:
        async with connect(self.memory.address, identity=Identity.OPERATOR, server=Identity.MEMORY) as channel:
            response = await memory_pb2_grpc.MemoryServiceStub(channel).GetAuditTrail(
                memory_pb2.GetAuditTrailRequest(trace_id=trace_id)
            )
        return list(response.events)

    async def events_of(self, name: str) -> list[memory_pb2.AuditEvent]:
        async with connect(self.memory.address, identity=Identity.OPERATOR, server=Identity.MEMORY) as channel:
            response = await memory_pb2_grpc.MemoryServiceStub(channel).ListAuditEvents(
                memory_pb2.ListAuditEventsRequest(principal_id=self.keys[name][0])
            )
        return list(response.events)


@dataclass
class _Address:
    """Where the scripted executor listens: all the gate's settings need of an executor."""

    address: str


@pytest.fixture
async def stack(tmp_path: Path, tracer_provider: TracerProvider) -> AsyncIterator[Stack]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    server = grpc.aio.server()
    async with InProcess(tracer_provider) as start:
        memory = await start.memory(await migrated_sqlite(tmp_path / "memory.db"))
        executor = ScriptedExecutor(memory.address)
        executor_pb2_grpc.add_ExecutorServiceServicer_to_server(executor, server)
        port = add_port(server, Identity.EXECUTOR)
        await server.start()
        keys = {}
        for name, profile, scopes in [
            ("default", "default", ["process"]),
            ("restricted", "restricted", ["process"]),
            ("reader", "default", ["audit:read"]),
        ]:
            key = await store_key(memory.address, name=name, profile=profile, scopes=scopes)
            keys[name] = (key.key_id, key.secret)
        gate = await start.gate(
            memory, cast(GrpcApp, _Address(f"127.0.0.1:{port}")), policy_file=policy, gate_id="gate-stream"
        )
        try:
            yield Stack(gate, memory, executor, keys)
        finally:
            await server.stop(None)


def chat(message: str = "hi", provider: str = "") -> gate_pb2.StreamProcessRequest:
    return gate_pb2.StreamProcessRequest(request=request("chat", message=message, provider=provider))


def request(action: str, *, provider: str = "", context_id: str = "app", **payload: str) -> gate_pb2.ProcessRequest:
    struct = struct_pb2.Struct()
    struct.update(payload)
    return gate_pb2.ProcessRequest(action=action, context_id=context_id, payload=struct, provider=provider)


def reason_of(error: grpc.aio.AioRpcError) -> str:
    info = error_info_of(rpc_status_of(error))
    assert info is not None, error.details()
    return str(info.reason)


async def test_stream_commits_the_decision_first_then_records_tokens_and_completion(stack: Stack) -> None:
    async with stack.channel() as channel:
        call = stack.stub(channel).StreamProcess(chat(), metadata=stack.key(), timeout=10)
        messages = [message async for message in call]
    assert [m.WhichOneof("event") for m in messages] == ["chunk", "chunk", "done"]
    assert [m.chunk.text for m in messages[:2]] == ["Hel", "lo"]
    done = messages[-1].done
    assert (done.provider, done.model, done.usage.total_tokens) == ("openai", "gpt-test", 9)
    trace_id = messages[0].trace_id
    assert {m.trace_id for m in messages} == {trace_id}
    assert done.trace_id == trace_id
    assert stack.executor.trails_when_called == [["ALLOW"]]  # committed before the executor was called
    assert list(stack.executor.calls[0].providers) == ["openai", "fake"]  # '*': the executor's, in its order
    decision, outcome = await stack.trail(trace_id)
    assert (decision.result, outcome.result) == ("ALLOW", "SUCCEEDED")
    attributes = dict(outcome.attributes)
    assert attributes["stream"] == "completed"
    assert (attributes["provider"], attributes["model"]) == ("openai", "gpt-test")
    assert (attributes["input_tokens"], attributes["output_tokens"], attributes["chunks"]) == (7, 2, 2)
    assert attributes["decision_event_id"] == decision.event_id


async def test_a_failure_mid_stream_ends_it_with_the_error_and_is_recorded_failed(stack: Stack) -> None:
    stack.executor.ending = "fail"
    received: list[gate_pb2.StreamProcessResponse] = []
    async with stack.channel() as channel:
        call = stack.stub(channel).StreamProcess(chat(), metadata=stack.key(), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as raised:  # noqa: PT012 (and the messages before the error)
            async for message in call:
                received.append(message)  # noqa: PERF401
    assert [m.chunk.text for m in received] == ["Hel", "lo"]
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert reason_of(raised.value) == "PROVIDER_UNAVAILABLE"
    assert len(stack.executor.calls) == 1  # not retried once the answer has begun
    decision, outcome = await stack.trail(received[0].trace_id)
    assert (decision.result, outcome.result, list(outcome.reason_codes)) == (
        "ALLOW",
        "FAILED",
        ["PROVIDER_UNAVAILABLE"],
    )
    assert (outcome.attributes["stream"], outcome.attributes["chunks"]) == ("failed", 2)
    await _still_admits(stack)


async def test_a_client_that_cancels_cancels_the_executor_and_is_recorded_cancelled(stack: Stack) -> None:
    stack.executor.ending = "hang"
    async with stack.channel() as channel:
        call = stack.stub(channel).StreamProcess(chat(), metadata=stack.key(), timeout=30)
        first = await call.read()
        assert isinstance(first, gate_pb2.StreamProcessResponse)
        # The stream holds the key's only in-flight slot while it runs.
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stack.stub(channel).Process(request("summarize", text="t"), metadata=stack.key(), timeout=10)
        assert reason_of(raised.value) == "CONCURRENCY_LIMITED"
        call.cancel()
    await eventually(stack.executor.cancelled.is_set)

    async def closed() -> bool:
        return [e.result for e in await stack.trail(first.trace_id)] == ["ALLOW", "CANCELLED"]

    await eventually(closed)
    outcome = (await stack.trail(first.trace_id))[1]
    assert outcome.attributes["stream"] == "cancelled"
    assert outcome.attributes["chunks"] in (1, 2)  # what reached the client's side before it left
    await _still_admits(stack)


async def _still_admits(stack: Stack) -> None:
    """The key's only in-flight slot was given back when its stream ended (else CONCURRENCY_LIMITED)."""
    stack.executor.ending = "done"

    async def admitted() -> bool:
        async with stack.channel() as channel:
            try:
                await stack.stub(channel).Process(request("summarize", text="t"), metadata=stack.key(), timeout=10)
            except grpc.aio.AioRpcError as error:
                if reason_of(error) != "CONCURRENCY_LIMITED":
                    raise
                return False
        return True

    await eventually(admitted)


@pytest.mark.parametrize(
    ("key", "stream", "code", "reason"),
    [
        ("reader", chat(), grpc.StatusCode.PERMISSION_DENIED, "SCOPE_MISSING"),
        ("restricted", chat(), grpc.StatusCode.PERMISSION_DENIED, "ACTION_NOT_ALLOWED"),
        (
            "restricted",
            gate_pb2.StreamProcessRequest(request=request("summarize", provider="openai", text="t")),
            grpc.StatusCode.PERMISSION_DENIED,
            "PROVIDER_NOT_ALLOWED",
        ),
        ("default", chat(provider="anthropic"), grpc.StatusCode.PERMISSION_DENIED, "PROVIDER_NOT_ALLOWED"),
        ("default", gate_pb2.StreamProcessRequest(), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
    ],
)
async def test_denied_streams_are_recorded_and_never_reach_the_executor(
    stack: Stack, key: str, stream: gate_pb2.StreamProcessRequest, code: grpc.StatusCode, reason: str
) -> None:
    async with stack.channel() as channel:
        call = stack.stub(channel).StreamProcess(stream, metadata=stack.key(key), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call.read()
    assert (raised.value.code(), reason_of(raised.value)) == (code, reason)
    assert stack.executor.calls == []
    [denial] = await stack.events_of(key)
    assert (denial.kind, denial.result, list(denial.reason_codes)) == (
        memory_pb2.AUDIT_EVENT_KIND_DECISION,
        "DENY",
        [reason],
    )


async def test_process_runs_on_the_requested_provider_only(stack: Stack) -> None:
    async with stack.channel() as channel:
        response = await stack.stub(channel).Process(
            request("summarize", provider="fake", text="t"), metadata=stack.key("restricted"), timeout=10
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stack.stub(channel).Process(
                request("summarize", provider="openai", text="t"), metadata=stack.key("restricted"), timeout=10
            )
    assert response.provider == "fake"
    assert [list(call.providers) for call in stack.executor.calls] == [["fake"]]
    assert reason_of(raised.value) == "PROVIDER_NOT_ALLOWED"
    allowed, _, denied = await stack.events_of("restricted")
    assert allowed.attributes["requested_provider"] == "fake"
    assert (denied.result, denied.attributes["rule"]) == ("DENY", "profiles.restricted.providers")


async def test_list_models_follows_the_policy_and_the_executors_providers(stack: Stack) -> None:
    async with stack.channel() as channel:
        stub = stack.stub(channel)
        every = await stub.ListModels(gate_pb2.ListModelsRequest(action="chat"), metadata=stack.key(), timeout=10)
        listed = await stub.ListModels(
            gate_pb2.ListModelsRequest(action="summarize"), metadata=stack.key("restricted"), timeout=10
        )
        refusals = []
        for action, key in [("chat", "restricted"), ("nope", "default")]:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.ListModels(gate_pb2.ListModelsRequest(action=action), metadata=stack.key(key), timeout=10)
            refusals.append((raised.value.code(), reason_of(raised.value)))
        with pytest.raises(grpc.aio.AioRpcError) as unauthenticated:
            await stub.ListModels(gate_pb2.ListModelsRequest(action="chat"), timeout=10)
    assert [(m.provider, m.model) for m in every.models] == PROVIDERS
    assert [(m.provider, m.model) for m in listed.models] == [("fake", "fake-1")]
    assert len(every.trace_id) == 32
    assert refusals == [
        (grpc.StatusCode.PERMISSION_DENIED, "ACTION_NOT_ALLOWED"),
        (grpc.StatusCode.INVALID_ARGUMENT, "ACTION_UNKNOWN"),
    ]
    assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert stack.executor.calls == []


async def test_a_repeated_idempotent_stream_gets_the_stored_result_once_and_never_runs_twice(stack: Stack) -> None:
    metadata = [*stack.key(), ("idempotency-key", "stream-1")]
    async with stack.channel() as channel:
        first = [m async for m in stack.stub(channel).StreamProcess(chat(), metadata=metadata, timeout=10)]
        repeat = [m async for m in stack.stub(channel).StreamProcess(chat(), metadata=metadata, timeout=10)]
        with pytest.raises(grpc.aio.AioRpcError) as reused:
            await stack.stub(channel).StreamProcess(chat("other"), metadata=metadata, timeout=10).read()
    assert [m.WhichOneof("event") for m in repeat] == ["done"]
    assert repeat[0].done == first[-1].done
    assert repeat[0].trace_id == first[0].trace_id
    assert len(stack.executor.calls) == 1
    assert reason_of(reused.value) == "IDEMPOTENCY_KEY_REUSED"


async def test_an_idempotent_stream_that_failed_runs_again_when_retried(stack: Stack) -> None:
    stack.executor.ending = "fail"
    metadata = [*stack.key(), ("idempotency-key", "stream-2")]
    async with stack.channel() as channel:
        with pytest.raises(grpc.aio.AioRpcError):
            _ = [m async for m in stack.stub(channel).StreamProcess(chat(), metadata=metadata, timeout=10)]
        stack.executor.ending = "done"
        retried = [m async for m in stack.stub(channel).StreamProcess(chat(), metadata=metadata, timeout=10)]
    assert [m.WhichOneof("event") for m in retried] == ["chunk", "chunk", "done"]
    assert len(stack.executor.calls) == 2
