"""StreamProcess and ListModels through the real executor (its fake provider streaming in small pieces), memory
(SQLite) and gate, each a real mTLS gRPC server on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2
from opentelemetry.sdk.trace import TracerProvider

from techno.gate.v1 import gate_pb2, gate_pb2_grpc
from techno.memory.v1 import memory_pb2, memory_pb2_grpc
from techno_core.identity import Identity
from techno_core.server import GrpcApp
from tests.integration.keys import store_key
from tests.integration.services import InProcess, migrated_sqlite
from tests.tls import connect
from tests.waiting import eventually

POLICY = Path(__file__).resolve().parents[3] / "config" / "policy.yaml"


@dataclass
class Stack:
    memory: GrpcApp
    executor: GrpcApp
    gate: GrpcApp
    key: str

    def gate_stub(self, channel: grpc.aio.Channel) -> gate_pb2_grpc.GateServiceStub:
        return gate_pb2_grpc.GateServiceStub(channel)

    def channel(self) -> grpc.aio.Channel:
        return connect(self.gate.address, identity=Identity.EDGE, server=Identity.GATE)

    async def trail(self, trace_id: str) -> list[memory_pb2.AuditEvent]:
        async with connect(self.memory.address, identity=Identity.OPERATOR, server=Identity.MEMORY) as channel:
            response = await memory_pb2_grpc.MemoryServiceStub(channel).GetAuditTrail(
                memory_pb2.GetAuditTrailRequest(trace_id=trace_id)
            )
        return list(response.events)

    def streams(self, result: str) -> float:
        """The executor's count of streams that ended so (completed|failed|cancelled)."""
        return sum(
            sample.value
            for metric in self.executor.registry.collect()
            if metric.name == "llm_streams"
            for sample in metric.samples
            if sample.name == "llm_streams_total" and sample.labels["result"] == result
        )


@pytest.fixture
async def stack(tmp_path: Path, tracer_provider: TracerProvider) -> AsyncIterator[Stack]:
    async with InProcess(tracer_provider) as start:
        memory = await start.memory(await migrated_sqlite(tmp_path / "memory.db"))
        # Small pieces, a little apart: an answer is many chunks, and still streaming when a client cancels.
        executor = await start.executor(
            memory, executor_id="executor-stream", fake_stream_chunk_chars=2, fake_stream_chunk_delay_ms=20
        )
        key = await store_key(memory.address)
        gate = await start.gate(memory, executor, policy_file=POLICY, gate_id="gate-stream-it")
        yield Stack(memory, executor, gate, key.secret)


def summarize() -> gate_pb2.StreamProcessRequest:
    payload = struct_pb2.Struct()
    payload.update({"text": "Governed actions, recorded before they run, streamed as they are written. " * 3})
    return gate_pb2.StreamProcessRequest(
        request=gate_pb2.ProcessRequest(action="summarize", context_id="it", payload=payload)
    )


async def test_a_stream_through_the_real_executor_is_governed_end_to_end(stack: Stack) -> None:
    async with stack.channel() as channel:
        call = stack.gate_stub(channel).StreamProcess(summarize(), metadata=[("x-api-key", stack.key)], timeout=20)
        messages = [message async for message in call]
    *chunks, last = messages
    assert len(chunks) > 1
    assert {m.WhichOneof("event") for m in chunks} == {"chunk"}
    done = last.done
    assert done.provider == "fake"
    assert done.usage.output_tokens > 0
    decision, outcome = await stack.trail(last.trace_id)
    assert (decision.result, outcome.result) == ("ALLOW", "SUCCEEDED")
    assert outcome.attributes["stream"] == "completed"
    assert outcome.attributes["chunks"] == len(chunks)
    assert outcome.attributes["output_tokens"] == done.usage.output_tokens
    assert stack.streams("completed") == 1


async def test_a_client_that_cancels_stops_the_real_executors_stream(stack: Stack) -> None:
    async with stack.channel() as channel:
        call = stack.gate_stub(channel).StreamProcess(summarize(), metadata=[("x-api-key", stack.key)], timeout=20)
        first = await call.read()
        assert isinstance(first, gate_pb2.StreamProcessResponse)
        assert first.WhichOneof("event") == "chunk"
        call.cancel()
    await eventually(lambda: stack.streams("cancelled") == 1)

    async def recorded() -> bool:
        return [e.result for e in await stack.trail(first.trace_id)] == ["ALLOW", "CANCELLED"]

    await eventually(recorded)
    assert stack.streams("completed") == 0


async def test_list_models_names_the_executors_model(stack: Stack) -> None:
    async with stack.channel() as channel:
        listed = await stack.gate_stub(channel).ListModels(
            gate_pb2.ListModelsRequest(action="chat"), metadata=[("x-api-key", stack.key)], timeout=10
        )
    [model] = listed.models
    assert model.provider == "fake"
    assert model.model
