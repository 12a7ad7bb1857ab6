"""Faults a fake provider injects, switchable at run time so operators can rehearse incidents."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FaultProfile:
    """What a fake provider does wrong. Rates are shares of calls between 0 and 1, drawn per call."""

    latency_ms: int = 0
    latency_jitter_ms: int = 0
    error_rate: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after_seconds: int = 1
    timeout_rate: float = 0.0
    hang_rate: float = 0.0

    def problems(self) -> list[tuple[str, str]]:
        """(field, why) for every out-of-range value; empty when valid."""
        found = [
            (name, "must be between 0 and 1")
            for name in ("error_rate", "rate_limit_rate", "timeout_rate", "hang_rate")
            if not 0.0 <= getattr(self, name) <= 1.0
        ]
        if self.error_rate + self.rate_limit_rate + self.timeout_rate + self.hang_rate > 1.0:
            found.append(("error_rate", "the rates add up to more than 1"))
        found += [
            (name, "must not be negative")
            for name in ("latency_ms", "latency_jitter_ms", "retry_after_seconds")
            if getattr(self, name) < 0
        ]
        return found


@dataclass(frozen=True)
class StreamShape:
    """How a fake provider streams: pieces of ``chunk_chars`` characters, ``chunk_delay_ms`` apart. With
    ``fault_after_chunks`` > 0 the fault drawn for a call strikes after that many pieces instead of before the
    first: an error or a hang in the middle of an answer, the failure streaming callers must survive."""

    chunk_chars: int = 16
    chunk_delay_ms: int = 0
    fault_after_chunks: int = 0

    def problems(self) -> list[tuple[str, str]]:
        found = [("chunk_chars", "must be at least 1")] if self.chunk_chars < 1 else []
        return found + [
            (name, "must not be negative")
            for name in ("chunk_delay_ms", "fault_after_chunks")
            if getattr(self, name) < 0
        ]


class FaultSwitch:
    """The faults in force for one fake provider; ``replace`` takes effect on the next call."""

    def __init__(self, profile: FaultProfile | None = None) -> None:
        self._profile = profile or FaultProfile()

    @property
    def current(self) -> FaultProfile:
        return self._profile

    def replace(self, profile: FaultProfile) -> None:
        self._profile = profile
