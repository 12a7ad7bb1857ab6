"""Configuration of the fake provider's injected faults (``TECHNO_FAKE_*``): the profile it starts with.

A mixin of the executor's settings. At run time the admin RPC replaces the profile through the provider's
``FaultSwitch``; these values are only where it starts.
"""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings

from techno_core.settings import TECHNO_CONFIG
from techno_executor.domain.faults import FaultProfile, StreamShape

_RATES = ("error_rate", "rate_limit_rate", "timeout_rate", "hang_rate")


class FaultSettings(BaseSettings):
    """Mixin: the fake provider's initial fault profile and the seed of its draws."""

    model_config = TECHNO_CONFIG

    fake_latency_ms: int = Field(0, ge=0, description="Latency the fake provider adds to each call, in milliseconds.")
    fake_latency_jitter_ms: int = Field(
        0, ge=0, description="Uniform jitter around the fake provider's latency, ± this many milliseconds."
    )
    fake_error_rate: float = Field(
        0.0, ge=0, le=1, description="Share of fake provider calls that fail with a server error (503), 0 to 1."
    )
    fake_rate_limit_rate: float = Field(
        0.0, ge=0, le=1, description="Share of fake provider calls throttled (429 with Retry-After), 0 to 1."
    )
    fake_retry_after_seconds: int = Field(
        1, ge=0, description="Retry-After, in seconds, that the fake provider's throttled calls carry."
    )
    fake_timeout_rate: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of fake provider calls that answer only after their timeout, 0 to 1.",
    )
    fake_hang_rate: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of fake provider calls that never answer (until the caller gives up), 0 to 1.",
    )
    fake_seed: int | None = Field(
        None, description="Seed of the fake provider's fault draws, for reproducible failures (unset: random)."
    )

    fake_stream_chunk_chars: int = Field(
        16, ge=1, description="Characters per piece of the fake provider's streamed answers."
    )
    fake_stream_chunk_delay_ms: int = Field(
        0, ge=0, description="Pause between the pieces of the fake provider's streamed answers, in milliseconds."
    )
    fake_stream_fault_after_chunks: int = Field(
        0,
        ge=0,
        description="When above 0, a streamed call's injected fault strikes after this many pieces instead of "
        "before the first (an error or hang mid-stream).",
    )

    def stream_shape(self) -> StreamShape:
        """How the fake provider streams its answers."""
        return StreamShape(
            chunk_chars=self.fake_stream_chunk_chars,
            chunk_delay_ms=self.fake_stream_chunk_delay_ms,
            fault_after_chunks=self.fake_stream_fault_after_chunks,
        )

    def initial_faults(self) -> FaultProfile:
        """The fault profile the fake provider starts with."""
        return FaultProfile(
            latency_ms=self.fake_latency_ms,
            latency_jitter_ms=self.fake_latency_jitter_ms,
            error_rate=self.fake_error_rate,
            rate_limit_rate=self.fake_rate_limit_rate,
            retry_after_seconds=self.fake_retry_after_seconds,
            timeout_rate=self.fake_timeout_rate,
            hang_rate=self.fake_hang_rate,
        )

    @model_validator(mode="after")
    def _faults_are_valid(self) -> Self:
        problems = self.initial_faults().problems()
        if problems:
            raise ValueError("; ".join(_describe(field, why, self) for field, why in problems))
        return self


def _describe(field: str, why: str, settings: FaultSettings) -> str:
    if field in _RATES and "add up" in why:  # the sum of the rates, which FaultProfile reports on error_rate
        names = " + ".join(f"fake_{rate}" for rate in _RATES)
        total = sum(getattr(settings, f"fake_{rate}") for rate in _RATES)
        return f"{names} (TECHNO_FAKE_*_RATE) = {total:g}: {why}"
    return f"fake_{field} (TECHNO_FAKE_{field.upper()}): {why}"
