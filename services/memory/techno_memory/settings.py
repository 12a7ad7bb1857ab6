"""Configuration of the memory service (``TECHNO_*`` environment variables)."""

from __future__ import annotations

from pydantic import Field

from techno_core.settings import GrpcServerSettings, TechnoSettings
from techno_memory.domain.idempotency import MAX_LEASE


class MemorySettings(TechnoSettings, GrpcServerSettings):
    memory_port: int = Field(50053, ge=0, le=65535, description="gRPC port of the memory service (0 picks a free one).")
    memory_health_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Plaintext port serving only gRPC health (`liveness`, `readiness`), for Kubernetes' gRPC "
        "probes. Default: the gRPC port + 10 (50063), or a free port when the gRPC port is 0.",
    )
    memory_metrics_port: int = Field(
        9103, ge=0, le=65535, description="Port of the memory service's Prometheus `/metrics`."
    )
    memory_database_url: str = Field(
        "sqlite+aiosqlite:///var/memory.db",
        description=(
            "SQLAlchemy URL of the database: `sqlite+aiosqlite:///path` (a relative path is relative to the working "
            "directory; its parent directory is created) or `postgresql+psycopg://user@host/db`."
        ),
    )
    memory_pool_size: int = Field(5, gt=0, description="Connections kept open in the database pool.")
    memory_max_batch: int = Field(
        512, gt=0, description="Group commit: most audit events written in one database transaction."
    )
    memory_session_ttl_seconds: float = Field(
        8 * 3600,
        gt=0,
        description="A conversation session expires this long after its last use (every read or append slides it).",
    )
    memory_session_max_messages: int = Field(
        50, gt=0, description="Most messages kept per session; appending beyond it drops the oldest."
    )
    memory_session_sweep_seconds: float = Field(
        60,
        gt=0,
        description=(
            "How often expired sessions (with their messages) and expired idempotency records are deleted from the "
            "database."
        ),
    )
    memory_idempotency_retention_seconds: float = Field(
        24 * 3600,
        ge=MAX_LEASE.total_seconds(),
        description=(
            "How long an `Idempotency-Key` and its stored response are kept from its claim: repeats within it get "
            "the stored response; after it the key may be used afresh, and the sweeper deletes the record. At "
            "least 3600 (the longest claim lease)."
        ),
    )
    memory_reconcile_after_seconds: float = Field(
        300,
        gt=0,
        description=(
            "An allowed decision with no outcome this long after it was recorded is closed with an `UNKNOWN` "
            "outcome (`OUTCOME_LOST`). Keep it above the longest execution (`TECHNO_GATE_EXECUTOR_TIMEOUT_SECONDS`) "
            "plus the time a gate's outbox may keep retrying an outcome, or a late outcome follows an UNKNOWN one."
        ),
    )
    memory_reconcile_interval_seconds: float = Field(
        30, gt=0, description="How often each memory replica looks for allowed decisions left without an outcome."
    )
    memory_reconcile_lookback_seconds: float = Field(
        24 * 3600,
        gt=0,
        description=(
            "How far back a memory replica that just started looks for open decisions (afterwards it follows the "
            "trail from where it left off)."
        ),
    )

    @property
    def health_port(self) -> int:
        if self.memory_health_port is not None:
            return self.memory_health_port
        return self.memory_port + 10 if self.memory_port else 0
