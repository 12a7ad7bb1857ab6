"""Configuration of the executor (``TECHNO_*`` environment variables)."""

from __future__ import annotations

import os
import socket

from pydantic import Field

from techno_core.settings import GrpcServerSettings, TechnoSettings


def _default_executor_id() -> str:
    # Computed when settings are built, never at import time, so a forked worker gets its own pid.
    return f"{socket.gethostname()}-{os.getpid()}"


class ExecutorSettings(TechnoSettings, GrpcServerSettings):
    executor_port: int = Field(50052, ge=0, le=65535, description="gRPC port of the executor (0 picks a free one).")
    executor_metrics_port: int = Field(
        9102, ge=0, le=65535, description="Port of the executor's Prometheus `/metrics`."
    )
    executor_id: str = Field(
        default_factory=_default_executor_id,
        description="Name of this executor replica in answers and metrics (default: hostname-pid).",
    )
    executor_provider_timeout_seconds: float = Field(
        30.0, gt=0, description="Ceiling of one provider call; the caller's remaining deadline lowers it."
    )
    executor_retry_max_attempts: int = Field(
        3, ge=1, description="Provider calls per execution, first one included (3 means up to 2 retries)."
    )
    executor_retry_initial_backoff_seconds: float = Field(
        0.2, ge=0, description="Backoff ceiling before the first retry; it doubles per retry (full jitter)."
    )
    executor_retry_max_backoff_seconds: float = Field(
        5.0,
        ge=0,
        description="Largest backoff between retries; a provider asking for a longer Retry-After is not retried.",
    )
    cb_threshold: int = Field(
        3, ge=1, description="Consecutive failed executions of a provider that open its circuit breaker."
    )
    cb_timeout: float = Field(
        60.0, gt=0, description="Seconds an open circuit rejects calls before it lets one probe call through."
    )
    fake_latency_ms: int = Field(0, ge=0, description="Latency the fake provider adds to each call, in milliseconds.")
    fake_error_rate: float = Field(
        0.0, ge=0, le=1, description="Share of fake provider calls that fail with a server error (0 to 1)."
    )
    fake_seed: int | None = Field(
        None, description="Seed of the fake provider's error draws, for reproducible failures (unset: random)."
    )
