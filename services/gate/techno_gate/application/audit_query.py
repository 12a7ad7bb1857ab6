"""Reading the audit trail (the ``audit:read`` scope): filtered, paged, oldest first. The memory service does the
filtering and paging; the gate's part is who may read."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class AuditQuery:
    trace_id: str = ""
    principal_id: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None
    page_size: int = 0
    page_token: str = ""


@dataclass(frozen=True)
class AuditEventView:
    event_id: str
    trace_id: str
    kind: str
    occurred_at: datetime | None
    recorded_at: datetime | None
    service: str
    principal_id: str
    action: str
    context_id: str
    result: str
    reason_codes: tuple[str, ...]
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditPage:
    events: tuple[AuditEventView, ...]
    next_page_token: str


class AuditReader(Protocol):
    async def list_events(self, query: AuditQuery) -> AuditPage: ...


@dataclass
class AuditTrail:
    """Its caller is checked for the scope of ListAuditEvents before it asks (``entrypoints.admin_grpc``)."""

    reader: AuditReader

    async def list(self, query: AuditQuery) -> AuditPage:
        return await self.reader.list_events(query)
