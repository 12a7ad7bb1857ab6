"""The ExecuteAction use case with a scripted provider and a manual clock: validation, breaker, retry,
deadline, and the errors each path answers with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from techno_core.errors import DeadlineExceeded, InvalidArgument, Unavailable
from techno_executor.adapters.action_file import shipped_catalogue
from techno_executor.application.execute import ExecuteAction, ExecuteCommand, ProviderRoute
from techno_executor.domain.breaker import CircuitBreaker, CircuitState
from techno_executor.domain.provider import ProviderError, ProviderRateLimited, ProviderServerError, ProviderTimeout
from techno_executor.domain.retry import AttemptReport, RetryPolicy

from .fakes import FakeClock, ScriptedProvider

SUMMARIZE = ExecuteCommand(action="summarize", payload={"text": "A long text."})


@dataclass
class RecordingObserver:
    events: list[tuple[str, Any]] = field(default_factory=list)
    finished: list[dict[str, Any]] = field(default_factory=list)
    reports: list[tuple[str, AttemptReport]] = field(default_factory=list)

    def call_received(self) -> None:
        self.events.append(("call", None))

    def attempt_finished(self, provider: str, model: str, seconds: float, error_type: str | None) -> None:
        self.events.append(("attempt", error_type))

    def attempt_reported(self, provider: str, model: str, report: AttemptReport) -> None:
        self.reports.append((provider, report))

    def circuit_rejected(self, provider: str) -> None:
        self.events.append(("rejected", provider))

    def execution_finished(self, **outcome: Any) -> None:
        self.finished.append(outcome)

    def breaker_state_changed(self, provider: str, old: CircuitState, new: CircuitState) -> None:
        self.events.append(("breaker", new))

    def first_chunk(self, provider: str, model: str, seconds: float) -> None:
        self.events.append(("first_chunk", seconds))

    def stream_finished(self, provider: str, model: str, seconds: float, result: str) -> None:
        self.events.append(("stream", result))


@dataclass
class Harness:
    use_case: ExecuteAction
    provider: ScriptedProvider
    breaker: CircuitBreaker
    clock: FakeClock
    observer: RecordingObserver


def state(h: Harness) -> CircuitState:
    """The breaker's state, read through a call so that mypy does not narrow it across transitions."""
    return h.breaker.state


def harness(*steps: str | ProviderError, provider_timeout: float = 30.0, cost: float = 0.0) -> Harness:
    clock, observer = FakeClock(), RecordingObserver()
    provider = ScriptedProvider(steps, clock=clock, cost=cost)
    breaker = CircuitBreaker(
        provider.name,
        failure_threshold=3,
        open_seconds=60,
        clock=clock,
        on_state_change=observer.breaker_state_changed,
    )
    retry = RetryPolicy(max_attempts=3, sleep=clock.sleep, random=lambda: 1.0, clock=clock)
    use_case = ExecuteAction(
        catalogue=shipped_catalogue(),
        route=ProviderRoute(provider, breaker),
        retry=retry,
        observer=observer,
        provider_timeout_seconds=provider_timeout,
        clock=clock,
    )
    return Harness(use_case, provider, breaker, clock, observer)


async def test_success_returns_result_usage_and_attempts() -> None:
    h = harness(ProviderServerError(), "A summary.", cost=0.25)
    execution = await h.use_case.execute(SUMMARIZE, timeout=None)
    assert execution.result == {"summary": "A summary."}
    assert (execution.provider, execution.model) == ("scripted", "scripted-1")
    assert (execution.input_tokens, execution.output_tokens, execution.attempts) == (7, 3, 2)
    assert execution.execution_time_ms == 700  # two calls of 250 ms and a 200 ms backoff, on the manual clock
    assert h.observer.events == [("call", None), ("attempt", "provider_error"), ("attempt", None)]
    assert h.observer.finished[0]["succeeded"] is True
    assert h.observer.finished[0]["breaker_state"] is CircuitState.CLOSED


async def test_invalid_payload_never_reaches_the_provider_nor_the_breaker() -> None:
    h = harness("unused")
    for _ in range(5):
        with pytest.raises(InvalidArgument) as raised:
            await h.use_case.execute(ExecuteCommand(action="summarize", payload={}), timeout=None)
        assert raised.value.reason == "PAYLOAD_INVALID"
    with pytest.raises(InvalidArgument) as unknown:
        await h.use_case.execute(ExecuteCommand(action="nope", payload={}), timeout=None)
    assert unknown.value.reason == "ACTION_UNKNOWN"
    assert h.provider.calls == 0
    assert state(h) is CircuitState.CLOSED
    assert [f["succeeded"] for f in h.observer.finished] == [False] * 6


async def test_exhausted_retries_are_provider_unavailable_and_one_breaker_failure() -> None:
    h = harness(ProviderServerError())
    with pytest.raises(Unavailable) as raised:
        await h.use_case.execute(SUMMARIZE, timeout=None)
    assert raised.value.reason == "PROVIDER_UNAVAILABLE"
    assert raised.value.metadata == {"provider": "scripted", "attempts": "3"}
    assert h.provider.calls == 3
    assert state(h) is CircuitState.CLOSED  # one failed execution, not three


async def test_three_failed_executions_open_the_circuit_and_then_the_provider_is_not_called() -> None:
    h = harness(ProviderServerError())
    for _ in range(3):
        with pytest.raises(Unavailable):
            await h.use_case.execute(SUMMARIZE, timeout=None)
    assert state(h) is CircuitState.OPEN
    calls = h.provider.calls
    h.clock.advance(15)
    with pytest.raises(Unavailable) as raised:
        await h.use_case.execute(SUMMARIZE, timeout=None)
    assert raised.value.reason == "CIRCUIT_OPEN"
    assert raised.value.retry_after_seconds == pytest.approx(45)
    assert h.provider.calls == calls
    assert ("rejected", "scripted") in h.observer.events
    assert h.observer.finished[-1]["breaker_state"] is CircuitState.OPEN


async def test_probe_after_cooldown_closes_the_circuit() -> None:
    h = harness(ProviderServerError())
    h.breaker.record_failure(h.breaker.allow())
    h.breaker.record_failure(h.breaker.allow())
    with pytest.raises(Unavailable):
        await h.use_case.execute(SUMMARIZE, timeout=None)
    assert state(h) is CircuitState.OPEN
    h.clock.advance(60)
    h.provider.steps = ["Recovered."]
    execution = await h.use_case.execute(SUMMARIZE, timeout=None)
    assert execution.result == {"summary": "Recovered."}
    assert state(h) is CircuitState.CLOSED


async def test_provider_timeout_is_deadline_exceeded_and_not_retried() -> None:
    h = harness(ProviderTimeout("slow"))
    with pytest.raises(DeadlineExceeded) as raised:
        await h.use_case.execute(SUMMARIZE, timeout=None)
    assert raised.value.reason == "PROVIDER_TIMEOUT"
    assert h.provider.calls == 1
    assert h.provider.timeouts == [30.0]


async def test_the_caller_deadline_lowers_the_provider_timeout() -> None:
    h = harness(ProviderServerError(), "ok", cost=1.0)
    await h.use_case.execute(SUMMARIZE, timeout=5.0)
    assert h.provider.timeouts == [5.0, pytest.approx(5.0 - 1.0 - 0.2)]


async def test_a_timeout_forced_by_the_caller_deadline_does_not_count_against_the_provider() -> None:
    h = harness(ProviderTimeout("slow"))
    for _ in range(5):
        with pytest.raises(DeadlineExceeded):
            await h.use_case.execute(SUMMARIZE, timeout=2.0)
    assert state(h) is CircuitState.CLOSED
    for _ in range(3):  # the provider's own timeout does
        with pytest.raises(DeadlineExceeded):
            await h.use_case.execute(SUMMARIZE, timeout=None)
    assert state(h) is CircuitState.OPEN


async def test_no_retry_when_the_wait_would_pass_the_deadline() -> None:
    h = harness(ProviderRateLimited(retry_after=3.0), "ok")
    with pytest.raises(Unavailable) as raised:
        await h.use_case.execute(SUMMARIZE, timeout=2.0)
    assert raised.value.reason == "PROVIDER_UNAVAILABLE"
    assert raised.value.retry_after_seconds == 3.0  # the vendor's hint is passed on
    assert h.provider.calls == 1
    assert h.clock.sleeps == []


async def test_a_passed_deadline_is_refused_before_calling() -> None:
    h = harness("ok")
    with pytest.raises(DeadlineExceeded):
        await h.use_case.execute(SUMMARIZE, timeout=0.0)
    assert h.provider.calls == 0


async def test_an_answer_in_the_wrong_shape_is_provider_output_invalid() -> None:
    h = harness("not json at all")
    command = ExecuteCommand(action="classify", payload={"text": "t", "labels": ["a", "b"]})
    with pytest.raises(Unavailable) as raised:
        await h.use_case.execute(command, timeout=None)
    assert raised.value.reason == "PROVIDER_OUTPUT_INVALID"
    assert state(h) is CircuitState.CLOSED


async def test_a_bug_in_the_provider_releases_the_probe_slot() -> None:
    h = harness(ProviderServerError())
    for _ in range(3):
        with pytest.raises(Unavailable):
            await h.use_case.execute(SUMMARIZE, timeout=None)
    h.clock.advance(60)

    async def broken(prompt: str, *, timeout: float) -> Any:
        raise RuntimeError("bug")

    h.provider.complete = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await h.use_case.execute(SUMMARIZE, timeout=None)
    assert state(h) is CircuitState.HALF_OPEN
    h.breaker.release(h.breaker.allow())  # the slot is free again
