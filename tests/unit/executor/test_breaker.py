"""The circuit breaker's state machine, driven by a manual clock."""

from __future__ import annotations

import pytest

from techno_executor.domain.breaker import CircuitBreaker, CircuitOpenError, CircuitState

from .fakes import FakeClock

Transition = tuple[str, CircuitState, CircuitState]


def make(clock: FakeClock, transitions: list[Transition] | None = None, **options: int) -> CircuitBreaker:
    def listen(name: str, old: CircuitState, new: CircuitState) -> None:
        if transitions is not None:
            transitions.append((name, old, new))

    defaults = {"failure_threshold": 3, "open_seconds": 60}
    return CircuitBreaker("p", clock=clock, on_state_change=listen, **{**defaults, **options})


def state(breaker: CircuitBreaker) -> CircuitState:
    """The state, read through a call so that mypy does not narrow it across transitions."""
    return breaker.state


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.record_failure(breaker.allow())


def test_opens_after_threshold_consecutive_failures() -> None:
    clock, transitions = FakeClock(), list[Transition]()
    breaker = make(clock, transitions)
    fail(breaker, 2)
    assert state(breaker) is CircuitState.CLOSED
    fail(breaker, 1)
    assert state(breaker) is CircuitState.OPEN
    assert transitions == [("p", CircuitState.CLOSED, CircuitState.OPEN)]


def test_a_success_resets_the_failure_count() -> None:
    breaker = make(FakeClock())
    fail(breaker, 2)
    breaker.record_success(breaker.allow())
    fail(breaker, 2)
    assert state(breaker) is CircuitState.CLOSED


def test_open_rejects_with_the_time_left_of_the_cooldown() -> None:
    clock = FakeClock()
    breaker = make(clock)
    fail(breaker, 3)
    clock.advance(20)
    with pytest.raises(CircuitOpenError) as rejected:
        breaker.allow()
    assert rejected.value.retry_after == pytest.approx(40)
    assert breaker.retry_after() == pytest.approx(40)


def test_half_open_after_cooldown_and_probe_success_closes() -> None:
    clock, transitions = FakeClock(), list[Transition]()
    breaker = make(clock, transitions)
    fail(breaker, 3)
    clock.advance(60)
    probe = breaker.allow()
    assert state(breaker) is CircuitState.HALF_OPEN
    breaker.record_success(probe)
    assert state(breaker) is CircuitState.CLOSED
    assert [new for _, _, new in transitions] == [CircuitState.OPEN, CircuitState.HALF_OPEN, CircuitState.CLOSED]
    fail(breaker, 2)  # the failure count starts afresh after closing
    assert state(breaker) is CircuitState.CLOSED


def test_probe_failure_reopens_for_a_full_cooldown() -> None:
    clock = FakeClock()
    breaker = make(clock)
    fail(breaker, 3)
    clock.advance(61)
    breaker.record_failure(breaker.allow())
    assert state(breaker) is CircuitState.OPEN
    assert breaker.retry_after() == pytest.approx(60)


def test_half_open_lets_only_the_allowed_number_of_probes_through() -> None:
    clock = FakeClock()
    breaker = make(clock, half_open_max_calls=2)
    fail(breaker, 3)
    clock.advance(60)
    first, second = breaker.allow(), breaker.allow()
    with pytest.raises(CircuitOpenError) as rejected:
        breaker.allow()
    assert rejected.value.retry_after == pytest.approx(1.0)
    breaker.release(first)  # a probe that ended without a verdict frees its slot
    third = breaker.allow()
    breaker.record_success(second)
    assert state(breaker) is CircuitState.HALF_OPEN  # every probe must succeed before it closes
    breaker.record_success(third)
    assert state(breaker) is CircuitState.CLOSED


def test_outcomes_of_calls_granted_before_a_transition_are_ignored() -> None:
    clock = FakeClock()
    breaker = make(clock)
    slow = breaker.allow()
    fail(breaker, 3)
    breaker.record_success(slow)  # started while closed, ends while open: must not close the circuit
    assert state(breaker) is CircuitState.OPEN


def test_invalid_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker("p", failure_threshold=0)
