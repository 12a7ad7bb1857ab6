"""The shared runner serves on uvloop: a real gRPC app over mutual TLS, started by ``techno_core.runner.run``,
answers a call on that loop, with the caller's trace id reaching the servicer though nothing is recorded
(no exporter), and stops on SIGTERM with exit status 0. Once started, the garbage collector is tuned for serving:
start-up's objects frozen, young collections less frequent."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from typing import Any

import uvloop

from techno.executor.v1 import executor_pb2, executor_pb2_grpc
from techno_core.identity import Identity
from techno_core.runner import YOUNG_COLLECTION_THRESHOLD, run
from techno_core.server import GrpcApp
from techno_core.tracing import current_trace_id
from tests.executor_apps import executor_app
from tests.tls import connect

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


class Echo(executor_pb2_grpc.ExecutorServiceServicer):
    """Answers with the loop it runs on and the trace id current while it serves."""

    async def Execute(self, request: executor_pb2.ExecuteRequest, context: Any) -> executor_pb2.ExecuteResponse:
        loop = type(asyncio.get_running_loop()).__module__
        return executor_pb2.ExecuteResponse(executor_id=loop, provider=current_trace_id())


class CallsItselfThenStops:
    """Starts the app, makes one call to it as the gate, then signals its own process to stop."""

    def __init__(self, app: GrpcApp) -> None:
        self.app = app
        self.answer: executor_pb2.ExecuteResponse | None = None

    async def start(self) -> None:
        await self.app.start()
        async with connect(self.app.address, identity=Identity.GATE, server=Identity.EXECUTOR) as channel:
            traceparent = (("traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-00"),)
            stub = executor_pb2_grpc.ExecutorServiceStub(channel)
            self.answer = await stub.Execute(executor_pb2.ExecuteRequest(action="a"), metadata=traceparent)
        os.kill(os.getpid(), signal.SIGTERM)

    async def stop(self) -> None:
        await self.app.stop()


def test_a_service_serves_on_uvloop_and_keeps_the_callers_trace_id() -> None:
    built: list[CallsItselfThenStops] = []

    async def build() -> CallsItselfThenStops:
        built.append(CallsItselfThenStops(executor_app(Echo(), "echo")))
        return built[0]

    threshold = gc.get_threshold()
    try:
        assert run(build) == 0
        assert gc.get_threshold()[0] == YOUNG_COLLECTION_THRESHOLD
        assert gc.get_freeze_count() > 0
    finally:  # this test ran the service in pytest's own process
        gc.unfreeze()
        gc.set_threshold(*threshold)
    answer = built[0].answer
    assert answer is not None
    assert answer.executor_id == uvloop.Loop.__module__
    assert answer.provider == TRACE_ID
