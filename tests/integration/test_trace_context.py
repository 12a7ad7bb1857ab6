"""With no exporter, nothing is recorded but every call still belongs to a trace: real mTLS gRPC servers on
loopback, built like the services (no exporter configured), one calling the other through a core channel. The
caller's ``traceparent`` reaches every hop; without one, the first hop starts a trace the next one joins; a
streamed answer is traced too, and the health service is left alone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from techno.executor.v1 import executor_pb2, executor_pb2_grpc
from techno_core.identity import Identity
from techno_core.server import GrpcApp
from techno_core.settings import TechnoSettings
from techno_core.tracing import build_tracer_provider, current_trace_id, records
from techno_core.transport import Transport
from tests.executor_apps import executor_app
from tests.tls import certificate_files, connect

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


class Hop(executor_pb2_grpc.ExecutorServiceServicer):
    """Answers with the trace id current while it serves: in ``result["seen"]``, its own, then those of the hops
    it called (``next``)."""

    def __init__(self, name: str, next_hop: executor_pb2_grpc.ExecutorServiceStub | None = None) -> None:
        self.name = name
        self.next_hop = next_hop

    async def Execute(self, request: executor_pb2.ExecuteRequest, context: Any) -> executor_pb2.ExecuteResponse:
        response = executor_pb2.ExecuteResponse(provider=self.name)
        response.result["seen"] = current_trace_id()
        if self.next_hop is not None:
            onward = await self.next_hop.Execute(request)
            response.result["next"] = onward.result["seen"]
        return response

    async def StreamExecute(
        self, request: executor_pb2.StreamExecuteRequest, context: Any
    ) -> AsyncIterator[executor_pb2.StreamExecuteResponse]:
        for _ in range(2):
            yield executor_pb2.StreamExecuteResponse(chunk=executor_pb2.TextChunk(text=current_trace_id()))


async def started(servicer: Hop) -> GrpcApp:
    app = executor_app(servicer, servicer.name, ("Execute", "StreamExecute"))
    assert not records(app.tracer_provider)  # as a service starts with no exporter configured
    await app.start()
    return app


@pytest.fixture
async def first_hop() -> AsyncIterator[GrpcApp]:
    """``first`` calls ``second`` through a core channel (``TraceContextChannel``: the trace context in each call's
    metadata)."""
    second = await started(Hop("second"))
    tracer = build_tracer_provider("first", "first-0", TechnoSettings())
    channel = Transport(certificate_files(Identity.GATE)).channel(second.address, tracer, Identity.EXECUTOR)
    first = await started(Hop("first", executor_pb2_grpc.ExecutorServiceStub(channel)))
    yield first
    await first.stop()
    await channel.close(None)
    await second.stop()


def stub_of(channel: grpc.aio.Channel) -> executor_pb2_grpc.ExecutorServiceStub:
    return executor_pb2_grpc.ExecutorServiceStub(channel)


async def test_the_callers_trace_id_reaches_every_hop(first_hop: GrpcApp) -> None:
    traceparent = (("traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-00"),)
    async with connect(first_hop.address, identity=Identity.GATE, server=Identity.EXECUTOR) as channel:
        response = await stub_of(channel).Execute(executor_pb2.ExecuteRequest(action="a"), metadata=traceparent)
    assert (response.result["seen"], response.result["next"]) == (TRACE_ID, TRACE_ID)


async def test_without_a_traceparent_the_first_hop_starts_the_trace_the_next_joins(first_hop: GrpcApp) -> None:
    async with connect(first_hop.address, identity=Identity.GATE, server=Identity.EXECUTOR) as channel:
        first = await stub_of(channel).Execute(executor_pb2.ExecuteRequest(action="a"))
        again = await stub_of(channel).Execute(executor_pb2.ExecuteRequest(action="a"))
    assert len(first.result["seen"]) == 32
    assert first.result["next"] == first.result["seen"]
    assert again.result["seen"] != first.result["seen"]  # a new trace per call


async def test_a_streamed_answer_is_traced_and_health_still_answers(first_hop: GrpcApp) -> None:
    traceparent = (("traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-00"),)
    request = executor_pb2.StreamExecuteRequest(request=executor_pb2.ExecuteRequest(action="a"))
    async with connect(first_hop.address, identity=Identity.GATE, server=Identity.EXECUTOR) as channel:
        chunks = [m.chunk.text async for m in stub_of(channel).StreamExecute(request, metadata=traceparent)]
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service="liveness"))
        first_status = await watch.read()
        watch.cancel()
    assert chunks == [TRACE_ID, TRACE_ID]
    assert first_status.status == health_pb2.HealthCheckResponse.SERVING
