"""The executor's resilience policy end to end over real HTTP: a real executor (``bootstrap``, gRPC on loopback)
whose providers are built from ``ExecutorSettings`` and point at scripted vendors — real uvicorn servers
speaking the OpenAI, Anthropic and Gemini wire formats. Every assertion about retries, timeouts and breakers is
made on what the vendors actually received (how many requests, when they arrived, when the executor hung up),
not on mocks of the SDKs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from techno.executor.v1 import executor_pb2, executor_pb2_grpc
from techno_core.grpc_errors import error_info_of, rpc_status_of
from techno_core.identity import Identity
from techno_core.server import GrpcApp
from techno_executor.bootstrap import bootstrap
from techno_executor.provider_settings import API_KEY_VARIABLES
from techno_executor.settings import ExecutorSettings
from tests.integration.executor.scripted_vendor import ScriptedVendor, Step, serve
from tests.integration.executor.vendor_stubs import ANSWER, anthropic_success, gemini_success, openai_success
from tests.tls import as_identity, connect

KEY = "sk-test-resilience-0123456789"
TEXT = "The cat sat on the mat. Then it slept all day."
VENDORS = {"openai": openai_success, "anthropic": anthropic_success, "google": gemini_success}
PATHS = {
    "openai": "/v1/chat/completions",
    "anthropic": "/v1/messages",
    "google": "/v1beta/models/gemini-test:generateContent",
}
# Far from every wait these tests expect (at most 1 s) and far below the callers' 5 s deadlines: an answer
# within it came from the cause under test, never from a deadline further up. No assertion depends on how
# fast a loaded CI machine schedules; the waits the retry policy asks for are recorded, not timed.
WELL_BEFORE_THE_CALLERS_DEADLINE = 4.0


class RecordedSleeps:
    """The retry policy's sleep: records each wait it asks for and returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


class OffsetClock:
    """``time.monotonic`` plus an offset a test moves forward, for the breakers' cooldowns: deadlines and backoff
    keep working in real time while a 60 s cooldown passes at once."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


@dataclass
class Executor:
    app: GrpcApp
    channel: grpc.aio.Channel

    async def execute(self, *, timeout: float = 5.0) -> executor_pb2.ExecuteResponse:
        payload = struct_pb2.Struct()
        payload.update({"text": TEXT})
        request = executor_pb2.ExecuteRequest(action="summarize", payload=payload, context_id="ctx")
        stub = executor_pb2_grpc.ExecutorServiceStub(self.channel)
        response: executor_pb2.ExecuteResponse = await stub.Execute(request, timeout=timeout)
        return response

    async def failure(self, *, timeout: float = 5.0) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await self.execute(timeout=timeout)
        return raised.value

    async def breakers(self) -> dict[str, int]:
        stub = executor_pb2_grpc.ExecutorAdminServiceStub(self.channel)
        listed = await stub.ListBreakers(executor_pb2.ListBreakersRequest(), timeout=5)
        return {breaker.provider: breaker.state for breaker in listed.breakers}


@dataclass
class Harness:
    vendors: dict[str, ScriptedVendor]
    urls: dict[str, str]
    tracer_provider: TracerProvider
    executors: list[Executor] = field(default_factory=list)

    def settings(self, providers: tuple[str, ...], **overrides: Any) -> ExecutorSettings:
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "executor_port": 0,
            "executor_metrics_port": 0,
            **as_identity(Identity.EXECUTOR),
            "executor_id": "executor-http-test",
            "executor_audit_breaker_transitions": False,  # no memory service here
            "llm_allowed_providers": ",".join(providers),
            "llm_openai_base_url": f"{self.urls['openai']}/v1",
            "llm_openai_model": "gpt-test",
            "llm_anthropic_base_url": self.urls["anthropic"],
            "llm_anthropic_model": "claude-test",
            "llm_google_base_url": self.urls["google"],
            "llm_google_model": "gemini-test",
            # The keys go through the settings' aliases: the vendors' standard variable names.
            **{API_KEY_VARIABLES[name]: KEY for name in VENDORS},
            "executor_retry_initial_backoff_seconds": 0.001,
            "executor_retry_max_backoff_seconds": 0.01,
            **overrides,
        }
        return ExecutorSettings(**values)

    async def start(
        self, *providers: str, clock: OffsetClock | None = None, sleeps: RecordedSleeps | None = None, **overrides: Any
    ) -> Executor:
        app = await bootstrap(
            self.settings(providers, **overrides),
            tracer_provider=self.tracer_provider,
            registry=CollectorRegistry(),
            clock=clock,
            sleep=sleeps,
        )
        await app.start()
        executor = Executor(app, connect(app.address, identity=Identity.GATE, server=Identity.EXECUTOR))
        self.executors.append(executor)
        return executor

    async def close(self) -> None:
        for executor in self.executors:
            await executor.channel.close(None)
            await executor.app.stop()


@pytest.fixture
async def harness(tracer_provider: TracerProvider, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    for variable in API_KEY_VARIABLES.values():  # a key file in the environment would clash with the key given
        monkeypatch.delenv(f"{variable}_FILE", raising=False)
    vendors = {name: ScriptedVendor(name, success) for name, success in VENDORS.items()}
    async with serve(vendors.values()) as urls:
        harness = Harness(vendors, urls, tracer_provider)
        try:
            yield harness
        finally:
            await harness.close()


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    info = error_info_of(rpc_status_of(error))
    assert info is not None, f"no ErrorInfo in {error.code()}: {error.details()}"
    return info


def retry_delay_of(error: grpc.aio.AioRpcError) -> float:
    retry = error_details_pb2.RetryInfo()
    assert any(d.Unpack(retry) for d in rpc_status_of(error).details if d.Is(retry.DESCRIPTOR))
    return float(retry.retry_delay.ToNanoseconds()) / 1e9


def assert_summary(response: executor_pb2.ExecuteResponse, provider: str) -> None:
    assert response.provider == provider
    assert response.result == struct_pb2.Struct(fields={"summary": struct_pb2.Value(string_value=ANSWER)})


# --- 429, then success ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("vendor", sorted(VENDORS))
async def test_a_429_then_success_is_retried_on_the_same_vendor(harness: Harness, vendor: str) -> None:
    executor = await harness.start(vendor, executor_retry_max_attempts=3)
    scripted = harness.vendors[vendor]
    scripted.queue(Step(429, body={"error": {"type": "rate_limit_error"}}))

    response = await executor.execute()

    assert_summary(response, vendor)
    assert response.attempts == 2
    first, second = scripted.calls
    assert first.request.path == second.request.path == PATHS[vendor]
    assert first.request.body == second.request.body  # the same request, sent again
    assert (first.step.status, second.step.status) == (429, 200)


# --- Retry-After ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("vendor", sorted(VENDORS))
async def test_retry_after_is_honoured_before_the_retry(harness: Harness, vendor: str) -> None:
    # Backoff alone would retry within 10 ms; the vendor asked for 1 s, under the 2 s ceiling: wait it out.
    sleeps = RecordedSleeps()
    executor = await harness.start(
        vendor,
        sleeps=sleeps,
        executor_retry_max_attempts=3,
        executor_retry_initial_backoff_seconds=0.01,
        executor_retry_max_backoff_seconds=2.0,
    )
    scripted = harness.vendors[vendor]
    scripted.queue(Step(429, headers={"retry-after": "1"}))

    response = await executor.execute(timeout=5)

    assert_summary(response, vendor)
    assert response.attempts == 2
    assert [call.step.status for call in scripted.calls] == [429, 200]
    assert sleeps.waits == [1.0], "the one wait between the 429 and the retry is the vendor's Retry-After"


async def test_a_retry_after_beyond_the_backoff_ceiling_is_passed_on_not_waited_out(harness: Harness) -> None:
    sleeps = RecordedSleeps()
    executor = await harness.start(
        "openai", sleeps=sleeps, executor_retry_max_attempts=3, executor_retry_max_backoff_seconds=0.5
    )
    scripted = harness.vendors["openai"]
    scripted.queue(Step(429, headers={"retry-after": "3"}))

    error = await executor.failure(timeout=5)

    assert error.code() == grpc.StatusCode.UNAVAILABLE
    info = error_info(error)
    assert (info.reason, info.metadata["attempts"]) == ("PROVIDER_UNAVAILABLE", "1")
    assert retry_delay_of(error) == pytest.approx(3.0)  # the vendor's hint reaches the caller
    assert len(scripted.calls) == 1
    assert sleeps.waits == []  # nothing waited: the caller gets the hint instead


# --- timeouts and the caller's deadline ---------------------------------------------------------------------


async def test_a_provider_timeout_is_not_retried(harness: Harness) -> None:
    executor = await harness.start("openai", executor_provider_timeout_seconds=0.3, executor_retry_max_attempts=3)
    scripted = harness.vendors["openai"]
    # The first answer comes too late; a retry would succeed at once, so a success would betray one.
    scripted.queue(Step(delay=5.0))

    error = await executor.failure(timeout=5)

    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    info = error_info(error)
    assert (info.reason, info.metadata["attempts"]) == ("PROVIDER_TIMEOUT", "1")
    hung_up = await scripted.wait_for_hang_up(0)
    (call,) = scripted.calls  # the answer came after the only attempt ended: no retry can follow it
    # It hung up at its 0.3 s provider timeout (its clock started a little before the request arrived here), not
    # when the vendor's 5 s answer came nor at the caller's 5 s deadline.
    assert 0.25 <= hung_up - call.arrived < WELL_BEFORE_THE_CALLERS_DEADLINE, "it did not give up at its timeout"


async def test_the_callers_deadline_is_never_exceeded_nor_spent_on_a_fallback(harness: Harness) -> None:
    # The provider's own timeout (30 s) is far beyond the caller's 0.5 s deadline, which must win.
    executor = await harness.start(
        "openai", "anthropic", executor_provider_timeout_seconds=30, executor_retry_max_attempts=3, cb_threshold=1
    )
    primary, fallback = harness.vendors["openai"], harness.vendors["anthropic"]
    primary.queue(Step(hang=True))

    started = time.monotonic()
    error = await executor.failure(timeout=0.5)
    elapsed = time.monotonic() - started

    assert error.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
    # Ended by the caller's 0.5 s deadline, not by the provider's 30 s timeout (nor a 5 s default).
    assert elapsed < WELL_BEFORE_THE_CALLERS_DEADLINE
    hung_up = await primary.wait_for_hang_up(0)
    assert hung_up - primary.calls[0].arrived < WELL_BEFORE_THE_CALLERS_DEADLINE, "the vendor call outlived it"
    assert len(primary.calls) == 1
    assert fallback.calls == []  # no time left: the fallback is not called after the deadline
    # A timeout forced by a hurried caller is no verdict on the vendor: its breaker (threshold 1) stays closed.
    assert (await executor.breakers())["openai"] == executor_pb2.BREAKER_STATE_CLOSED
    assert_summary(await executor.execute(), "openai")
    assert len(primary.calls) == 2


async def test_a_retry_after_longer_than_the_deadline_fails_at_once(harness: Harness) -> None:
    sleeps = RecordedSleeps()
    executor = await harness.start(
        "openai", sleeps=sleeps, executor_retry_max_attempts=3, executor_retry_max_backoff_seconds=2.0
    )
    scripted = harness.vendors["openai"]
    scripted.queue(Step(429, headers={"retry-after": "1"}))

    error = await executor.failure(timeout=0.5)

    # The policy never sleeps into the deadline: it answers the real cause now rather than a bare timeout later.
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(error).reason == "PROVIDER_UNAVAILABLE"
    assert sleeps.waits == []  # it did not sleep into the deadline
    assert len(scripted.calls) == 1


# --- circuit breaker ----------------------------------------------------------------------------------------


async def test_three_500s_open_the_breaker_and_the_fourth_call_never_reaches_the_vendor(harness: Harness) -> None:
    executor = await harness.start("openai", cb_threshold=3, cb_timeout=60, executor_retry_max_attempts=1)
    scripted = harness.vendors["openai"]
    scripted.always = Step(500)

    for count in (1, 2, 3):
        error = await executor.failure()
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert error_info(error).reason == "PROVIDER_UNAVAILABLE"
        assert len(scripted.calls) == count
    assert (await executor.breakers())["openai"] == executor_pb2.BREAKER_STATE_OPEN

    error = await executor.failure()
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    info = error_info(error)
    assert (info.reason, info.metadata["provider"]) == ("CIRCUIT_OPEN", "openai")
    assert 0 < retry_delay_of(error) <= 60
    assert len(scripted.calls) == 3  # refused without calling the vendor


async def test_a_successful_half_open_probe_closes_the_breaker(harness: Harness) -> None:
    clock = OffsetClock()
    executor = await harness.start(
        "openai", clock=clock, cb_threshold=3, cb_timeout=60, cb_half_open_calls=1, executor_retry_max_attempts=1
    )
    scripted = harness.vendors["openai"]
    scripted.queue(Step(500), Step(500), Step(500))
    for _ in range(3):
        assert error_info(await executor.failure()).reason == "PROVIDER_UNAVAILABLE"
    assert error_info(await executor.failure()).reason == "CIRCUIT_OPEN"
    assert len(scripted.calls) == 3

    clock.offset += 60  # the cooldown passes on the executor's clock without waiting
    probe = await executor.execute()

    assert_summary(probe, "openai")
    assert probe.attempts == 1
    assert len(scripted.calls) == 4  # the probe reached the vendor
    assert (await executor.breakers())["openai"] == executor_pb2.BREAKER_STATE_CLOSED
    # Closed with a fresh count: one more 500 is one failure of three, and the next call goes through.
    scripted.queue(Step(500))
    assert error_info(await executor.failure()).reason == "PROVIDER_UNAVAILABLE"
    assert_summary(await executor.execute(), "openai")
    assert len(scripted.calls) == 6


async def test_the_fallback_answers_while_the_primary_is_open(harness: Harness) -> None:
    executor = await harness.start("openai", "anthropic", cb_threshold=3, cb_timeout=60, executor_retry_max_attempts=1)
    primary, fallback = harness.vendors["openai"], harness.vendors["anthropic"]
    primary.always = Step(500)

    attempts = []
    for _ in range(4):
        response = await executor.execute()
        assert_summary(response, "anthropic")
        assert response.model == "claude-test"
        attempts.append(response.attempts)

    # Three executions tried the primary, failed over, and opened its breaker; the fourth skipped it.
    assert attempts == [2, 2, 2, 1]
    assert len(primary.calls) == 3
    assert len(fallback.calls) == 4
    assert {call.request.path for call in fallback.calls} == {PATHS["anthropic"]}
    assert {call.request.headers["x-api-key"] for call in fallback.calls} == {KEY}
    breakers = await executor.breakers()
    assert breakers == {"openai": executor_pb2.BREAKER_STATE_OPEN, "anthropic": executor_pb2.BREAKER_STATE_CLOSED}


# --- retry budget -------------------------------------------------------------------------------------------


async def test_the_retry_budget_caps_attempts_under_a_full_outage(harness: Harness) -> None:
    # The breaker is kept out of the way (it would never open within 40 calls) to isolate the budget.
    executor = await harness.start(
        "openai",
        executor_retry_max_attempts=3,
        executor_retry_budget_tokens=10,
        executor_retry_budget_ratio=0.1,
        cb_threshold=100,
        cb_window=100,
        cb_min_calls=100,
    )
    scripted = harness.vendors["openai"]
    scripted.always = Step(503)

    attempts = []
    for _ in range(40):
        error = await executor.failure()
        info = error_info(error)
        assert info.reason == "PROVIDER_UNAVAILABLE"
        attempts.append(int(info.metadata["attempts"]))

    # 10 tokens, each failed attempt costs one, retries only while more than 5 are left after the failure:
    # the 1st execution fails at 9, 8, 7 (3 attempts, the last one by max_attempts), the 2nd at 6 (retry) then
    # 5 (throttled), and from then on every execution makes a single attempt. Unthrottled: 40 * 3 = 120.
    assert attempts == [3, 2] + [1] * 38
    assert len(scripted.calls) == sum(attempts) == 43
