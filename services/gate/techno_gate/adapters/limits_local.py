"""In-process limits: the default, exact for one gate replica (every replica counts on its own).

Methods are ``async`` to match the ports but never await, so each call runs to completion on the event loop
without interleaving: no lock is needed. Not thread-safe, like everything else bound to the loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from techno_gate.domain.limits import ConcurrencyLimit, LimitDecision, RateLimit, decision, gcra

# Below this many subjects, never sweep: sweeping a small dict would cost more than it frees.
_MIN_SWEEP_SIZE = 1024


def monotonic_us() -> int:
    return time.monotonic_ns() // 1000


class LocalRateLimiter:
    """GCRA with one TAT per subject in a dict.

    Memory stays bounded by the subjects active within one refill time: a subject whose TAT has passed has a
    full bucket, exactly like one never seen, so dropping it changes no answer. The sweep runs when the dict
    has doubled since the last one, which keeps its cost amortized O(1) per request.
    """

    def __init__(self, *, clock: Callable[[], int] = monotonic_us) -> None:
        """``clock`` returns integer microseconds from any fixed origin (monotonic: wall-clock jumps would
        refill or drain buckets)."""
        self._clock = clock
        self._tats: dict[str, int] = {}
        self._sweep_at = _MIN_SWEEP_SIZE

    async def acquire(self, subject: str, limit: RateLimit) -> LimitDecision:
        now = self._clock()
        result = gcra(self._tats.get(subject), now, limit.emission_interval_us, limit.capacity_us)
        if result.new_tat_us is not None:
            self._tats[subject] = result.new_tat_us
            if len(self._tats) >= self._sweep_at:
                self._sweep(now)
        return decision(limit, result)

    async def peek(self, subject: str, limit: RateLimit) -> LimitDecision:
        result = gcra(self._tats.get(subject), self._clock(), limit.emission_interval_us, limit.capacity_us)
        return decision(limit, result)

    @property
    def tracked_subjects(self) -> int:
        return len(self._tats)

    def _sweep(self, now: int) -> None:
        self._tats = {subject: tat for subject, tat in self._tats.items() if tat > now}
        self._sweep_at = max(_MIN_SWEEP_SIZE, 2 * len(self._tats))


class _LocalLease:
    def __init__(self, limiter: LocalConcurrencyLimiter, subject: str) -> None:
        self._limiter = limiter
        self._subject = subject
        self._released = False

    async def release(self) -> None:
        # Idempotent: a second release must not free a slot another request holds.
        if not self._released:
            self._released = True
            self._limiter._leave(self._subject)


class LocalConcurrencyLimiter:
    """A counter per subject; subjects with nothing in flight are dropped, so memory follows the load."""

    def __init__(self) -> None:
        self._in_flight: dict[str, int] = {}

    async def enter(self, subject: str, limit: ConcurrencyLimit) -> _LocalLease | None:
        count = self._in_flight.get(subject, 0)
        if count >= limit.max_in_flight:
            return None
        self._in_flight[subject] = count + 1
        return _LocalLease(self, subject)

    def in_flight(self, subject: str) -> int:
        return self._in_flight.get(subject, 0)

    def _leave(self, subject: str) -> None:
        count = self._in_flight.get(subject, 0) - 1
        if count > 0:
            self._in_flight[subject] = count
        else:
            self._in_flight.pop(subject, None)
