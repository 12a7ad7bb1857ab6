"""Circuit breaker: stop calling a provider that keeps failing, and probe it again after a cooldown.

States follow resilience4j's machine:

- CLOSED lets every call through. It opens when ``failure_threshold`` calls in a row failed, or when, over a
  count-based sliding window of the last ``window_size`` calls (once it holds at least ``minimum_calls``), the
  share of failed calls reaches ``failure_rate_threshold`` or the share of slow calls (``slow_call_seconds`` or
  longer, failed or not) reaches ``slow_call_rate_threshold``.
- OPEN rejects every call for ``open_seconds``; the next call after that finds it HALF_OPEN.
- HALF_OPEN lets at most ``half_open_max_calls`` probe calls through. Any probe failure (or slow probe, when
  the slow-call rule is on) opens the circuit again for a full cooldown; once ``half_open_max_calls`` probes
  have succeeded it closes, with an empty window.
- FORCED_OPEN / FORCED_CLOSED are set by an operator (``force_open`` / ``force_closed``) and hold until
  ``reset``: forced open rejects everything, forced closed lets everything through and records nothing.

Each allowed call holds a ``Permit`` stamped with the breaker's generation (bumped on every transition).
Outcomes of calls granted before the latest transition are ignored, so a slow call that started while CLOSED
cannot close a circuit that has opened since, nor use up a half-open probe slot.

Not thread-safe by design: it lives on one event loop and none of its methods await, so no lock is needed.
Listeners are called synchronously on the task that caused the transition, so they see its trace.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


class CircuitState(enum.Enum):
    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"
    FORCED_OPEN = "forced_open"
    FORCED_CLOSED = "forced_closed"

    @property
    def gauge_value(self) -> int:
        """The reading of ``llm_circuit_breaker_state`` (0 closed, 1 half-open, 2 open): what the breaker does
        to calls, forced or not (``llm_circuit_transitions_total`` tells forced states apart)."""
        return _GAUGE[self]

    @property
    def forced(self) -> bool:
        return self in (CircuitState.FORCED_OPEN, CircuitState.FORCED_CLOSED)

    @property
    def rejects(self) -> bool:
        return self in (CircuitState.OPEN, CircuitState.FORCED_OPEN)


_GAUGE = {
    CircuitState.CLOSED: 0,
    CircuitState.HALF_OPEN: 1,
    CircuitState.OPEN: 2,
    CircuitState.FORCED_OPEN: 2,
    CircuitState.FORCED_CLOSED: 0,
}

StateListener = Callable[[str, CircuitState, CircuitState], None]
"""Called with (breaker name, old state, new state) on every transition, for metrics, logs and audit."""


def fan_out(*listeners: StateListener | None) -> StateListener:
    """One listener calling several in order; a listener that raises does not silence the others."""
    active = [listener for listener in listeners if listener is not None]

    def notify(name: str, old: CircuitState, new: CircuitState) -> None:
        errors: list[Exception] = []
        for listener in active:
            try:
                listener(name, old, new)
            except Exception as error:  # a failing listener must not silence the others
                errors.append(error)
        if errors:
            raise errors[0]

    return notify


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


@dataclass(frozen=True)
class BreakerSnapshot:
    """What the admin API reports about one breaker."""

    name: str
    state: CircuitState
    retry_after: float
    failure_rate: float
    slow_call_rate: float
    consecutive_failures: int
    calls_in_window: int


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 3,
        open_seconds: float = 60.0,
        half_open_max_calls: int = 1,
        failure_rate_threshold: float = 0.5,
        slow_call_rate_threshold: float = 1.0,
        slow_call_seconds: float = 10.0,
        window_size: int = 20,
        minimum_calls: int = 10,
        busy_retry_after: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        on_state_change: StateListener | None = None,
    ) -> None:
        if failure_threshold < 1 or half_open_max_calls < 1 or open_seconds < 0 or busy_retry_after < 0:
            raise ValueError("failure_threshold and half_open_max_calls must be >= 1, durations >= 0")
        if not (0 < failure_rate_threshold <= 1 and 0 < slow_call_rate_threshold <= 1):
            raise ValueError("rate thresholds must be within (0, 1]")
        if window_size < 1 or not 1 <= minimum_calls <= window_size or slow_call_seconds <= 0:
            raise ValueError("window_size >= 1, 1 <= minimum_calls <= window_size, slow_call_seconds > 0")
        self.name = name
        self._threshold = failure_threshold
        self._open_seconds = open_seconds
        self._max_probes = half_open_max_calls
        self._failure_rate_threshold = failure_rate_threshold
        self._slow_rate_threshold = slow_call_rate_threshold
        self._slow_seconds = slow_call_seconds
        self._minimum_calls = minimum_calls
        # While the probe slots are taken, callers are told to come back soon: the probes decide shortly.
        self._busy_retry_after = busy_retry_after
        self._clock = clock
        self._listener = on_state_change
        self._state = CircuitState.CLOSED
        self._generation = 0
        self._failures = 0
        self._opened_at = 0.0
        self._probes = 0
        self._probe_successes = 0
        # (failed, slow) of the last ``window_size`` calls with a verdict.
        self._window: deque[tuple[bool, bool]] = deque(maxlen=window_size)

    @property
    def state(self) -> CircuitState:
        """The recorded state. An OPEN circuit whose cooldown has passed turns HALF_OPEN on the next ``allow``."""
        return self._state

    @property
    def open_seconds(self) -> float:
        return self._open_seconds

    def retry_after(self) -> float:
        """Seconds until a call may be let through: what is left of the cooldown while OPEN, the full cooldown
        while FORCED_OPEN (a hint: only an operator closes it), a short wait while the probe slots are taken."""
        if self._state is CircuitState.OPEN:
            return max(0.0, self._opened_at + self._open_seconds - self._clock())
        if self._state is CircuitState.FORCED_OPEN:
            return self._open_seconds
        if self._state is CircuitState.HALF_OPEN and self._probes >= self._max_probes:
            return self._busy_retry_after
        return 0.0

    def failure_rate(self) -> float:
        """Share of failed calls in the window; 0 until it holds ``minimum_calls`` calls."""
        if len(self._window) < self._minimum_calls:
            return 0.0
        return sum(failed for failed, _ in self._window) / len(self._window)

    def slow_call_rate(self) -> float:
        """Share of slow calls in the window; 0 until it holds ``minimum_calls`` calls."""
        if len(self._window) < self._minimum_calls:
            return 0.0
        return sum(slow for _, slow in self._window) / len(self._window)

    def snapshot(self) -> BreakerSnapshot:
        return BreakerSnapshot(
            name=self.name,
            state=self._state,
            retry_after=self.retry_after(),
            failure_rate=self.failure_rate(),
            slow_call_rate=self.slow_call_rate(),
            consecutive_failures=self._failures,
            calls_in_window=len(self._window),
        )

    def allow(self) -> Permit:
        """A permit for one call, or ``CircuitOpenError`` (the caller must not call the provider then)."""
        if self._state is CircuitState.FORCED_OPEN:
            raise CircuitOpenError(self.name, self.retry_after())
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

    def record_success(self, permit: Permit, *, seconds: float | None = None) -> None:
        """The call succeeded; ``seconds`` is how long it took (None: not known, never slow)."""
        self._record(permit, failed=False, slow=self._is_slow(seconds))

    def record_failure(self, permit: Permit, *, seconds: float | None = None) -> None:
        self._record(permit, failed=True, slow=self._is_slow(seconds))

    def release(self, permit: Permit) -> None:
        """The call ended without saying anything about the provider (cancelled, or the caller's own fault)."""
        if self._current(permit) and permit.probe:
            self._probes -= 1

    def force_open(self) -> None:
        """Reject every call until ``reset`` (an operator taking a provider out)."""
        self._transition(CircuitState.FORCED_OPEN)

    def force_closed(self) -> None:
        """Let every call through, whatever happens, until ``reset``."""
        self._transition(CircuitState.FORCED_CLOSED)

    def reset(self) -> None:
        """Back to CLOSED with an empty window and no failure count."""
        self._window.clear()
        self._transition(CircuitState.CLOSED)

    def _is_slow(self, seconds: float | None) -> bool:
        return seconds is not None and seconds >= self._slow_seconds

    def _record(self, permit: Permit, *, failed: bool, slow: bool) -> None:
        if not self._current(permit) or self._state.forced:
            return
        if permit.probe:
            # A slow probe counts only when the slow-call rule is on (a threshold of 1 means "off" by default).
            if failed or (slow and self._slow_rate_threshold < 1.0):
                self._open()
                return
            self._probe_successes += 1
            if self._probe_successes >= self._max_probes:
                self._window.clear()
                self._transition(CircuitState.CLOSED)
            return
        self._window.append((failed, slow))
        self._failures = self._failures + 1 if failed else 0
        if (
            self._failures >= self._threshold
            or (failed and self._over(self.failure_rate(), self._failure_rate_threshold))
            or (slow and self._over(self.slow_call_rate(), self._slow_rate_threshold))
        ):
            self._open()

    def _over(self, rate: float, threshold: float) -> bool:
        return len(self._window) >= self._minimum_calls and rate >= threshold

    def _current(self, permit: Permit) -> bool:
        return permit.generation == self._generation

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._window.clear()
        self._transition(CircuitState.OPEN)

    def _transition(self, new: CircuitState) -> None:
        old, self._state = self._state, new
        self._generation += 1
        self._failures = 0
        self._probes = 0
        self._probe_successes = 0
        if self._listener is not None and old is not new:
            self._listener(self.name, old, new)
