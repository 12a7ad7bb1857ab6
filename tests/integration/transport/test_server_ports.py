"""The shared server under mutual TLS: the plaintext health-only port (liveness, readiness, draining), the main
port refusing plaintext even for health, reflection off unless asked, and a method missing from the table."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from techno.executor.v1 import executor_pb2, executor_pb2_grpc
from techno_core.authorization import CallerTable, callers
from techno_core.health import LIVENESS, READINESS
from techno_core.identity import Identity
from techno_core.server import Endpoint, GrpcApp, ServerOptions, ServiceDefinition
from techno_core.transport import Transport
from tests.tls import certificate_files

from .calls import refused
from .conftest import NOT_AUTHORIZED, as_peer, denial, plaintext_channel

SERVICE = "techno.executor.v1.ExecutorService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HeldExecutor(executor_pb2_grpc.ExecutorServiceServicer):
    """Answers ``hold`` only when released, so a test can keep a call in flight while the server stops."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.calls = 0

    async def Execute(self, request: executor_pb2.ExecuteRequest, context: Any) -> executor_pb2.ExecuteResponse:
        self.calls += 1
        if request.action == "hold":
            self.started.set()
            await self.release.wait()
        return executor_pb2.ExecuteResponse(executor_id="held", provider="none")


@dataclass
class Server:
    app: GrpcApp
    servicer: HeldExecutor
    healthy: dict[str, bool] = field(default_factory=lambda: {"ok": True})


ServerFactory = Callable[..., Awaitable[Server]]


@pytest.fixture
async def start_server(tracer_provider: TracerProvider) -> AsyncIterator[ServerFactory]:
    apps: list[GrpcApp] = []

    async def start(*, reflection: bool = False, table: CallerTable | None = None) -> Server:
        servicer = HeldExecutor()
        healthy = {"ok": True}

        async def probe() -> None:
            if not healthy["ok"]:
                raise ConnectionError("dependency down")

        definition = ServiceDefinition(
            name="held",
            registrations=[lambda server: executor_pb2_grpc.add_ExecutorServiceServicer_to_server(servicer, server)],
            service_names=[SERVICE],
            callers=callers({"Execute": frozenset({Identity.GATE})}, SERVICE) if table is None else table,
            probes=[("dependency", probe)],
        )
        options = ServerOptions(Transport(certificate_files(Identity.EXECUTOR)), reflection=reflection)
        app = GrpcApp(
            definition,
            Endpoint("127.0.0.1", 0, 0),
            tracer_provider,
            CollectorRegistry(),
            options,
            health_interval_seconds=0.05,
            grace_seconds=30,
        )
        await app.start()
        apps.append(app)
        return Server(app, servicer, healthy)

    yield start
    for app in apps:
        await app.stop()


def health_port(app: GrpcApp) -> grpc.aio.Channel:
    return plaintext_channel(f"127.0.0.1:{app.health_port}")


async def status_of(channel: grpc.aio.Channel, service: str) -> int:
    response = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=5
    )
    status: int = response.status
    return status


async def until_status(watch: Any, wanted: int) -> None:
    """Read a health Watch stream (one message per change) until it reports ``wanted``."""
    async with asyncio.timeout(10):
        while (await watch.read()).status != wanted:
            pass


def watch(channel: grpc.aio.Channel, service: str) -> Any:
    return health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=service), timeout=30)


async def test_the_health_port_answers_plaintext_liveness_and_readiness(start_server: ServerFactory) -> None:
    server = await start_server()
    assert server.app.health_port not in (0, server.app.port)
    async with health_port(server.app) as channel:
        assert await status_of(channel, LIVENESS) == SERVING
        assert await status_of(channel, READINESS) == SERVING
        assert await status_of(channel, SERVICE) == SERVING


async def test_readiness_follows_a_failing_probe_while_liveness_stays_serving(start_server: ServerFactory) -> None:
    server = await start_server()
    async with health_port(server.app) as channel:
        readiness = watch(channel, READINESS)
        await until_status(readiness, SERVING)
        server.healthy["ok"] = False
        await until_status(readiness, NOT_SERVING)
        assert await status_of(channel, LIVENESS) == SERVING
        assert await status_of(channel, SERVICE) == NOT_SERVING
        server.healthy["ok"] = True
        await until_status(readiness, SERVING)
        readiness.cancel()


async def test_the_health_port_serves_nothing_but_health(start_server: ServerFactory) -> None:
    server = await start_server()
    async with health_port(server.app) as channel:
        error = await refused(
            executor_pb2_grpc.ExecutorServiceStub(channel).Execute(executor_pb2.ExecuteRequest(), timeout=5)
        )
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED
    assert server.servicer.calls == 0


async def test_liveness_goes_not_serving_as_soon_as_stop_begins(start_server: ServerFactory) -> None:
    server = await start_server()
    async with as_peer(server.app.address, Identity.GATE) as peer, health_port(server.app) as health:
        held = asyncio.ensure_future(
            executor_pb2_grpc.ExecutorServiceStub(peer).Execute(executor_pb2.ExecuteRequest(action="hold"), timeout=30)
        )
        await server.servicer.started.wait()
        assert await status_of(health, LIVENESS) == SERVING
        liveness = watch(health, LIVENESS)
        await until_status(liveness, SERVING)
        stopping = asyncio.ensure_future(server.app.stop())
        await until_status(liveness, NOT_SERVING)  # while the held call runs: balancers stop sending first
        assert not stopping.done()
        server.servicer.release.set()
        assert (await held).executor_id == "held"
        await stopping


async def test_the_main_port_refuses_plaintext_health(start_server: ServerFactory) -> None:
    server = await start_server()
    async with plaintext_channel(server.app.address) as channel:
        error = await refused(
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=LIVENESS), timeout=5)
        )
    assert error.code() == grpc.StatusCode.UNAVAILABLE


async def list_services(channel: grpc.aio.Channel) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
    return [service.name async for response in responses for service in response.list_services_response.service]


async def test_reflection_is_off_by_default(start_server: ServerFactory) -> None:
    server = await start_server()
    async with as_peer(server.app.address, Identity.GATE) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await list_services(channel)
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_reflection_when_asked_is_for_authenticated_peers(start_server: ServerFactory) -> None:
    server = await start_server(reflection=True)
    async with as_peer(server.app.address, Identity.EDGE) as channel:
        assert SERVICE in await list_services(channel)
    async with plaintext_channel(server.app.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await list_services(channel)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_method_missing_from_the_table_is_refused_to_everyone(start_server: ServerFactory) -> None:
    server = await start_server(table={})
    for identity in Identity:
        async with as_peer(server.app.address, identity) as channel:
            error = await refused(
                executor_pb2_grpc.ExecutorServiceStub(channel).Execute(executor_pb2.ExecuteRequest(), timeout=5)
            )
        assert denial(error) == NOT_AUTHORIZED, identity
    async with as_peer(server.app.address, Identity.GATE) as channel:  # health stays open to every identity
        assert await status_of(channel, LIVENESS) == SERVING
    assert server.servicer.calls == 0
