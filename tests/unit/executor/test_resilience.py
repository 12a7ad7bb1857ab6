"""The resilience policy with a manual clock: sliding-window opening (failure rate, slow calls), half-open
probes, forced states, the retry budget under an outage, and fallback across providers."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from techno_core.errors import FailedPrecondition, Unavailable
from techno_executor.adapters.action_file import shipped_catalogue
from techno_executor.adapters.telemetry import PrometheusExecutionObserver
from techno_executor.application.execute import ExecuteAction, ExecuteCommand, ProviderRoute
from techno_executor.application.ports import NullObserver
from techno_executor.domain.breaker import CircuitBreaker, CircuitOpenError, CircuitState, fan_out
from techno_executor.domain.provider import ProviderError, ProviderServerError
from techno_executor.domain.retry import RetryBudget, RetryPolicy, StopReason
from techno_executor.resilience_settings import ResilienceSettings, provider_routes

from .fakes import FakeClock, ScriptedProvider

SUMMARY = '{"summary": "short"}'
SUMMARIZE = ExecuteCommand(action="summarize", payload={"text": "A long text."})
Transition = tuple[str, CircuitState, CircuitState]


def state(breaker: CircuitBreaker) -> CircuitState:
    return breaker.state


def breaker(clock: FakeClock, transitions: list[Transition] | None = None, **options: Any) -> CircuitBreaker:
    def listen(name: str, old: CircuitState, new: CircuitState) -> None:
        if transitions is not None:
            transitions.append((name, old, new))

    return CircuitBreaker("p", clock=clock, on_state_change=listen, **options)


def outcome(cb: CircuitBreaker, *, failed: bool, seconds: float = 0.1) -> None:
    permit = cb.allow()
    if failed:
        cb.record_failure(permit, seconds=seconds)
    else:
        cb.record_success(permit, seconds=seconds)


# --- circuit breaker -------------------------------------------------------------------------------------


def test_failure_rate_opens_only_once_the_window_holds_the_minimum_calls() -> None:
    cb = breaker(FakeClock(), failure_threshold=100, failure_rate_threshold=0.5, window_size=10, minimum_calls=6)
    for failed in (True, False, True, False, True):  # 60 % failed, but only 5 calls: not judged yet
        outcome(cb, failed=failed)
    assert state(cb) is CircuitState.CLOSED
    assert cb.failure_rate() == 0.0
    outcome(cb, failed=False)  # 6 calls, 50 % failed: a success never opens
    assert state(cb) is CircuitState.CLOSED
    assert cb.failure_rate() == pytest.approx(0.5)
    outcome(cb, failed=True)  # 4 of 7 failed
    assert state(cb) is CircuitState.OPEN


def test_the_window_slides_old_failures_out() -> None:
    cb = breaker(FakeClock(), failure_threshold=100, failure_rate_threshold=0.5, window_size=4, minimum_calls=4)
    for failed in (True, False, False, False, False, True):
        outcome(cb, failed=failed)
    assert state(cb) is CircuitState.CLOSED
    assert cb.snapshot().failure_rate == pytest.approx(0.25)  # the first failure slid out


def test_slow_call_rate_opens_even_when_every_call_succeeds() -> None:
    cb = breaker(
        FakeClock(),
        slow_call_rate_threshold=0.5,
        slow_call_seconds=2.0,
        window_size=10,
        minimum_calls=4,
    )
    outcome(cb, failed=False, seconds=3.0)
    outcome(cb, failed=False, seconds=0.1)
    outcome(cb, failed=False, seconds=2.5)
    assert state(cb) is CircuitState.CLOSED  # 3 calls < minimum
    assert cb.slow_call_rate() == 0.0
    outcome(cb, failed=False, seconds=0.2)  # 2 of 4 slow = 50 %, but this one is fast: judged on slow calls
    assert state(cb) is CircuitState.CLOSED
    outcome(cb, failed=False, seconds=5.0)  # 3 of 5 slow
    assert state(cb) is CircuitState.OPEN


# Each threshold is inclusive (resilience4j: "equal or greater"); these pin every comparison at its boundary.


def window_breaker(**options: Any) -> CircuitBreaker:
    """A breaker judged on its window alone: 4 calls, 50 % thresholds, slow from 2 s, no consecutive rule."""
    defaults: dict[str, Any] = {
        "failure_threshold": 100,
        "failure_rate_threshold": 0.5,
        "slow_call_rate_threshold": 0.5,
        "slow_call_seconds": 2.0,
        "window_size": 10,
        "minimum_calls": 4,
    }
    return breaker(FakeClock(), **{**defaults, **options})


def test_a_failure_rate_exactly_at_the_threshold_opens() -> None:
    cb = window_breaker()
    for failed in (False, False, True):
        outcome(cb, failed=failed)
    outcome(cb, failed=True)  # 2 of 4 = 50 %, exactly the threshold
    assert state(cb) is CircuitState.OPEN


def test_a_failure_rate_just_under_the_threshold_stays_closed() -> None:
    cb = window_breaker(failure_rate_threshold=0.6)
    for failed in (False, False, True, True):  # 50 % < 60 %
        outcome(cb, failed=failed)
    assert state(cb) is CircuitState.CLOSED
    assert cb.failure_rate() == pytest.approx(0.5)


def test_a_slow_call_rate_exactly_at_the_threshold_opens() -> None:
    cb = window_breaker()
    for seconds in (0.1, 0.1, 3.0):
        outcome(cb, failed=False, seconds=seconds)
    outcome(cb, failed=False, seconds=3.0)  # 2 of 4 slow = 50 %, exactly the threshold
    assert state(cb) is CircuitState.OPEN


def test_a_slow_call_rate_just_under_the_threshold_stays_closed() -> None:
    cb = window_breaker(slow_call_rate_threshold=0.6)
    for seconds in (0.1, 0.1, 3.0, 3.0):  # 50 % < 60 %
        outcome(cb, failed=False, seconds=seconds)
    assert state(cb) is CircuitState.CLOSED
    assert cb.slow_call_rate() == pytest.approx(0.5)


@pytest.mark.parametrize(("seconds", "opens"), [(1.999, False), (2.0, True)])
def test_a_call_lasting_exactly_the_slow_call_duration_is_slow(seconds: float, opens: bool) -> None:
    cb = window_breaker(minimum_calls=2)
    outcome(cb, failed=False, seconds=0.1)
    outcome(cb, failed=False, seconds=seconds)  # slow: 1 of 2 = 50 %, the threshold
    assert state(cb) is (CircuitState.OPEN if opens else CircuitState.CLOSED)


@pytest.mark.parametrize("rule", ["failure", "slow"])
def test_the_window_is_judged_from_exactly_the_minimum_number_of_calls(rule: str) -> None:
    cb = window_breaker()

    def bad() -> None:
        if rule == "failure":
            outcome(cb, failed=True)
        else:
            outcome(cb, failed=False, seconds=3.0)

    def rate() -> float:
        return cb.failure_rate() if rule == "failure" else cb.slow_call_rate()

    outcome(cb, failed=False)
    bad()
    bad()  # 2 of 3 = 67 %, but one call short of the minimum: not judged
    assert (state(cb), rate()) == (CircuitState.CLOSED, 0.0)
    outcome(cb, failed=False)  # 4 calls: judged now, 50 %, but a good call never opens
    assert state(cb) is CircuitState.CLOSED
    assert rate() == pytest.approx(0.5)
    cb.reset()
    for _ in range(3):
        outcome(cb, failed=False)
    bad()  # exactly the minimum, 25 % < 50 %: still closed
    assert state(cb) is CircuitState.CLOSED
    cb.reset()
    outcome(cb, failed=False)
    bad()
    outcome(cb, failed=False)
    bad()  # exactly the minimum and 50 %: opens on this call
    assert state(cb) is CircuitState.OPEN


def test_consecutive_failures_open_before_the_window_is_judged() -> None:
    transitions: list[Transition] = []
    cb = breaker(FakeClock(), transitions, failure_threshold=3, minimum_calls=10)
    for _ in range(3):
        outcome(cb, failed=True)
    assert state(cb) is CircuitState.OPEN
    assert transitions == [("p", CircuitState.CLOSED, CircuitState.OPEN)]


def test_half_open_admits_the_probe_limit_and_one_probe_failure_reopens() -> None:
    clock = FakeClock()
    cb = breaker(clock, failure_threshold=1, open_seconds=30, half_open_max_calls=3)
    outcome(cb, failed=True)
    clock.advance(30)
    probes = [cb.allow() for _ in range(3)]
    assert state(cb) is CircuitState.HALF_OPEN
    with pytest.raises(CircuitOpenError):
        cb.allow()
    cb.record_success(probes[0])
    cb.record_failure(probes[1])
    assert state(cb) is CircuitState.OPEN
    assert cb.retry_after() == pytest.approx(30)
    cb.record_success(probes[2])  # granted before the reopening: ignored
    assert state(cb) is CircuitState.OPEN


def test_forced_open_holds_past_the_cooldown_until_reset() -> None:
    clock, transitions = FakeClock(), list[Transition]()
    cb = breaker(clock, transitions, open_seconds=10)
    cb.force_open()
    clock.advance(1000)
    with pytest.raises(CircuitOpenError) as rejected:
        cb.allow()
    assert rejected.value.retry_after == pytest.approx(10)
    snapshot = cb.snapshot()
    assert snapshot.state is CircuitState.FORCED_OPEN
    assert snapshot.retry_after == pytest.approx(10)
    cb.reset()
    assert state(cb) is CircuitState.CLOSED
    cb.allow()
    assert [new for _, _, new in transitions] == [CircuitState.FORCED_OPEN, CircuitState.CLOSED]


def test_forced_closed_ignores_failures_until_reset_which_empties_the_window() -> None:
    cb = breaker(FakeClock(), failure_threshold=2, window_size=4, minimum_calls=2)
    outcome(cb, failed=True)
    cb.force_closed()
    for _ in range(10):
        outcome(cb, failed=True)
    assert state(cb) is CircuitState.FORCED_CLOSED
    assert cb.snapshot().consecutive_failures == 0
    cb.reset()
    snapshot = cb.snapshot()
    assert (snapshot.state, snapshot.calls_in_window, snapshot.failure_rate) == (CircuitState.CLOSED, 0, 0.0)
    outcome(cb, failed=True)
    assert state(cb) is CircuitState.CLOSED  # counting starts afresh
    outcome(cb, failed=True)
    assert state(cb) is CircuitState.OPEN


def test_gauge_values_show_what_forced_states_do() -> None:
    assert [s.gauge_value for s in CircuitState] == [0, 1, 2, 2, 0]


def test_fan_out_calls_every_listener_even_when_one_raises() -> None:
    heard: list[str] = []

    def broken(name: str, old: CircuitState, new: CircuitState) -> None:
        raise RuntimeError("boom")

    def ok(name: str, old: CircuitState, new: CircuitState) -> None:
        heard.append(new.value)

    with pytest.raises(RuntimeError):
        fan_out(broken, None, ok)("p", CircuitState.CLOSED, CircuitState.OPEN)
    assert heard == ["open"]


@pytest.mark.parametrize(
    "options",
    [{"failure_rate_threshold": 0}, {"slow_call_rate_threshold": 1.5}, {"window_size": 5, "minimum_calls": 6}],
)
def test_invalid_window_configuration_is_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message is not the contract
        CircuitBreaker("p", **options)


# --- retry budget ----------------------------------------------------------------------------------------


def test_budget_allows_retries_only_above_half_and_refills_by_the_ratio() -> None:
    budget = RetryBudget(10, 0.1)
    for _ in range(4):
        budget.record_failure()
    assert budget.allows_retry()  # 6 > 5
    budget.record_failure()
    assert not budget.allows_retry()  # 5 is not > 5
    for _ in range(11):
        budget.record_success()
    assert budget.tokens == pytest.approx(6.1)
    assert budget.allows_retry()
    for _ in range(100):
        budget.record_failure()
    assert budget.tokens == 0


async def test_retry_stops_with_throttled_when_the_budget_is_spent() -> None:
    clock = FakeClock()
    budget = RetryBudget(2, 0.1)  # one failure leaves 1 token: not > 1
    policy = RetryPolicy(max_attempts=3, sleep=clock.sleep, random=lambda: 0.5, clock=clock)
    calls = 0

    async def fail() -> str:
        nonlocal calls
        calls += 1
        raise ProviderServerError("down")

    with pytest.raises(Exception) as raised:  # noqa: PT011 - inspected below
        await policy.run(fail, deadline=None, budget=budget)
    assert calls == 1
    assert getattr(raised.value, "reason", None) is StopReason.THROTTLED


def make_use_case(
    *providers: ScriptedProvider, clock: FakeClock, options: dict[str, Any] | None = None, **cb: Any
) -> ExecuteAction:
    routes = [
        ProviderRoute(p, CircuitBreaker(p.name, clock=clock, **{"failure_threshold": 3, "open_seconds": 60, **cb}))
        for p in providers
    ]
    return ExecuteAction(
        catalogue=shipped_catalogue(),
        routes=routes,
        retry=RetryPolicy(max_attempts=3, sleep=clock.sleep, random=lambda: 1.0, clock=clock),
        observer=NullObserver(),
        provider_timeout_seconds=30,
        clock=clock,
        **(options or {}),
    )


def named(name: str, *steps: str | ProviderError, clock: FakeClock | None = None) -> ScriptedProvider:
    provider = ScriptedProvider(steps, clock=clock)
    provider.name = name
    return provider


async def test_budget_caps_attempts_under_a_full_outage_and_recovers() -> None:
    clock = FakeClock()
    down = named("down", ProviderServerError("down", status=503))
    use_case = make_use_case(down, clock=clock)
    use_case.routes["down"].breaker.force_closed()  # isolate the budget from the breaker
    for _ in range(50):
        with pytest.raises(Unavailable):
            await use_case.execute(SUMMARIZE, timeout=None)
    # 150 without a budget; with 10 tokens retries stop after 5 failed attempts: 3 + 2 + 48 x 1.
    assert down.calls == 53
    assert use_case.routes["down"].budget.tokens == 0

    down.steps = [SUMMARY]  # the provider comes back: successes refill the budget (0.1 each)
    for _ in range(61):
        await use_case.execute(SUMMARIZE, timeout=None)
    assert use_case.routes["down"].budget.tokens == pytest.approx(6.1)  # one failure still leaves > 5
    down.steps = [ProviderServerError("blip"), SUMMARY]
    down.timeouts.clear()
    execution = await use_case.execute(SUMMARIZE, timeout=None)
    assert execution.attempts == 2  # retries are back


# --- fallback --------------------------------------------------------------------------------------------


async def test_fallback_answers_when_the_primary_is_open_without_calling_it() -> None:
    clock = FakeClock()
    primary, backup = named("primary", SUMMARY), named("backup", SUMMARY)
    use_case = make_use_case(primary, backup, clock=clock)
    use_case.routes["primary"].breaker.force_open()
    execution = await use_case.execute(SUMMARIZE, timeout=None)
    assert (execution.provider, execution.model, execution.attempts) == ("backup", "scripted-1", 1)
    assert (primary.calls, backup.calls) == (0, 1)


async def test_fallback_after_the_primary_spent_its_attempts_counts_every_attempt() -> None:
    clock = FakeClock()
    primary = named("primary", ProviderServerError("down", status=503))
    backup = named("backup", SUMMARY)
    use_case = make_use_case(primary, backup, clock=clock)
    execution = await use_case.execute(SUMMARIZE, timeout=None)
    assert (execution.provider, execution.attempts) == ("backup", 4)
    assert use_case.routes["primary"].breaker.snapshot().consecutive_failures == 1


async def test_a_non_retryable_error_falls_back_without_counting_against_the_breaker() -> None:
    clock = FakeClock()
    primary = named("primary", ProviderError("400 bad request"))
    backup = named("backup", SUMMARY)
    use_case = make_use_case(primary, backup, clock=clock, failure_threshold=1)
    execution = await use_case.execute(SUMMARIZE, timeout=None)
    assert (execution.provider, primary.calls) == ("backup", 1)
    assert use_case.routes["primary"].breaker.state is CircuitState.CLOSED


async def test_an_answer_in_the_wrong_shape_falls_back() -> None:
    clock = FakeClock()
    primary, backup = named("primary", "not json at all"), named("backup", '{"label": "a"}')
    use_case = make_use_case(primary, backup, clock=clock)
    command = ExecuteCommand(action="classify", payload={"text": "t", "labels": ["a", "b"]})
    execution = await use_case.execute(command, timeout=None)
    assert (execution.provider, primary.calls) == (
        "backup",
        2,
    )  # a bad answer is asked for once more before falling back
    assert use_case.routes["primary"].breaker.state is CircuitState.CLOSED  # it answered: it is up


async def test_the_request_order_and_filter_choose_the_chain() -> None:
    clock = FakeClock()
    a, b, c = named("a", SUMMARY), named("b", SUMMARY), named("c", SUMMARY)
    use_case = make_use_case(a, b, c, clock=clock)
    command = ExecuteCommand(action="summarize", payload={"text": "x"}, providers=("unknown", "c", "a"))
    assert (await use_case.execute(command, timeout=None)).provider == "c"
    assert [r.name for r in use_case.chain(())] == ["a", "b", "c"]
    assert [r.name for r in use_case.chain(("b", "b", "a"))] == ["b", "a"]


async def test_only_unknown_providers_is_provider_not_allowed() -> None:
    clock = FakeClock()
    provider = named("a", SUMMARY)
    use_case = make_use_case(provider, clock=clock)
    command = ExecuteCommand(action="summarize", payload={"text": "x"}, providers=("openai",))
    with pytest.raises(FailedPrecondition) as raised:
        await use_case.execute(command, timeout=None)
    assert raised.value.reason == "PROVIDER_NOT_ALLOWED"
    assert provider.calls == 0


async def test_all_open_fails_closed_with_the_smallest_retry_after_without_calling_anyone() -> None:
    clock = FakeClock()
    a, b = named("a", ProviderServerError("down")), named("b", ProviderServerError("down"))
    use_case = make_use_case(a, b, clock=clock, failure_threshold=1, open_seconds=60)
    with pytest.raises(Unavailable) as first:
        await use_case.execute(SUMMARIZE, timeout=None)  # opens a, then b (each after its attempts)
    assert first.value.reason == "PROVIDER_UNAVAILABLE"
    calls = (a.calls, b.calls)
    clock.advance(20)
    use_case.routes["b"].breaker.force_open()  # b: 60 s hint; a: 40 s left
    with pytest.raises(Unavailable) as raised:
        await use_case.execute(SUMMARIZE, timeout=None)
    assert raised.value.reason == "CIRCUIT_OPEN"
    assert raised.value.retry_after_seconds == pytest.approx(40, abs=1)  # less the backoffs slept on the clock
    assert (a.calls, b.calls) == calls


# --- telemetry and settings ------------------------------------------------------------------------------


async def test_each_attempt_is_a_span_event_and_transitions_are_counted() -> None:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    registry, clock = CollectorRegistry(), FakeClock()
    observer = PrometheusExecutionObserver(registry, "x")
    provider = named("p", ProviderServerError("down", status=503), SUMMARY)
    cb = CircuitBreaker("p", clock=clock, on_state_change=observer.breaker_state_changed)
    use_case = ExecuteAction(
        catalogue=shipped_catalogue(),
        routes=[ProviderRoute(provider, cb)],
        retry=RetryPolicy(max_attempts=3, sleep=clock.sleep, random=lambda: 0.5, clock=clock),
        observer=observer,
        provider_timeout_seconds=30,
        clock=clock,
    )
    with tracer_provider.get_tracer("test").start_as_current_span("server"):
        await use_case.execute(SUMMARIZE, timeout=None)
    (span,) = exporter.get_finished_spans()
    events = [dict(event.attributes or {}) for event in span.events]
    assert [e["techno.executor.attempt"] for e in events] == [1, 2]
    assert events[0]["error.type"] == "provider_error"
    assert events[0]["techno.executor.retry_wait_seconds"] == pytest.approx(0.1)
    assert "error.type" not in events[1]
    cb.force_open()
    cb.reset()
    assert registry.get_sample_value("llm_circuit_transitions_total", {"provider": "p", "to": "forced_open"}) == 1
    assert registry.get_sample_value("llm_circuit_transitions_total", {"provider": "p", "to": "closed"}) == 1
    tracer_provider.shutdown()


def test_resilience_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "TECHNO_CB_THRESHOLD": "5",
        "TECHNO_CB_TIMEOUT": "12.5",
        "TECHNO_CB_FAILURE_RATE": "0.25",
        "TECHNO_CB_SLOW_CALL_RATE": "0.75",
        "TECHNO_CB_SLOW_CALL_SECONDS": "3",
        "TECHNO_CB_WINDOW": "30",
        "TECHNO_CB_MIN_CALLS": "7",
        "TECHNO_CB_HALF_OPEN_CALLS": "2",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = ResilienceSettings()
    assert (settings.cb_threshold, settings.cb_timeout, settings.cb_failure_rate) == (5, 12.5, 0.25)
    assert (settings.cb_slow_call_rate, settings.cb_slow_call_seconds) == (0.75, 3.0)
    assert (settings.cb_window, settings.cb_min_calls, settings.cb_half_open_calls) == (30, 7, 2)
    (route,) = provider_routes(settings, [named("p", SUMMARY)])
    assert route.breaker.open_seconds == 12.5
    assert route.budget.max_tokens == 10


def test_resilience_settings_are_described_and_validated() -> None:
    assert all(field.description for field in ResilienceSettings.model_fields.values())
    with pytest.raises(ValueError):  # noqa: PT011 - pydantic's ValidationError is a ValueError
        ResilienceSettings(cb_window=5, cb_min_calls=6)
    with pytest.raises(ValueError):  # noqa: PT011
        ResilienceSettings(cb_failure_rate=1.5)
