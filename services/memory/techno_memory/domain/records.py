"""The two kinds of records the memory service keeps."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class AuditEventKind(StrEnum):
    DECISION = "DECISION"
    OUTCOME = "OUTCOME"


@dataclass(frozen=True)
class AuditEvent:
    """One immutable entry of the audit trail. ``recorded_at`` is None until the event is stored: it is the time of
    the transaction that stored it, by this service's clock (``occurred_at`` is the writer's)."""

    event_id: str
    trace_id: str
    kind: AuditEventKind
    occurred_at: datetime
    service: str
    principal_id: str = ""
    action: str = ""
    context_id: str = ""
    result: str = ""
    reason_codes: tuple[str, ...] = ()
    attributes: dict[str, Any] = field(default_factory=dict)
    recorded_at: datetime | None = None


@dataclass(frozen=True)
class NewApiKey:
    """What an operator tool sends to register a key: never the key itself, only its SHA-256."""

    key_id: str
    prefix: str
    key_hash: str
    name: str
    profile: str


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    prefix: str
    key_hash: str
    name: str
    profile: str
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None
