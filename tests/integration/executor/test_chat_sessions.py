"""Chat sessions and preferences through the real executor gRPC server, against a fake memory: a real grpc.aio
server on loopback port 0 implementing GetSession, AppendSessionMessages and GetPreferences in memory (the
real memory service is tested on its own). A recording provider passed to bootstrap captures the prompts."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from techno.executor.v1 import executor_pb2, executor_pb2_grpc
from techno.memory.v1 import memory_pb2, memory_pb2_grpc
from techno_core.grpc_errors import error_info_of, rpc_status_of
from techno_core.identity import Identity
from techno_core.server import GrpcApp
from techno_executor.adapters.fake_provider import FakeProvider
from techno_executor.bootstrap import bootstrap
from techno_executor.domain.provider import Completion
from techno_executor.settings import ExecutorSettings
from tests.tls import add_port, as_identity, connect

ALICE, MALLORY = "key-alice", "key-mallory"
MemoryContext = grpc.aio.ServicerContext[Any, Any]


class FakeMemory(memory_pb2_grpc.MemoryServiceServicer):
    """The three RPCs the executor uses, over dicts; records every request it serves."""

    def __init__(self) -> None:
        self.sessions: dict[str, tuple[str, list[memory_pb2.SessionMessage]]] = {}
        self.preferences: dict[str, memory_pb2.Preferences] = {}
        self.calls: list[str] = []
        self.fail_appends = False

    def open(self, session_id: str, principal_id: str) -> None:
        self.sessions[session_id] = (principal_id, [])

    async def _owned(self, session_id: str, principal_id: str, context: MemoryContext) -> list[Any]:
        owner, messages = self.sessions.get(session_id, ("", []))
        if owner != principal_id or session_id not in self.sessions:
            await context.abort(grpc.StatusCode.NOT_FOUND, "session not found")
        return messages

    async def GetSession(
        self, request: memory_pb2.GetSessionRequest, context: MemoryContext
    ) -> memory_pb2.GetSessionResponse:
        self.calls.append("GetSession")
        messages = await self._owned(request.session_id, request.principal_id, context)
        session = memory_pb2.Session(
            session_id=request.session_id, principal_id=request.principal_id, messages=messages
        )
        return memory_pb2.GetSessionResponse(session=session)

    async def AppendSessionMessages(
        self, request: memory_pb2.AppendSessionMessagesRequest, context: MemoryContext
    ) -> memory_pb2.AppendSessionMessagesResponse:
        self.calls.append("AppendSessionMessages")
        if self.fail_appends:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "database down")
        messages = await self._owned(request.session_id, request.principal_id, context)
        messages.extend(request.messages)
        session = memory_pb2.Session(
            session_id=request.session_id, principal_id=request.principal_id, messages=messages
        )
        return memory_pb2.AppendSessionMessagesResponse(session=session)

    async def GetPreferences(
        self, request: memory_pb2.GetPreferencesRequest, context: MemoryContext
    ) -> memory_pb2.GetPreferencesResponse:
        self.calls.append("GetPreferences")
        stored = self.preferences.get(request.principal_id, memory_pb2.Preferences())
        return memory_pb2.GetPreferencesResponse(preferences=stored)


@dataclass
class RecordingProvider:
    """The fake provider's answers, with every prompt it was given kept."""

    name: str = "recording"
    model: str = "recording-1"
    prompts: list[str] = field(default_factory=list)
    inner: FakeProvider = field(default_factory=FakeProvider)

    async def complete(self, prompt: str, *, timeout: float) -> Completion:
        self.prompts.append(prompt)
        return await self.inner.complete(prompt, timeout=timeout)


@dataclass
class Running:
    app: GrpcApp
    memory: FakeMemory
    provider: RecordingProvider


StartExecutor = Callable[..., Awaitable[Running]]


@pytest.fixture
async def memory_server() -> AsyncIterator[tuple[FakeMemory, str]]:
    memory = FakeMemory()
    server = grpc.aio.server()
    memory_pb2_grpc.add_MemoryServiceServicer_to_server(memory, server)
    port = add_port(server, Identity.MEMORY)
    await server.start()
    yield memory, f"127.0.0.1:{port}"
    await server.stop(None)


@pytest.fixture
async def start_executor(
    tracer_provider: TracerProvider, memory_server: tuple[FakeMemory, str]
) -> AsyncIterator[StartExecutor]:
    apps: list[GrpcApp] = []

    async def start(memory_target: str | None = None) -> Running:
        memory, address = memory_server
        provider = RecordingProvider()
        settings = ExecutorSettings(
            **as_identity(Identity.EXECUTOR),
            host="127.0.0.1",
            executor_port=0,
            executor_metrics_port=0,
            executor_id="executor-sessions",
            memory_target=memory_target or address,
        )
        app = await bootstrap(
            settings, tracer_provider=tracer_provider, registry=CollectorRegistry(), providers=[provider]
        )
        await app.start()
        apps.append(app)
        return Running(app, memory, provider)

    yield start
    for app in apps:
        await app.stop()


async def execute(
    app: GrpcApp, action: str, payload: dict[str, Any], *, session_id: str = "", principal_id: str = ALICE
) -> Any:
    request = executor_pb2.ExecuteRequest(
        action=action, context_id="ctx", profile="default", session_id=session_id, principal_id=principal_id
    )
    json_format.ParseDict(payload, request.payload)
    async with connect(app.address, identity=Identity.GATE, server=Identity.EXECUTOR) as channel:
        return await executor_pb2_grpc.ExecutorServiceStub(channel).Execute(request, timeout=5)


async def failure(app: GrpcApp, action: str, payload: dict[str, Any], **ids: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await execute(app, action, payload, **ids)
    return raised.value


def reason_of(error: grpc.aio.AioRpcError) -> str:
    info = error_info_of(rpc_status_of(error))
    assert info is not None
    return str(info.reason)


def failures(app: GrpcApp, what: str) -> float:
    return app.registry.get_sample_value("executor_context_failures_total", {"what": what}) or 0.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_two_turn_chat_sees_its_first_turn(start_executor: StartExecutor) -> None:
    running = await start_executor()
    running.memory.open("s-1", ALICE)

    first = await execute(running.app, "chat", {"message": "My name is Ada."}, session_id="s-1")
    reply = json_format.MessageToDict(first.result)["reply"]
    assert reply
    second = await execute(running.app, "chat", {"message": "What is my name?"}, session_id="s-1")
    assert json_format.MessageToDict(second.result)["reply"]

    assert "HISTORY" not in running.provider.prompts[0]
    history = next(line for line in running.provider.prompts[1].split("\n") if line.startswith("HISTORY: "))
    assert '{"role": "user", "content": "My name is Ada."}' in history
    assert f'{{"role": "assistant", "content": "{reply}"}}' in history
    _, stored = running.memory.sessions["s-1"]
    assert [(m.role, m.content) for m in stored] == [
        ("user", "My name is Ada."),
        ("assistant", reply),
        ("user", "What is my name?"),
        ("assistant", json_format.MessageToDict(second.result)["reply"]),
    ]
    assert all(m.created_at.seconds > 0 for m in stored)


async def test_a_chat_without_a_session_is_stateless(start_executor: StartExecutor) -> None:
    running = await start_executor()
    await execute(running.app, "chat", {"message": "hi"})
    assert running.memory.calls == ["GetPreferences"]
    assert "HISTORY" not in running.provider.prompts[0]


async def test_an_unknown_or_foreign_session_is_not_found_session_not_found(start_executor: StartExecutor) -> None:
    running = await start_executor()
    running.memory.open("s-alice", ALICE)
    unknown = await failure(running.app, "chat", {"message": "hi"}, session_id="s-nope")
    foreign = await failure(running.app, "chat", {"message": "let me in"}, session_id="s-alice", principal_id=MALLORY)
    for error in (unknown, foreign):
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert reason_of(error) == "SESSION_NOT_FOUND"
    assert running.provider.prompts == []
    assert failures(running.app, "history") == 0


async def test_preferences_shape_the_prompt(start_executor: StartExecutor) -> None:
    running = await start_executor()
    running.memory.preferences[ALICE] = memory_pb2.Preferences(tone="formal", format="bullet_points", language="pt-BR")
    await execute(running.app, "summarize", {"text": "The cat sat on the mat."})
    await execute(running.app, "summarize", {"text": "The cat sat on the mat."}, principal_id=MALLORY)
    mine, theirs = (prompt.split("\n") for prompt in running.provider.prompts)
    assert {"Answer in language: pt-BR", "Tone: formal", "Format: bullet_points"} <= set(mine)
    assert not any(line.startswith(("Answer in language", "Tone", "Format")) for line in theirs)


async def test_memory_down_a_session_chat_is_unavailable_but_summarize_works(start_executor: StartExecutor) -> None:
    running = await start_executor(memory_target=f"127.0.0.1:{free_port()}")
    error = await failure(running.app, "chat", {"message": "hi"}, session_id="s-1")
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert reason_of(error) == "MEMORY_UNAVAILABLE"

    summary = await execute(running.app, "summarize", {"text": "The cat sat on the mat. Then it slept."})
    assert json_format.MessageToDict(summary.result) == {"summary": "The cat sat on the mat."}
    stateless = await execute(running.app, "chat", {"message": "Still there?"})
    assert json_format.MessageToDict(stateless.result)["reply"]
    assert failures(running.app, "history") == 1
    assert failures(running.app, "preferences") >= 2


async def test_a_failed_remember_still_returns_the_reply(start_executor: StartExecutor) -> None:
    running = await start_executor()
    running.memory.open("s-1", ALICE)
    running.memory.fail_appends = True
    answer = await execute(running.app, "chat", {"message": "hi"}, session_id="s-1")
    assert json_format.MessageToDict(answer.result)["reply"]
    assert running.memory.sessions["s-1"] == (ALICE, [])
    assert failures(running.app, "remember") == 1


async def test_a_completed_chat_stream_is_remembered_in_the_session(start_executor: StartExecutor) -> None:
    running = await start_executor()
    running.memory.open("s-2", ALICE)
    inner = executor_pb2.ExecuteRequest(
        action="chat", context_id="ctx", profile="default", session_id="s-2", principal_id=ALICE
    )
    json_format.ParseDict({"message": "My name is Ada."}, inner.payload)
    async with connect(running.app.address, identity=Identity.GATE, server=Identity.EXECUTOR) as channel:
        call = executor_pb2_grpc.ExecutorServiceStub(channel).StreamExecute(
            executor_pb2.StreamExecuteRequest(request=inner), timeout=5
        )
        received = [message async for message in call]
    text = "".join(m.chunk.text for m in received if m.WhichOneof("event") == "chunk")
    reply = json_format.MessageToDict(received[-1].done.result)["reply"]
    assert reply == text.strip()
    _, stored = running.memory.sessions["s-2"]
    assert [(m.role, m.content) for m in stored] == [("user", "My name is Ada."), ("assistant", reply)]
