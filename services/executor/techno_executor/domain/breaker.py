"""Circuit breaker: stop calling a provider that keeps failing, and probe it again after a cooldown.

States follow the usual machine (as in resilience4j): CLOSED lets every call through and counts consecutive
failures; after ``failure_threshold`` of them it goes OPEN and rejects calls for ``open_seconds``; then the next
call finds it HALF_OPEN, where at most ``half_open_max_calls`` probe calls run at once. A probe success closes
the circuit, a probe failure opens it again for another cooldown.

Each allowed call holds a ``Permit`` stamped with the breaker's generation (bumped on every transition).
Outcomes of calls granted before the latest transition are ignored, so a slow call that started while CLOSED
cannot close a circuit that has opened since, nor use up a half-open probe slot.

Not thread-safe by design: it lives on one event loop and none of its methods await, so no lock is needed.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass


class CircuitState(enum.Enum):
    """The value is the gauge reading operators chart (0 closed, 1 half-open, 2 open)."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


StateListener = Callable[[str, CircuitState, CircuitState], None]
"""Called with (breaker name, old state, new state) on every transition, for metrics and logs."""


class CircuitOpenError(Exception):
    """The breaker rejected a call; ``retry_after`` is the number of seconds worth waiting."""

    def __init__(self, name: str, retry_after: float) -> None:
        super().__init__(f"circuit of {name} is open; retry after {retry_after:.1f}s")
        self.name = name
        self.retry_after = retry_after


@dataclass(frozen=True)
class Permit:
    """Permission for one call; hand it back with exactly one of record_success / record_failure / release."""

    generation: int
    probe: bool


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 3,
        open_seconds: float = 60.0,
        half_open_max_calls: int = 1,
        busy_retry_after: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        on_state_change: StateListener | None = None,
    ) -> None:
        if failure_threshold < 1 or half_open_max_calls < 1 or open_seconds < 0 or busy_retry_after < 0:
            raise ValueError("failure_threshold and half_open_max_calls must be >= 1, durations >= 0")
        self.name = name
        self._threshold = failure_threshold
        self._open_seconds = open_seconds
        self._max_probes = half_open_max_calls
        # While the probe slots are taken, callers are told to come back soon: the probe decides shortly.
        self._busy_retry_after = busy_retry_after
        self._clock = clock
        self._listener = on_state_change
        self._state = CircuitState.CLOSED
        self._generation = 0
        self._failures = 0
        self._opened_at = 0.0
        self._probes = 0

    @property
    def state(self) -> CircuitState:
        """The recorded state. An OPEN circuit whose cooldown has passed turns HALF_OPEN on the next ``allow``."""
        return self._state

    def retry_after(self) -> float:
        """Seconds until a call may be let through: what is left of the cooldown while OPEN, else 0."""
        if self._state is CircuitState.OPEN:
            return max(0.0, self._opened_at + self._open_seconds - self._clock())
        if self._state is CircuitState.HALF_OPEN and self._probes >= self._max_probes:
            return self._busy_retry_after
        return 0.0

    def allow(self) -> Permit:
        """A permit for one call, or ``CircuitOpenError`` (the caller must not call the provider then)."""
        if self._state is CircuitState.OPEN:
            if self.retry_after() > 0:
                raise CircuitOpenError(self.name, self.retry_after())
            self._transition(CircuitState.HALF_OPEN)
        if self._state is CircuitState.HALF_OPEN:
            if self._probes >= self._max_probes:
                raise CircuitOpenError(self.name, self._busy_retry_after)
            self._probes += 1
            return Permit(self._generation, probe=True)
        return Permit(self._generation, probe=False)

    def record_success(self, permit: Permit) -> None:
        if not self._current(permit):
            return
        if permit.probe:
            self._transition(CircuitState.CLOSED)
        else:
            self._failures = 0

    def record_failure(self, permit: Permit) -> None:
        if not self._current(permit):
            return
        if permit.probe:
            self._open()
            return
        self._failures += 1
        if self._failures >= self._threshold:
            self._open()

    def release(self, permit: Permit) -> None:
        """The call ended without saying anything about the provider (cancelled, or the caller's own fault)."""
        if self._current(permit) and permit.probe:
            self._probes -= 1

    def _current(self, permit: Permit) -> bool:
        return permit.generation == self._generation

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._transition(CircuitState.OPEN)

    def _transition(self, new: CircuitState) -> None:
        old, self._state = self._state, new
        self._generation += 1
        self._failures = 0
        self._probes = 0
        if self._listener is not None and old is not new:
            self._listener(self.name, old, new)
