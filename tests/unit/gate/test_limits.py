"""GCRA arithmetic and the in-process limiters, on an injected clock."""

from __future__ import annotations

import pytest

from techno_core.errors import ResourceExhausted, Unavailable
from techno_gate.adapters.limits_local import LocalConcurrencyLimiter, LocalRateLimiter
from techno_gate.adapters.limits_redis import RedisConcurrencyLimiter, RedisRateLimiter
from techno_gate.domain.limits import (
    ConcurrencyLimit,
    RateLimit,
    concurrency_limited,
    decision,
    gcra,
    limits_unavailable,
    rate_limited,
)
from techno_gate.domain.reasons import Reason
from techno_gate.limit_settings import LimitSettings, build_limiters

SECOND = 1_000_000


class FakeClock:
    """Integer microseconds, moved by hand."""

    def __init__(self, now_us: int = 1_000 * SECOND) -> None:
        self.now_us = now_us

    def __call__(self) -> int:
        return self.now_us

    def advance(self, seconds: float) -> None:
        self.now_us += round(seconds * SECOND)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limiter(clock: FakeClock) -> LocalRateLimiter:
    return LocalRateLimiter(clock=clock)


THREE_PER_3S = RateLimit("key:k1/requests_per_3s", limit=3, period_seconds=3)  # T = 1 s, burst 3


def test_emission_interval_rounds_up_so_rounding_never_loosens_a_limit() -> None:
    limit = RateLimit("x", limit=3, period_seconds=1)
    assert limit.emission_interval_us == 333_334
    assert limit.capacity_us == 3 * 333_334
    assert RateLimit("x", limit=100, period_seconds=60).emission_interval_us == 600_000


@pytest.mark.parametrize(
    "kwargs",
    [
        {"limit": 0, "period_seconds": 60},
        {"limit": 1, "period_seconds": 0},
        {"limit": 1, "period_seconds": 60, "burst": 0},
    ],
)
def test_nonsensical_limits_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="rate limit"):
        RateLimit("x", **kwargs)  # type: ignore[arg-type]


def test_gcra_first_request_of_a_subject_sees_a_full_bucket() -> None:
    result = gcra(None, now_us=5 * SECOND, emission_interval_us=SECOND, capacity_us=3 * SECOND)
    assert result.allowed
    assert result.remaining == 2
    assert result.new_tat_us == 6 * SECOND
    assert result.reset_after_us == SECOND


async def test_burst_then_even_refill(limiter: LocalRateLimiter, clock: FakeClock) -> None:
    decisions = [await limiter.acquire("k1", THREE_PER_3S) for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, True]
    assert [d.remaining for d in decisions] == [2, 1, 0]
    assert [d.reset_after_seconds for d in decisions] == [1.0, 2.0, 3.0]
    assert all(d.retry_after_seconds == 0 for d in decisions)

    refused = await limiter.acquire("k1", THREE_PER_3S)
    assert not refused.allowed
    assert refused.remaining == 0
    assert refused.retry_after_seconds == 1.0
    assert refused.reset_after_seconds == 3.0
    assert refused.limit is THREE_PER_3S

    # One microsecond early is still refused, exactly on time is admitted: retry_after is exact.
    clock.advance(1.0 - 1e-6)
    early = await limiter.acquire("k1", THREE_PER_3S)
    assert not early.allowed
    assert early.retry_after_seconds == pytest.approx(1e-6)
    clock.advance(1e-6)
    assert (await limiter.acquire("k1", THREE_PER_3S)).allowed
    # The refill is even: one token per second, never a window's worth at once.
    assert not (await limiter.acquire("k1", THREE_PER_3S)).allowed
    clock.advance(1.0)
    assert (await limiter.acquire("k1", THREE_PER_3S)).remaining == 0

    # Idle for a whole period: the bucket is full again, and no fuller than the burst.
    clock.advance(10.0)
    assert [(await limiter.acquire("k1", THREE_PER_3S)).allowed for _ in range(4)] == [True, True, True, False]


async def test_refused_requests_consume_nothing(limiter: LocalRateLimiter, clock: FakeClock) -> None:
    for _ in range(3):
        await limiter.acquire("k1", THREE_PER_3S)
    retry_afters = {(await limiter.acquire("k1", THREE_PER_3S)).retry_after_seconds for _ in range(100)}
    assert retry_afters == {1.0}  # hammering a closed limit does not push its reset further
    clock.advance(1.0)
    assert (await limiter.acquire("k1", THREE_PER_3S)).allowed


async def test_peek_answers_like_acquire_and_consumes_nothing(limiter: LocalRateLimiter, clock: FakeClock) -> None:
    await limiter.acquire("k1", THREE_PER_3S)
    peeks = [await limiter.peek("k1", THREE_PER_3S) for _ in range(10)]
    assert len(set(peeks)) == 1
    assert peeks[0] == await limiter.acquire("k1", THREE_PER_3S)
    await limiter.acquire("k1", THREE_PER_3S)
    refused_peek = await limiter.peek("k1", THREE_PER_3S)
    assert not refused_peek.allowed
    assert refused_peek == await limiter.acquire("k1", THREE_PER_3S)
    assert await limiter.peek("never-seen", THREE_PER_3S) == await limiter.peek("never-seen", THREE_PER_3S)
    assert limiter.tracked_subjects == 1


async def test_burst_one_paces_requests_evenly(limiter: LocalRateLimiter, clock: FakeClock) -> None:
    paced = RateLimit("key:k1/requests_per_minute", limit=60, period_seconds=60, burst=1)
    assert (await limiter.acquire("k1", paced)).remaining == 0
    refused = await limiter.acquire("k1", paced)
    assert (refused.allowed, refused.retry_after_seconds) == (False, 1.0)
    clock.advance(1.0)
    assert (await limiter.acquire("k1", paced)).allowed


async def test_burst_larger_than_limit(limiter: LocalRateLimiter, clock: FakeClock) -> None:
    bursty = RateLimit("x", limit=1, period_seconds=1, burst=5)
    assert [(await limiter.acquire("k1", bursty)).allowed for _ in range(6)] == [True] * 5 + [False]
    clock.advance(2.0)
    assert [(await limiter.acquire("k1", bursty)).allowed for _ in range(3)] == [True, True, False]


async def test_subjects_are_independent(limiter: LocalRateLimiter) -> None:
    one = RateLimit("x", limit=1, period_seconds=60)
    assert (await limiter.acquire("a", one)).allowed
    assert not (await limiter.acquire("a", one)).allowed
    assert (await limiter.acquire("b", one)).allowed


async def test_memory_is_bounded_by_active_subjects(limiter: LocalRateLimiter, clock: FakeClock) -> None:
    one_per_second = RateLimit("x", limit=1, period_seconds=1)
    for round_ in range(5):
        for index in range(3000):
            await limiter.acquire(f"subject-{round_}-{index}", one_per_second)
        clock.advance(2.0)  # every bucket refilled: the subjects are indistinguishable from unseen ones
    assert limiter.tracked_subjects <= 2 * 3000


async def test_local_concurrency_limits_in_flight() -> None:
    limiter = LocalConcurrencyLimiter()
    two = ConcurrencyLimit("key:k1/in_flight", max_in_flight=2)
    first, second = await limiter.enter("k1", two), await limiter.enter("k1", two)
    assert first is not None
    assert second is not None
    assert await limiter.enter("k1", two) is None
    assert await limiter.enter("k2", two) is not None  # another subject has its own slots

    await first.release()
    await first.release()  # idempotent: must not free the slot `second` holds
    assert limiter.in_flight("k1") == 1
    third = await limiter.enter("k1", two)
    assert third is not None
    assert await limiter.enter("k1", two) is None

    await second.release()
    await third.release()
    assert limiter.in_flight("k1") == 0


def test_rate_limited_error_names_the_limit_and_its_reset() -> None:
    limit = RateLimit("key:key_abc/requests_per_minute", limit=100, period_seconds=60)
    refused = gcra(
        61 * SECOND, now_us=0, emission_interval_us=limit.emission_interval_us, capacity_us=limit.capacity_us
    )
    error = rate_limited(decision(limit, refused))
    assert isinstance(error, ResourceExhausted)
    assert error.reason == Reason.RATE_LIMITED
    assert error.retry_after_seconds == pytest.approx(1.6)
    [violation] = error.quota_violations
    assert violation.subject == "key:key_abc/requests_per_minute"
    assert "100 requests per 60s" in violation.description
    assert "resets in 61s" in violation.description


def test_concurrency_and_unavailable_errors() -> None:
    error = concurrency_limited(ConcurrencyLimit("profile:default/in_flight", 4), retry_after_seconds=0.5)
    assert (error.reason, error.retry_after_seconds) == (Reason.CONCURRENCY_LIMITED, 0.5)
    assert error.quota_violations[0].subject == "profile:default/in_flight"
    unavailable = limits_unavailable()
    assert isinstance(unavailable, Unavailable)
    assert unavailable.reason == Reason.LIMITS_UNAVAILABLE


async def test_settings_default_to_local_limits_that_fail_closed() -> None:
    settings = LimitSettings()
    assert settings.gate_limits_on_store_unavailable == "deny"
    rate, concurrency, close = build_limiters(settings)
    assert isinstance(rate, LocalRateLimiter)
    assert isinstance(concurrency, LocalConcurrencyLimiter)
    await close()


async def test_settings_read_the_techno_prefix_and_build_redis_limiters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TECHNO_GATE_LIMITS_BACKEND", "redis")
    monkeypatch.setenv("TECHNO_GATE_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("TECHNO_GATE_LIMITS_ON_STORE_UNAVAILABLE", "allow")
    monkeypatch.setenv("TECHNO_GATE_CONCURRENCY_LEASE_SECONDS", "5")
    settings = LimitSettings()
    assert (settings.gate_limits_backend, settings.gate_limits_on_store_unavailable) == ("redis", "allow")
    assert settings.gate_concurrency_lease_seconds == 5
    # Building connects to nothing (no I/O at construction); closing an unused client is fine.
    rate, concurrency, close = build_limiters(settings)
    assert isinstance(rate, RedisRateLimiter)
    assert isinstance(concurrency, RedisConcurrencyLimiter)
    await close()


def test_every_limit_setting_is_described() -> None:
    for name, field in LimitSettings.model_fields.items():
        assert field.description, name
