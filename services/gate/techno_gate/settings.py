"""Configuration of the gate (``TECHNO_*`` environment variables)."""

from __future__ import annotations

import os
import socket

from pydantic import Field

from techno_core.settings import ExecutorClientSettings, GrpcServerSettings, MemoryClientSettings, TechnoSettings
from techno_gate.limit_settings import LimitSettings
from techno_gate.token_settings import TokenSettings


def _default_gate_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class GateSettings(
    TechnoSettings, GrpcServerSettings, MemoryClientSettings, ExecutorClientSettings, TokenSettings, LimitSettings
):
    gate_port: int = Field(50051, ge=0, le=65535, description="gRPC port of the gate (0 picks a free one).")
    gate_health_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Plaintext port serving only gRPC health (`liveness`, `readiness`), for Kubernetes' gRPC "
        "probes. Default: the gRPC port + 10 (50061), or a free port when the gRPC port is 0.",
    )
    gate_metrics_port: int = Field(9101, ge=0, le=65535, description="Port of the gate's Prometheus `/metrics`.")
    gate_id: str = Field(
        default_factory=_default_gate_id, description="Name of this gate replica in metrics and audit events."
    )
    gate_policy_file: str = Field("config/policy.yaml", description="YAML policy: actions, profiles, contexts.")
    gate_policy_watch_seconds: float = Field(
        2.0,
        ge=0,
        description="How often the gate checks the policy file's content and applies a change (a ConfigMap "
        "update) without SIGHUP; 0 turns the watch off.",
    )
    gate_key_refresh_seconds: float = Field(
        0.5, gt=0, description="How often the key cache asks memory for changed keys (the revocation lag)."
    )
    gate_key_cache_max_age_seconds: float = Field(
        30.0, gt=0, description="Older than this, the key cache is stale: the gate reports NOT_SERVING."
    )
    gate_audit_timeout_seconds: float = Field(
        2.0, gt=0, description="Longest wait for memory to commit a decision before denying (fail closed)."
    )
    gate_outbox_capacity: int = Field(
        10_000,
        gt=0,
        description="Most outcomes the gate keeps while memory cannot commit them (sent again until it does); "
        "when full the oldest is dropped and counted, and memory's reconciler closes its decision as UNKNOWN.",
    )
    gate_executor_timeout_seconds: float = Field(
        60.0, gt=0, description="Ceiling of an executor call; the caller's deadline lowers it."
    )
    gate_max_payload_bytes: int = Field(
        262_144, gt=0, description="Largest accepted payload, measured as serialized protobuf bytes."
    )

    @property
    def health_port(self) -> int:
        if self.gate_health_port is not None:
            return self.gate_health_port
        return self.gate_port + 10 if self.gate_port else 0
