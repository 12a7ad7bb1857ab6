"""Configuration of the executor (``TECHNO_*`` environment variables)."""

from __future__ import annotations

import os
import socket

from pydantic import Field

from techno_core.settings import GrpcServerSettings, MemoryClientSettings, TechnoSettings
from techno_executor.action_settings import ActionSettings
from techno_executor.fault_settings import FaultSettings
from techno_executor.provider_settings import ProviderSettings
from techno_executor.resilience_settings import ResilienceSettings


def _default_executor_id() -> str:
    # Computed when settings are built, never at import time, so a forked worker gets its own pid.
    return f"{socket.gethostname()}-{os.getpid()}"


class ExecutorSettings(
    TechnoSettings,
    GrpcServerSettings,
    MemoryClientSettings,
    ResilienceSettings,
    FaultSettings,
    ProviderSettings,
    ActionSettings,
):
    executor_port: int = Field(50052, ge=0, le=65535, description="gRPC port of the executor (0 picks a free one).")
    executor_health_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Plaintext port serving only gRPC health (`liveness`, `readiness`), for Kubernetes' gRPC "
        "probes. Default: the gRPC port + 10 (50062), or a free port when the gRPC port is 0.",
    )
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
    executor_memory_timeout_seconds: float = Field(
        2.0, gt=0, description="Ceiling of a call to memory for a session or preferences; the deadline lowers it."
    )
    executor_preferences_cache_seconds: float = Field(
        10.0,
        ge=0,
        description="How long a caller's preferences are reused before memory is asked again (0: never cached).",
    )

    @property
    def health_port(self) -> int:
        if self.executor_health_port is not None:
            return self.executor_health_port
        return self.executor_port + 10 if self.executor_port else 0
