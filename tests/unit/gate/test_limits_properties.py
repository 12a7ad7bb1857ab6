"""Properties of the GCRA limiter over arbitrary request timings.

The semantics stated in ``techno_gate.domain.limits``: with ``T = period / limit`` (rounded up to a microsecond)
and burst ``B``, GCRA is exactly a token bucket of ``B`` tokens refilled one per ``T``. Hence any closed window
of length ``W`` admits at most ``B + floor(W / T)`` requests — ``B + limit`` per ``period`` — and with ``B = 1``
any half-open window of length ``period`` admits at most ``limit``.

Each property is a ``check_*`` function taking a factory of limiters on a manual clock; the tests here run them
on the in-process limiter, and tests/integration/gate/test_redis_limits.py runs the same ones on Redis.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from techno_gate.adapters.limits_local import LocalRateLimiter
from techno_gate.domain.limits import RateLimit, RateLimiter

SECOND = 1_000_000


class Clock:
    def __init__(self) -> None:
        self.now_us = 0

    def __call__(self) -> int:
        return self.now_us


limits = st.builds(
    RateLimit,
    name=st.just("subject/limit"),
    limit=st.integers(1, 20),
    period_seconds=st.sampled_from([0.001, 0.5, 1, 3, 60]),
    burst=st.none() | st.integers(1, 25),
)
# Gaps between requests, in microseconds: many simultaneous arrivals, and gaps around one emission interval.
gaps = st.lists(st.integers(0, 0) | st.integers(0, 400_000) | st.integers(0, 5 * SECOND), min_size=1, max_size=120)


LimiterFactory = Callable[[Clock], RateLimiter]
"""A fresh limiter (no subject seen yet) reading the given clock."""


def local(clock: Clock) -> RateLimiter:
    return LocalRateLimiter(clock=clock)


async def run(
    make: LimiterFactory, limit: RateLimit, request_gaps: list[int]
) -> tuple[list[int], list[bool], Clock, RateLimiter]:
    clock = Clock()
    limiter = make(clock)
    times, admitted = [], []
    for gap in request_gaps:
        clock.now_us += gap
        times.append(clock.now_us)
        admitted.append((await limiter.acquire("s", limit)).allowed)
    return times, admitted, clock, limiter


async def check_no_window_admits_more_than_burst_plus_refill(
    make: LimiterFactory, limit: RateLimit, request_gaps: list[int]
) -> None:
    times, admitted, _, _ = await run(make, limit, request_gaps)
    admitted_times = [t for t, ok in zip(times, admitted, strict=True) if ok]
    period_us = round(limit.period_seconds * SECOND)
    for window in (period_us, limit.emission_interval_us, 3 * limit.emission_interval_us + 1):
        bound = limit.effective_burst + window // limit.emission_interval_us
        for start in admitted_times:
            assert sum(start <= t <= start + window for t in admitted_times) <= bound
    if limit.effective_burst == 1:
        for start in admitted_times:
            assert sum(start <= t < start + period_us for t in admitted_times) <= limit.limit


async def check_admits_exactly_what_a_token_bucket_admits(
    make: LimiterFactory, limit: RateLimit, request_gaps: list[int]
) -> None:
    """Not merely "never too many": never too few either, and refused requests take no token."""
    times, admitted, _, _ = await run(make, limit, request_gaps)
    interval = limit.emission_interval_us
    tokens, last = Fraction(limit.effective_burst), times[0]
    for now, ok in zip(times, admitted, strict=True):
        tokens = min(Fraction(limit.effective_burst), tokens + Fraction(now - last, interval))
        last = now
        assert ok == (tokens >= 1)
        if ok:
            tokens -= 1


async def check_retry_after_is_exact_and_remaining_is_the_next_admissions(
    make: LimiterFactory, limit: RateLimit, request_gaps: list[int]
) -> None:
    _, _, clock, limiter = await run(make, limit, request_gaps)
    now = clock.now_us
    probe = await limiter.peek("s", limit)
    if probe.allowed:
        # `remaining` more acquisitions succeed right after this one, and not one more.
        results = [(await limiter.acquire("s", limit)).allowed for _ in range(probe.remaining + 2)]
        assert results == [True] * (probe.remaining + 1) + [False]
        return
    wait_us = round(probe.retry_after_seconds * SECOND)
    assert wait_us >= 1
    clock.now_us = now + wait_us - 1
    assert not (await limiter.peek("s", limit)).allowed
    clock.now_us = now + wait_us
    assert (await limiter.peek("s", limit)).allowed
    # Once reset_after has passed the bucket is full: a whole burst goes through.
    clock.now_us = now + round(probe.reset_after_seconds * SECOND)
    burst = [(await limiter.acquire("s", limit)).allowed for _ in range(limit.effective_burst + 1)]
    assert burst == [True] * limit.effective_burst + [False]


@settings(max_examples=300, deadline=None)
@given(limit=limits, request_gaps=gaps)
async def test_no_window_admits_more_than_burst_plus_refill(limit: RateLimit, request_gaps: list[int]) -> None:
    await check_no_window_admits_more_than_burst_plus_refill(local, limit, request_gaps)


@settings(max_examples=300, deadline=None)
@given(limit=limits, request_gaps=gaps)
async def test_admits_exactly_what_a_token_bucket_admits(limit: RateLimit, request_gaps: list[int]) -> None:
    await check_admits_exactly_what_a_token_bucket_admits(local, limit, request_gaps)


@settings(max_examples=200, deadline=None)
@given(limit=limits, request_gaps=gaps)
async def test_retry_after_is_exact_and_remaining_is_the_next_admissions(
    limit: RateLimit, request_gaps: list[int]
) -> None:
    await check_retry_after_is_exact_and_remaining_is_the_next_admissions(local, limit, request_gaps)
