"""Audit records the gate writes: one decision before anything runs, one outcome after; admin operations."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class AuditKind(StrEnum):
    DECISION = "DECISION"
    OUTCOME = "OUTCOME"
    ADMIN = "ADMIN"


@dataclass(frozen=True)
class AuditRecord:
    trace_id: str
    kind: AuditKind
    principal_id: str
    action: str
    context_id: str
    result: str  # ALLOW / DENY for decisions, SUCCEEDED / FAILED for outcomes, REQUESTED … for admin operations
    reason_codes: tuple[str, ...]
    attributes: dict[str, Any]
    service: str = "gate"
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    occurred_at: datetime = field(default_factory=lambda: datetime.now(UTC))
