"""Retry of provider calls: exponential backoff with full jitter, bounded by attempts and by the deadline.

Only failures where another try can help are retried: rate limiting (after the provider's Retry-After), server
errors and connection errors. A timeout is never retried (see ``ProviderTimeout``). The policy never sleeps
into the caller's deadline: when the next wait would reach it, it gives up at once, so the caller learns the
real cause instead of a bare DEADLINE_EXCEEDED.

Retries are also throttled per provider, as gRPC's retry design does (``RetryBudget``): every retryable failure
costs a token, every success earns back a fraction of one, and retries are allowed only while more than half of
the tokens are left. When a provider is down the tokens run out after a few failures and every execution makes
one attempt (then falls back, or fails), instead of multiplying the load on a vendor that is already failing.
"""

from __future__ import annotations

import asyncio
import enum
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from techno_executor.domain.provider import (
    ProviderConnectionError,
    ProviderError,
    ProviderRateLimited,
    ProviderServerError,
)

T = TypeVar("T")

RETRYABLE: tuple[type[ProviderError], ...] = (ProviderRateLimited, ProviderServerError, ProviderConnectionError)


class StopReason(enum.Enum):
    NOT_RETRYABLE = "not_retryable"
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"
    DEADLINE = "deadline"
    RETRY_AFTER_TOO_LONG = "retry_after_too_long"
    THROTTLED = "throttled"


class RetryBudget:
    """gRPC-style retry throttling for one provider. ``tokens`` start at ``max_tokens``; each retryable failure
    takes 1 away, each success adds ``token_ratio``; a retry is allowed only while ``tokens > max_tokens / 2``.

    With the defaults (10, 0.1) a provider that fails every call loses its retries after 5 failed attempts, and
    needs 10 successes per failure to earn them back: retries only help a mostly healthy provider."""

    def __init__(self, max_tokens: float = 10.0, token_ratio: float = 0.1) -> None:
        if max_tokens <= 0 or token_ratio <= 0:
            raise ValueError("max_tokens and token_ratio must be > 0")
        self.max_tokens = max_tokens
        self.token_ratio = token_ratio
        self._tokens = max_tokens

    @property
    def tokens(self) -> float:
        return self._tokens

    def allows_retry(self) -> bool:
        return self._tokens > self.max_tokens / 2

    def record_failure(self) -> None:
        self._tokens = max(0.0, self._tokens - 1.0)

    def record_success(self) -> None:
        self._tokens = min(self.max_tokens, self._tokens + self.token_ratio)


@dataclass(frozen=True)
class AttemptReport:
    """One finished attempt, for the trace: ``error`` is None on success; ``wait`` is the backoff before the
    next attempt (None when there is none); ``stop`` says why there is none after a failure."""

    number: int
    error: ProviderError | None
    wait: float | None = None
    stop: StopReason | None = None


AttemptListener = Callable[[AttemptReport], None]


class GaveUp(Exception):
    """The policy stopped retrying; ``last_error`` is the provider's final failure (also the ``__cause__``)."""

    def __init__(self, last_error: ProviderError, *, attempts: int, reason: StopReason) -> None:
        super().__init__(f"gave up after {attempts} attempt(s) ({reason.value}): {last_error}")
        self.last_error = last_error
        self.attempts = attempts
        self.reason = reason


@dataclass(frozen=True)
class Attempted(Generic[T]):
    value: T
    attempts: int


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    initial_backoff_seconds: float = 0.2
    max_backoff_seconds: float = 5.0
    # Injectable for tests: a fake sleep advances a fake clock; ``random`` returns a float in [0, 1).
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    random: Callable[[], float] = field(default=random.random)
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.initial_backoff_seconds < 0 or self.max_backoff_seconds < 0:
            raise ValueError("max_attempts must be >= 1 and backoffs >= 0")

    def backoff(self, retry: int) -> float:
        """Wait before retry number ``retry`` (1 = the first retry): uniform in [0, min(max, initial * 2^(retry-1))).
        Full jitter spreads the retries of many callers hit by the same outage, instead of synchronising them."""
        exponent = min(retry - 1, 62)  # keeps 2**exponent a float-safe number for absurd retry counts
        ceiling = min(self.max_backoff_seconds, self.initial_backoff_seconds * 2.0**exponent)
        return self.random() * ceiling

    async def run(
        self,
        attempt: Callable[[], Awaitable[T]],
        *,
        deadline: float | None,
        budget: RetryBudget | None = None,
        on_attempt: AttemptListener | None = None,
    ) -> Attempted[T]:
        """Call ``attempt`` until it succeeds or the policy gives up (``GaveUp``). ``deadline`` is an instant on
        ``clock`` (None: no deadline); ``budget`` throttles retries (None: not throttled); ``on_attempt`` hears
        of every finished attempt. Exceptions other than ``ProviderError`` pass through untouched."""
        number = 1
        while True:
            try:
                value = await attempt()
            except ProviderError as error:
                if budget is not None and isinstance(error, RETRYABLE):
                    budget.record_failure()
                try:
                    delay = self._delay_before_retry(error, number, deadline, budget)
                except GaveUp as gave_up:
                    if on_attempt is not None:
                        on_attempt(AttemptReport(number, error, stop=gave_up.reason))
                    raise
                if on_attempt is not None:
                    on_attempt(AttemptReport(number, error, wait=delay))
            else:
                if budget is not None:
                    budget.record_success()
                if on_attempt is not None:
                    on_attempt(AttemptReport(number, None))
                return Attempted(value, number)
            await self.sleep(delay)
            number += 1

    def _delay_before_retry(
        self, error: ProviderError, number: int, deadline: float | None, budget: RetryBudget | None
    ) -> float:
        def stop(reason: StopReason) -> GaveUp:
            gave_up = GaveUp(error, attempts=number, reason=reason)
            gave_up.__cause__ = error
            return gave_up

        if not isinstance(error, RETRYABLE):
            raise stop(StopReason.NOT_RETRYABLE)
        if number >= self.max_attempts:
            raise stop(StopReason.ATTEMPTS_EXHAUSTED)
        if budget is not None and not budget.allows_retry():
            raise stop(StopReason.THROTTLED)
        delay = self.backoff(number)
        if isinstance(error, ProviderRateLimited) and error.retry_after is not None:
            # Retrying before the vendor's Retry-After only earns another 429; waiting longer than our own
            # ceiling would hold the caller for a throttle we cannot shorten, so give up and pass the hint on.
            if error.retry_after > self.max_backoff_seconds:
                raise stop(StopReason.RETRY_AFTER_TOO_LONG)
            delay = max(delay, error.retry_after)
        if deadline is not None and self.clock() + delay >= deadline:
            raise stop(StopReason.DEADLINE)
        return delay
