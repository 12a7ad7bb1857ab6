"""The executor as a real gRPC server on loopback, with the fake provider: every action, errors with their
google.rpc details, the circuit breaker end to end, and the metrics operators rely on."""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2
from google.rpc import error_details_pb2
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from techno.executor.v1 import executor_pb2, executor_pb2_grpc
from techno_core.grpc_errors import error_info_of, rpc_status_of
from techno_core.identity import Identity
from techno_core.server import GrpcApp
from techno_executor.adapters.fake_provider import FakeProvider
from techno_executor.bootstrap import bootstrap
from techno_executor.domain.provider import Completion, ProviderServerError
from tests.integration.executor.conftest import AppFactory, settings
from tests.tls import connect

PAYLOADS: dict[str, dict[str, Any]] = {
    "chat": {"message": "Hello there. How are you?"},
    "summarize": {"text": "The cat sat on the mat. Then it slept all day."},
    "classify": {"text": "My invoice is overdue", "labels": ["billing", "support"]},
    "extract": {"text": "name: Ada Lovelace, born = 1815", "fields": ["name", "born"]},
    "analyze_document": {"document": "Revenue grew. Costs fell. Outlook is stable."},
}


async def execute(app: GrpcApp, action: str, payload: dict[str, Any], timeout: float = 5) -> Any:
    request = executor_pb2.ExecuteRequest(action=action, context_id="ctx", profile="default")
    json_format.ParseDict(payload, request.payload)
    async with connect(app.address, identity=Identity.GATE, server=Identity.EXECUTOR) as channel:
        return await executor_pb2_grpc.ExecutorServiceStub(channel).Execute(request, timeout=timeout)


async def failure(app: GrpcApp, action: str, payload: dict[str, Any], timeout: float = 5) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await execute(app, action, payload, timeout)
    return raised.value


def reason_of(error: grpc.aio.AioRpcError) -> str:
    info = error_info_of(rpc_status_of(error))
    assert info is not None
    return str(info.reason)


@pytest.mark.parametrize("action", sorted(PAYLOADS))
async def test_every_action_runs_on_the_fake_provider(start_app: AppFactory, action: str) -> None:
    app = await start_app()
    response = await execute(app, action, PAYLOADS[action])
    assert response.executor_id == "executor-test"
    assert (response.provider, response.model) == ("fake", "fake-echo-1")
    assert response.attempts == 1
    assert response.usage.input_tokens > 0
    assert response.usage.output_tokens > 0
    assert response.execution_time_ms >= 0
    assert json_format.MessageToDict(response.result)


async def test_results_carry_the_parsed_answer(start_app: AppFactory) -> None:
    app = await start_app()
    summary = await execute(app, "summarize", PAYLOADS["summarize"])
    assert summary.result == struct_pb2.Struct(
        fields={"summary": struct_pb2.Value(string_value="The cat sat on the mat.")}
    )
    extraction = json_format.MessageToDict((await execute(app, "extract", PAYLOADS["extract"])).result)
    assert extraction == {"fields": {"name": "Ada Lovelace", "born": "1815"}}


async def test_unknown_action_is_invalid_argument_with_error_info(start_app: AppFactory) -> None:
    app = await start_app()
    error = await failure(app, "translate", {"text": "hola"})
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(error) == "ACTION_UNKNOWN"


async def test_bad_payload_lists_field_violations(start_app: AppFactory) -> None:
    app = await start_app()
    error = await failure(app, "classify", {"text": "t", "labels": []})
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(error) == "PAYLOAD_INVALID"
    bad_request = error_details_pb2.BadRequest()
    details = rpc_status_of(error).details
    assert any(d.Unpack(bad_request) for d in details if d.Is(bad_request.DESCRIPTOR))
    assert [v.field for v in bad_request.field_violations] == ["payload.labels"]


async def test_slow_provider_is_deadline_exceeded_provider_timeout(start_app: AppFactory) -> None:
    app = await start_app(fake_latency_ms=60_000, executor_provider_timeout_seconds=0.05)
    error = await failure(app, "summarize", PAYLOADS["summarize"])
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert reason_of(error) == "PROVIDER_TIMEOUT"


async def test_failing_provider_opens_the_circuit_then_calls_are_refused_without_calling_it(
    start_app: AppFactory, span_exporter: InMemorySpanExporter
) -> None:
    app = await start_app(fake_error_rate=1.0, cb_threshold=3, cb_timeout=60)
    registry = app.registry
    provider_errors = {"provider": "fake", "error_type": "provider_error"}
    for _ in range(3):
        error = await failure(app, "summarize", PAYLOADS["summarize"])
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert reason_of(error) == "PROVIDER_UNAVAILABLE"
    # 3 + 2 + 1 attempts: the retry budget (10 tokens, retries while more than 5 are left) stops retrying
    # after 5 failed attempts, so a dead provider is not hammered while its breaker counts to 3.
    assert registry.get_sample_value("llm_errors_total", provider_errors) == 6
    assert registry.get_sample_value("llm_circuit_breaker_state", {"provider": "fake"}) == 2

    started = time.perf_counter()
    error = await failure(app, "summarize", PAYLOADS["summarize"])
    elapsed = time.perf_counter() - started
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert reason_of(error) == "CIRCUIT_OPEN"
    retry = error_details_pb2.RetryInfo()
    assert any(d.Unpack(retry) for d in rpc_status_of(error).details if d.Is(retry.DESCRIPTOR))
    assert 0 < retry.retry_delay.ToNanoseconds() <= 60 * 10**9
    assert elapsed < 1.0
    assert registry.get_sample_value("llm_errors_total", provider_errors) == 6  # the provider was not called
    assert registry.get_sample_value("llm_errors_total", {"provider": "fake", "error_type": "circuit_open"}) == 1
    assert registry.get_sample_value("action_results_total", {"status": "failed"}) == 4

    span = next(s for s in reversed(span_exporter.get_finished_spans()) if s.kind.name == "SERVER")
    assert span.attributes is not None
    assert span.attributes["techno.executor.breaker_state"] == "open"
    assert span.attributes["gen_ai.system"] == "fake"


async def test_circuit_half_opens_after_the_cooldown_and_a_probe_success_closes_it(
    tracer_provider: TracerProvider,
) -> None:
    now = [100.0]
    provider = Switchable()
    app = await bootstrap(
        settings(cb_threshold=1, cb_timeout=30),
        tracer_provider=tracer_provider,
        registry=CollectorRegistry(),
        providers=[provider],
        clock=lambda: now[0],
    )
    await app.start()
    try:
        provider.failing = True
        assert reason_of(await failure(app, "chat", PAYLOADS["chat"])) == "PROVIDER_UNAVAILABLE"
        assert reason_of(await failure(app, "chat", PAYLOADS["chat"])) == "CIRCUIT_OPEN"
        now[0] += 30  # the cooldown passes on the injected clock, without waiting
        provider.failing = False
        response = await execute(app, "chat", PAYLOADS["chat"])
        assert (response.provider, response.attempts) == ("switchable", 1)
        assert app.registry.get_sample_value("llm_circuit_breaker_state", {"provider": "switchable"}) == 0
    finally:
        await app.stop()


async def test_metrics_of_a_successful_execution(start_app: AppFactory) -> None:
    app = await start_app()
    response = await execute(app, "summarize", PAYLOADS["summarize"])
    registry = app.registry
    labels = {"provider": "fake", "model": "fake-echo-1"}
    assert registry.get_sample_value("executor_calls_total", {"executor": "executor-test"}) == 1
    assert registry.get_sample_value("action_results_total", {"status": "succeeded"}) == 1
    assert registry.get_sample_value("llm_request_latency_seconds_count", labels) == 1
    assert registry.get_sample_value("llm_request_latency_seconds_bucket", {**labels, "le": "0.1"}) == 1
    assert registry.get_sample_value("llm_tokens_total", {**labels, "type": "input"}) == response.usage.input_tokens
    assert registry.get_sample_value("llm_tokens_total", {**labels, "type": "output"}) == response.usage.output_tokens
    assert registry.get_sample_value("llm_circuit_breaker_state", {"provider": "fake"}) == 0


class Switchable:
    """A provider the test turns off and on; answers like the fake while on."""

    name = "switchable"
    model = "fake-echo-1"

    def __init__(self) -> None:
        self._fake = FakeProvider(name=self.name, model=self.model)
        self.failing = False

    async def complete(self, prompt: str, *, timeout: float) -> Completion:
        if self.failing:
            raise ProviderServerError("down", status=503)
        return await self._fake.complete(prompt, timeout=timeout)
