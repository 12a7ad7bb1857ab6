"""A burst of concurrent calls larger than grpc-core's default pending-call queue is served, every call OK.

grpc.aio picks calls up from grpc-core one at a time on its event loop; calls that arrive while the loop is busy
wait in grpc-core, which by default cancels new ones at random once 1,000 are waiting (all of them past 3,000):
the caller sees CANCELLED, which neither side asked for (issue #12's P2 at c=2,000). The shared server raises
those bounds (``ServerOptions``): shedding load is the edge's decision, with a reason."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from techno.executor.v1 import executor_pb2, executor_pb2_grpc
from techno_core.identity import Identity
from techno_core.server import MAX_PENDING_CALLS, GrpcApp, ServerOptions
from techno_core.transport import Transport
from tests.executor_apps import executor_app
from tests.tls import certificate_files, connect

BURST = 2_500  # between grpc-core's default soft (1,000) and hard (3,000) limits: most calls wait
WAVES = 2
ANSWER_SECONDS = 0.3  # long enough for the whole burst to be in flight at once


class Slow(executor_pb2_grpc.ExecutorServiceServicer):
    async def Execute(self, request: executor_pb2.ExecuteRequest, context: Any) -> executor_pb2.ExecuteResponse:
        await asyncio.sleep(ANSWER_SECONDS)
        return executor_pb2.ExecuteResponse(executor_id="slow")


@pytest.fixture
async def slow_service() -> AsyncIterator[GrpcApp]:
    app = executor_app(Slow(), "slow")
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


def test_the_pending_call_bounds_are_far_above_the_burst() -> None:
    options = dict(ServerOptions(Transport(certificate_files(Identity.EXECUTOR))).grpc_options())
    assert options["grpc.server.max_pending_requests"] == MAX_PENDING_CALLS > BURST
    assert options["grpc.server.max_pending_requests_hard_limit"] > MAX_PENDING_CALLS


@pytest.mark.timeout(90)
async def test_a_burst_of_concurrent_calls_is_answered_without_cancellations(slow_service: GrpcApp) -> None:
    codes: collections.Counter[str] = collections.Counter()
    async with connect(slow_service.address, identity=Identity.GATE, server=Identity.EXECUTOR) as channel:
        stub = executor_pb2_grpc.ExecutorServiceStub(channel)

        async def call() -> None:
            try:
                await stub.Execute(executor_pb2.ExecuteRequest(action="summarize"), timeout=60)
                codes["OK"] += 1
            except grpc.aio.AioRpcError as error:
                codes[error.code().name] += 1

        for _ in range(WAVES):
            await asyncio.gather(*(call() for _ in range(BURST)))
    assert codes == {"OK": BURST * WAVES}
