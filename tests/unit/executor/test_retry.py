"""The retry policy with a manual clock and sleep: what is retried, how long it waits, when it stops."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from techno_executor.domain.provider import (
    ProviderConnectionError,
    ProviderError,
    ProviderRateLimited,
    ProviderServerError,
    ProviderTimeout,
)
from techno_executor.domain.retry import GaveUp, RetryPolicy, StopReason

from .fakes import FakeClock


def policy(clock: FakeClock, *, jitter: float = 1.0, **options: float) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=int(options.get("max_attempts", 3)),
        initial_backoff_seconds=options.get("initial", 0.2),
        max_backoff_seconds=options.get("max", 5.0),
        sleep=clock.sleep,
        random=lambda: jitter,
        clock=clock,
    )


def script(*steps: str | ProviderError) -> tuple[Callable[[], Awaitable[str]], list[int]]:
    calls: list[int] = []

    async def attempt() -> str:
        calls.append(1)
        step = steps[min(len(calls), len(steps)) - 1]
        if isinstance(step, ProviderError):
            raise step
        return step

    return attempt, calls


async def test_first_success_is_one_attempt_without_sleeping() -> None:
    clock = FakeClock()
    attempt, _ = script("ok")
    result = await policy(clock).run(attempt, deadline=None)
    assert (result.value, result.attempts) == ("ok", 1)
    assert clock.sleeps == []


@pytest.mark.parametrize(
    "error", [ProviderRateLimited(), ProviderServerError(status=503), ProviderConnectionError("refused")]
)
async def test_retryable_failure_then_success(error: ProviderError) -> None:
    clock = FakeClock()
    attempt, calls = script(error, "ok")
    result = await policy(clock, jitter=0.5).run(attempt, deadline=None)
    assert (result.value, result.attempts, len(calls)) == ("ok", 2, 2)
    assert clock.sleeps == [pytest.approx(0.1)]  # half (jitter) of the initial 0.2 s


async def test_retry_after_of_a_429_is_honoured() -> None:
    clock = FakeClock()
    attempt, _ = script(ProviderRateLimited(retry_after=2.5), "ok")
    result = await policy(clock, jitter=0.1).run(attempt, deadline=None)
    assert result.attempts == 2
    assert clock.sleeps == [2.5]


async def test_retry_after_longer_than_the_max_backoff_gives_up_at_once() -> None:
    clock = FakeClock()
    attempt, calls = script(ProviderRateLimited(retry_after=30), "ok")
    with pytest.raises(GaveUp) as gave_up:
        await policy(clock).run(attempt, deadline=None)
    assert gave_up.value.reason is StopReason.RETRY_AFTER_TOO_LONG
    assert (len(calls), clock.sleeps) == (1, [])


async def test_timeout_is_never_retried() -> None:
    clock = FakeClock()
    timeout = ProviderTimeout("slow")
    attempt, calls = script(timeout, "ok")
    with pytest.raises(GaveUp) as gave_up:
        await policy(clock).run(attempt, deadline=None)
    assert (gave_up.value.reason, gave_up.value.attempts, len(calls)) == (StopReason.NOT_RETRYABLE, 1, 1)
    assert gave_up.value.last_error is timeout
    assert gave_up.value.__cause__ is timeout


async def test_max_attempts_counts_the_first_call() -> None:
    clock = FakeClock()
    attempt, calls = script(ProviderServerError())
    with pytest.raises(GaveUp) as gave_up:
        await policy(clock).run(attempt, deadline=None)
    assert (gave_up.value.reason, gave_up.value.attempts, len(calls)) == (StopReason.ATTEMPTS_EXHAUSTED, 3, 3)
    assert clock.sleeps == [pytest.approx(0.2), pytest.approx(0.4)]  # exponential, full jitter at its top


async def test_never_sleeps_into_the_deadline() -> None:
    clock = FakeClock()
    attempt, calls = script(ProviderRateLimited(retry_after=1.0), "ok")
    with pytest.raises(GaveUp) as gave_up:
        await policy(clock).run(attempt, deadline=clock.now + 0.9)
    assert gave_up.value.reason is StopReason.DEADLINE
    assert (len(calls), clock.sleeps) == (1, [])


async def test_other_exceptions_pass_through_untouched() -> None:
    async def attempt() -> str:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        await policy(FakeClock()).run(attempt, deadline=None)


def test_backoff_is_capped_by_the_max_backoff() -> None:
    retry = policy(FakeClock(), initial=1.0, max=5.0)
    assert [retry.backoff(n) for n in (1, 2, 3, 4, 10, 10_000)] == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_invalid_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


@given(
    retry=st.integers(min_value=1, max_value=200),
    jitter=st.floats(min_value=0, max_value=1, exclude_max=True),
    initial=st.floats(min_value=0, max_value=10),
    ceiling=st.floats(min_value=0, max_value=60),
)
def test_backoff_stays_within_the_full_jitter_bounds(retry: int, jitter: float, initial: float, ceiling: float) -> None:
    retry_policy = RetryPolicy(initial_backoff_seconds=initial, max_backoff_seconds=ceiling, random=lambda: jitter)
    delay = retry_policy.backoff(retry)
    assert 0 <= delay <= min(ceiling, initial * 2.0 ** min(retry - 1, 62))


@given(
    failures=st.lists(
        st.one_of(
            st.builds(ProviderServerError),
            st.builds(ProviderConnectionError),
            st.builds(ProviderRateLimited, retry_after=st.none() | st.floats(min_value=0, max_value=8)),
        ),
        min_size=1,
        max_size=6,
    ),
    budget=st.floats(min_value=0.001, max_value=10),
    jitter=st.floats(min_value=0, max_value=1, exclude_max=True),
    max_attempts=st.integers(min_value=1, max_value=6),
)
async def test_total_waiting_never_passes_the_deadline(
    failures: list[ProviderError], budget: float, jitter: float, max_attempts: int
) -> None:
    clock = FakeClock()
    deadline = clock.now + budget
    attempt, calls = script(*failures, "ok")
    retry = RetryPolicy(max_attempts=max_attempts, sleep=clock.sleep, random=lambda: jitter, clock=clock)
    try:
        attempts = (await retry.run(attempt, deadline=deadline)).attempts
    except GaveUp as gave_up:
        attempts = gave_up.attempts
    assert attempts == len(calls) <= max_attempts
    assert clock.now < deadline
