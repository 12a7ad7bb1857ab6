"""Request-rate and concurrency limits: the values, the GCRA arithmetic and the ports the gate limits through.

Rate limits use GCRA (the Generic Cell Rate Algorithm), which is a token bucket kept as ONE number per subject,
the theoretical arrival time (TAT): when the bucket would be full again. One number means one atomic
read-modify-write in any store (a Lua script in Redis, a dict entry in-process), and no fixed window, so no
double burst at a window boundary.

Semantics, with ``T = period / limit`` (the emission interval) and ``B = burst`` (default ``limit``):

- a subject starts with a full bucket: ``B`` requests may arrive at once, then one more every ``T``;
- any window of length ``W`` admits at most ``B + W / T`` requests (so ``B + limit`` per ``period``, and with
  ``burst=1`` no more than ``limit`` per half-open window of ``period``);
- a refused request consumes nothing, and retrying after ``retry_after_seconds`` is admitted (absent others).

The arithmetic is on integer microseconds: exact in Python, and exact in Redis' Lua, whose numbers are doubles
(integers are exact below 2**53; epoch microseconds are about 2**51). ``T`` is rounded UP to a whole
microsecond, so rounding can only make a limit stricter by at most one microsecond per request, never looser.

This module is plain Python: the adapters (in-process, Redis) implement the ports; the gate decides what to
answer, including what to do when the store is unreachable (``LimitStoreUnavailable``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from techno_core.errors import QuotaViolation, ResourceExhausted, Unavailable
from techno_gate.domain.reasons import Reason

MICROS = 1_000_000


@dataclass(frozen=True)
class RateLimit:
    """``limit`` requests per ``period_seconds``, at most ``burst`` of them at once.

    ``name`` is what a client sees in ``QuotaFailure.Violation.subject``, e.g.
    ``"key:key_abc/requests_per_minute"``.
    """

    name: str
    limit: int
    period_seconds: float
    burst: int | None = None

    def __post_init__(self) -> None:
        # Raised, not asserted: limits come from configuration, and a zero limit would divide by zero later.
        if self.limit < 1:
            raise ValueError(f"rate limit {self.name!r}: limit must be at least 1, got {self.limit}")
        if not self.period_seconds > 0:
            raise ValueError(f"rate limit {self.name!r}: period must be positive, got {self.period_seconds}")
        if self.burst is not None and self.burst < 1:
            raise ValueError(f"rate limit {self.name!r}: burst must be at least 1, got {self.burst}")

    @property
    def effective_burst(self) -> int:
        return self.limit if self.burst is None else self.burst

    @property
    def emission_interval_us(self) -> int:
        """``T``: one request's worth of time. Rounded up so the rounding never admits more than configured."""
        return max(1, math.ceil(self.period_seconds * MICROS / self.limit))

    @property
    def capacity_us(self) -> int:
        """``B * T``: how far ahead of now the TAT may run; admitting needs ``new_tat - now <= capacity``."""
        return self.effective_burst * self.emission_interval_us


@dataclass(frozen=True)
class LimitDecision:
    """The answer for one request. ``remaining`` is how many more requests would be admitted right after this
    one; ``retry_after_seconds`` is 0 when allowed; ``reset_after_seconds`` is when the bucket is full again."""

    allowed: bool
    limit: RateLimit
    remaining: int
    retry_after_seconds: float
    reset_after_seconds: float


@dataclass(frozen=True)
class GcraResult:
    """The outcome in microseconds, plus the TAT to store (``None``: store nothing — refused or a peek)."""

    allowed: bool
    remaining: int
    retry_after_us: int
    reset_after_us: int
    new_tat_us: int | None


def gcra(tat_us: int | None, now_us: int, emission_interval_us: int, capacity_us: int) -> GcraResult:
    """One GCRA step: is a request at ``now_us`` admitted, given the stored TAT (``None``: never seen)?

    This is the single definition of the algorithm; the Redis Lua script is a line-by-line transcription.
    """
    # A TAT in the past means the bucket is full; the clock never lets unused time accumulate beyond it.
    tat = now_us if tat_us is None or tat_us < now_us else tat_us
    new_tat = tat + emission_interval_us
    allow_at = new_tat - capacity_us
    if now_us < allow_at:
        # Refused: nothing changes, so a client hammering a closed limit does not push its own reset further.
        return GcraResult(False, 0, allow_at - now_us, tat - now_us, None)
    remaining = (now_us - allow_at) // emission_interval_us
    return GcraResult(True, remaining, 0, new_tat - now_us, new_tat)


def decision(limit: RateLimit, result: GcraResult) -> LimitDecision:
    return LimitDecision(
        allowed=result.allowed,
        limit=limit,
        remaining=result.remaining,
        retry_after_seconds=result.retry_after_us / MICROS,
        reset_after_seconds=result.reset_after_us / MICROS,
    )


@dataclass(frozen=True)
class ConcurrencyLimit:
    """At most ``max_in_flight`` requests of a subject at a time; ``name`` as in ``RateLimit``."""

    name: str
    max_in_flight: int

    def __post_init__(self) -> None:
        if self.max_in_flight < 1:
            raise ValueError(f"concurrency limit {self.name!r}: max_in_flight must be at least 1")


class Lease(Protocol):
    """One admitted in-flight request. ``release`` is idempotent and never raises: a lease that cannot be
    returned to its store (store down) is reclaimed by the store's own expiry."""

    async def release(self) -> None: ...


class LimitStoreUnavailable(Exception):
    """The limit store cannot be reached; the gate chooses to fail closed (default) or open."""


class RateLimiter(Protocol):
    async def acquire(self, subject: str, limit: RateLimit) -> LimitDecision:
        """Admits or refuses one request of ``subject`` (the bucket's identity: one bucket per subject).
        Consumes one unit when allowed, never when refused. Raises ``LimitStoreUnavailable``."""
        ...

    async def peek(self, subject: str, limit: RateLimit) -> LimitDecision:
        """What ``acquire`` would answer now, consuming nothing (for dry runs). Raises
        ``LimitStoreUnavailable``."""
        ...


class ConcurrencyLimiter(Protocol):
    async def enter(self, subject: str, limit: ConcurrencyLimit) -> Lease | None:
        """A lease on one of ``limit.max_in_flight`` slots of ``subject``, or ``None`` when all are taken.
        Raises ``LimitStoreUnavailable``."""
        ...


# The errors the gate answers with: RESOURCE_EXHAUSTED (HTTP 429 at the edge) carrying RetryInfo and a
# QuotaFailure that names the limit and when it resets.


def _seconds(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


def rate_limited(refused: LimitDecision) -> ResourceExhausted:
    limit = refused.limit
    return ResourceExhausted(
        reason=Reason.RATE_LIMITED,
        message=f"rate limit {limit.name} exceeded; retry in {_seconds(refused.retry_after_seconds)}s",
        retry_after_seconds=refused.retry_after_seconds,
        quota_violations=[
            QuotaViolation(
                subject=limit.name,
                description=(
                    f"{limit.limit} requests per {_seconds(limit.period_seconds)}s "
                    f"(burst {limit.effective_burst}); resets in {_seconds(refused.reset_after_seconds)}s"
                ),
            )
        ],
    )


def concurrency_limited(limit: ConcurrencyLimit, *, retry_after_seconds: float = 1.0) -> ResourceExhausted:
    """A slot frees when some in-flight request ends, which nobody can predict: ``retry_after_seconds`` is a
    hint to back off, not a promise."""
    return ResourceExhausted(
        reason=Reason.CONCURRENCY_LIMITED,
        message=f"concurrency limit {limit.name} reached; retry in {_seconds(retry_after_seconds)}s",
        retry_after_seconds=retry_after_seconds,
        quota_violations=[
            QuotaViolation(
                subject=limit.name,
                description=f"at most {limit.max_in_flight} requests in flight; resets when one finishes",
            )
        ],
    )


def limits_unavailable() -> Unavailable:
    """The answer when the store is unreachable and the gate fails closed."""
    return Unavailable(reason=Reason.LIMITS_UNAVAILABLE, message="rate limits cannot be checked; retry later")
