"""The shared gRPC bootstrap on a real loopback server: error mapping, metrics, health, reflection, shutdown.

The server runs with mutual TLS as the executor identity, its table letting the gate call Execute; the tests call
as the gate (the transport's own refusals are in tests/integration/transport)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from techno.executor.v1 import executor_pb2, executor_pb2_grpc
from techno_core import errors
from techno_core.authorization import callers
from techno_core.grpc_errors import rpc_status_of
from techno_core.identity import Identity
from techno_core.server import Endpoint, GrpcApp, ServerOptions, ServiceDefinition
from techno_core.settings import TechnoSettings
from techno_core.tracing import build_tracer_provider
from techno_core.transport import Transport
from tests.tls import certificate_files, connect
from tests.waiting import eventually

SERVICE = "techno.executor.v1.ExecutorService"


class ScriptedExecutor(executor_pb2_grpc.ExecutorServiceServicer):
    """Answers according to the action name, to exercise each path of the bootstrap."""

    async def Execute(self, request: executor_pb2.ExecuteRequest, context: Any) -> executor_pb2.ExecuteResponse:
        if request.action == "invalid":
            raise errors.InvalidArgument(
                reason="PAYLOAD_INVALID",
                message="payload.text is required",
                violations=[errors.FieldViolation("payload.text", "required")],
            )
        if request.action == "crash":
            raise RuntimeError("secret internals")
        if request.action == "busy":
            raise errors.Unavailable(reason="CIRCUIT_OPEN", message="try later", retry_after_seconds=1.5)
        return executor_pb2.ExecuteResponse(executor_id="x", provider="fake")

    def __init__(self) -> None:
        self.stream_closed = asyncio.Event()
        self.release = asyncio.Event()

    async def StreamExecute(
        self, request: executor_pb2.StreamExecuteRequest, context: Any
    ) -> AsyncIterator[executor_pb2.StreamExecuteResponse]:
        """Two chunks, then: the result ("ok"), the result once the test releases it ("hold"), a domain error
        ("invalid"), or nothing until cancelled ("hang")."""
        try:
            for text in ("a", "b"):
                yield executor_pb2.StreamExecuteResponse(chunk=executor_pb2.TextChunk(text=text))
            if request.request.action == "invalid":
                raise errors.InvalidArgument(reason="PAYLOAD_INVALID", message="payload.text is required")
            if request.request.action == "hang":
                await asyncio.Event().wait()
            if request.request.action == "hold":
                await self.release.wait()
            yield executor_pb2.StreamExecuteResponse(done=executor_pb2.ExecuteResponse(executor_id="x"))
        finally:
            self.stream_closed.set()


@pytest.fixture(params=["spans recorded", "spans not recorded"])
async def app(request: pytest.FixtureRequest, tracer_provider: TracerProvider) -> AsyncIterator[GrpcApp]:
    """Both chains a service may run: OpenTelemetry's interceptor before the fused one (spans are exported), or
    the fused one alone with its own trace context (no exporter, as the services start by default)."""
    if request.param == "spans not recorded":
        tracer_provider = build_tracer_provider("scripted", "scripted-0", TechnoSettings())
    healthy = {"ok": True}

    async def probe() -> None:
        if not healthy["ok"]:
            raise ConnectionError("down")

    servicer = ScriptedExecutor()
    definition = ServiceDefinition(
        name="scripted",
        registrations=[lambda server: executor_pb2_grpc.add_ExecutorServiceServicer_to_server(servicer, server)],
        service_names=[SERVICE],
        callers=callers({"Execute": frozenset({Identity.GATE}), "StreamExecute": frozenset({Identity.GATE})}, SERVICE),
        probes=[("dependency", probe)],
    )
    # Reflection on, as `TECHNO_GRPC_REFLECTION` asks: one test lists the services with it.
    options = ServerOptions(Transport(certificate_files(Identity.EXECUTOR)), reflection=True)
    app = GrpcApp(definition, Endpoint("127.0.0.1", 0, 0), tracer_provider, CollectorRegistry(), options)
    app.probe_switch = healthy  # type: ignore[attr-defined]
    app.servicer = servicer  # type: ignore[attr-defined]
    await app.start()
    yield app
    await app.stop()


def as_gate(address: str) -> grpc.aio.Channel:
    return connect(address, identity=Identity.GATE, server=Identity.EXECUTOR)


async def _execute(app: GrpcApp, action: str) -> grpc.aio.AioRpcError:
    async with as_gate(app.address) as channel:
        stub = executor_pb2_grpc.ExecutorServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Execute(executor_pb2.ExecuteRequest(action=action), timeout=5)
    return raised.value


async def test_domain_error_becomes_status_with_error_info_and_field_violations(app: GrpcApp) -> None:
    error = await _execute(app, "invalid")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status_of(error)
    info, bad_request = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert status.details[0].Unpack(info)
    assert info.reason == "PAYLOAD_INVALID"
    assert status.details[1].Unpack(bad_request)
    assert bad_request.field_violations[0].field == "payload.text"


async def test_retry_after_travels_as_retry_info(app: GrpcApp) -> None:
    error = await _execute(app, "busy")
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    retry = error_details_pb2.RetryInfo()
    assert any(d.Unpack(retry) for d in rpc_status_of(error).details if d.Is(retry.DESCRIPTOR))
    assert retry.retry_delay.ToNanoseconds() == 1_500_000_000


async def test_unexpected_exception_is_internal_without_internals(app: GrpcApp) -> None:
    error = await _execute(app, "crash")
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in (error.details() or "")
    assert "trace id" in (error.details() or "")


async def test_metrics_count_each_status_code(app: GrpcApp) -> None:
    await _execute(app, "invalid")
    async with as_gate(app.address) as channel:
        await executor_pb2_grpc.ExecutorServiceStub(channel).Execute(executor_pb2.ExecuteRequest(action="ok"))
    labels = {"grpc_service": SERVICE, "grpc_method": "Execute"}
    assert app.registry.get_sample_value("grpc_server_handled_total", {**labels, "grpc_code": "OK"}) == 1
    assert app.registry.get_sample_value("grpc_server_handled_total", {**labels, "grpc_code": "INVALID_ARGUMENT"}) == 1
    assert app.registry.get_sample_value("grpc_server_handling_seconds_count", labels) == 2


async def test_health_follows_dependency_probes(app: GrpcApp) -> None:
    async with as_gate(app.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        check = health_pb2.HealthCheckRequest(service=SERVICE)
        assert (await stub.Check(check)).status == health_pb2.HealthCheckResponse.SERVING
        app.probe_switch["ok"] = False  # type: ignore[attr-defined]
        assert app._monitor is not None
        await app._monitor.check_once()
        assert (await stub.Check(check)).status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_reflection_lists_the_service(app: GrpcApp) -> None:
    async with as_gate(app.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = [s.name async for r in responses for s in r.list_services_response.service]
    assert SERVICE in names


async def test_stop_reports_not_serving_and_refuses_new_calls(app: GrpcApp) -> None:
    address, health_address = app.address, f"127.0.0.1:{app.health_port}"
    await app.stop()
    for channel in (as_gate(address), grpc.aio.insecure_channel(health_address)):
        async with channel:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_metrics_are_served_over_http(app: GrpcApp) -> None:
    import httpx

    await _execute(app, "invalid")
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{app.metrics_port}/metrics", timeout=5)).text
    assert 'grpc_server_handled_total{grpc_code="INVALID_ARGUMENT"' in text


@pytest.mark.parametrize("action", ["invalid", "busy"])
async def test_a_downstream_error_passes_on_with_every_detail(app: GrpcApp, action: str) -> None:
    from techno_core.grpc_errors import from_rpc_error, to_rpc_status

    received = await _execute(app, action)
    passed_on = from_rpc_error(received, default_reason="UNUSED")
    assert to_rpc_status(passed_on) == rpc_status_of(received)


async def test_quota_failure_travels_and_passes_on() -> None:
    from google.rpc import error_details_pb2

    from techno_core.grpc_errors import to_rpc_status

    error = errors.ResourceExhausted(
        reason="RATE_LIMITED",
        message="slow down",
        retry_after_seconds=2.0,
        quota_violations=[errors.QuotaViolation("key:k1/requests_per_minute", "100 per minute")],
    )
    status = to_rpc_status(error)
    quota = error_details_pb2.QuotaFailure()
    assert any(d.Unpack(quota) for d in status.details if d.Is(quota.DESCRIPTOR))
    assert quota.violations[0].subject == "key:k1/requests_per_minute"


async def test_health_watch_streams_the_status(app: GrpcApp) -> None:
    async with as_gate(app.address) as channel:
        stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=SERVICE))
        first = await stream.read()
        stream.cancel()
    assert first.status == health_pb2.HealthCheckResponse.SERVING


EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # (exported, but missing from the type stubs)
STREAM = {"grpc_service": SERVICE, "grpc_method": "StreamExecute"}


def _stream(channel: grpc.aio.Channel, action: str, timeout: float | None = None) -> Any:
    request = executor_pb2.StreamExecuteRequest(request=executor_pb2.ExecuteRequest(action=action))
    return executor_pb2_grpc.ExecutorServiceStub(channel).StreamExecute(request, timeout=timeout)


def _stream_handled(app: GrpcApp, code: str) -> float | None:
    return app.registry.get_sample_value("grpc_server_handled_total", {**STREAM, "grpc_code": code})


async def test_a_stream_is_counted_once_when_it_ends_with_its_messages(app: GrpcApp) -> None:
    async with as_gate(app.address) as channel:
        call = _stream(channel, "hold")
        first = await call.read()
        # Started and not yet ended: in flight, no code counted.
        assert first.chunk.text == "a"
        assert app.registry.get_sample_value("grpc_server_in_flight_requests") == 1
        assert _stream_handled(app, "OK") == 0
        app.servicer.release.set()  # type: ignore[attr-defined]
        rest = [await call.read() for _ in range(3)]
    assert [m.WhichOneof("event") if m is not EOF else "EOF" for m in rest] == ["chunk", "done", "EOF"]
    assert _stream_handled(app, "OK") == 1
    assert app.registry.get_sample_value("grpc_server_handling_seconds_count", STREAM) == 1
    assert app.registry.get_sample_value("grpc_server_msg_sent_total", STREAM) == 3
    assert app.registry.get_sample_value("grpc_server_in_flight_requests") == 0


async def test_a_stream_ended_by_a_domain_error_is_counted_with_its_code(app: GrpcApp) -> None:
    async with as_gate(app.address) as channel:
        call = _stream(channel, "invalid")
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            [message async for message in call]
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _stream_handled(app, "INVALID_ARGUMENT") == 1
    assert _stream_handled(app, "OK") == 0
    assert app.registry.get_sample_value("grpc_server_msg_sent_total", STREAM) == 2


async def test_a_stream_the_client_abandons_is_counted_cancelled(app: GrpcApp) -> None:
    async with as_gate(app.address) as channel:
        call = _stream(channel, "hang")
        await call.read()
        call.cancel()
        # The server learns of the client's cancellation asynchronously.
        await eventually(lambda: bool(_stream_handled(app, "CANCELLED")))
    assert app.servicer.stream_closed.is_set()  # type: ignore[attr-defined]
    assert (_stream_handled(app, "UNKNOWN"), _stream_handled(app, "OK")) == (0, 0)
    assert app.registry.get_sample_value("grpc_server_in_flight_requests") == 0


async def test_a_stream_past_its_deadline_is_counted_deadline_exceeded(app: GrpcApp) -> None:
    async with as_gate(app.address) as channel:
        call = _stream(channel, "hang", timeout=0.5)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            [message async for message in call]
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await eventually(lambda: bool(_stream_handled(app, "DEADLINE_EXCEEDED")))
    assert _stream_handled(app, "CANCELLED") == 0


async def test_a_refused_peer_is_counted_with_its_code_and_as_a_denial(app: GrpcApp) -> None:
    async with connect(app.address, identity=Identity.EDGE, server=Identity.EXECUTOR) as channel:
        stub = executor_pb2_grpc.ExecutorServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as unary:
            await stub.Execute(executor_pb2.ExecuteRequest(action="ok"), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as stream:
            [message async for message in _stream(channel, "ok", timeout=5)]
    assert unary.value.code() == stream.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # An abort sends the status before the server's wrapper has unwound (and counted): wait for that.
    await eventually(lambda: app.registry.get_sample_value("grpc_server_in_flight_requests") == 0)
    for labels in ({"grpc_service": SERVICE, "grpc_method": "Execute"}, STREAM):
        denied = {**labels, "grpc_code": "PERMISSION_DENIED"}
        assert app.registry.get_sample_value("grpc_server_handled_total", denied) == 1
        assert app.registry.get_sample_value("grpc_server_handling_seconds_count", labels) == 1
        assert app.registry.get_sample_value("grpc_server_peer_denied_total", {**denied, "peer": "edge"}) == 1
    assert not app.servicer.stream_closed.is_set()  # type: ignore[attr-defined]  # the servicer never started


async def test_an_undecodable_request_is_answered_and_counted_invalid_argument(app: GrpcApp) -> None:
    async with as_gate(app.address) as channel:
        execute = channel.unary_unary(f"/{SERVICE}/Execute", None, None)  # no serializers: the bytes as they are
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await execute(b"\xff\xff", timeout=5)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "could not be decoded" in (raised.value.details() or "")
    await eventually(lambda: app.registry.get_sample_value("grpc_server_in_flight_requests") == 0)
    labels = {"grpc_service": SERVICE, "grpc_method": "Execute", "grpc_code": "INVALID_ARGUMENT"}
    assert app.registry.get_sample_value("grpc_server_handled_total", labels) == 1
