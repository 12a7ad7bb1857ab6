"""Reads for the outcome reconciler: allowed decisions in append order, and the outcomes of their traces."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import cast

from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from techno_memory.adapters.repository import _event, unavailable_when_unreachable
from techno_memory.adapters.tables import AuditEventRow
from techno_memory.domain.records import AuditEvent, AuditEventKind

_EVENTS = cast(Table, AuditEventRow.__table__)


class SqlDecisionLedger:
    """Implements ``DecisionLedger``. Every query is an index range scan: the primary key (append order), the
    (occurred_at, id) index, the trace_id index."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def last_id_before(self, occurred_at: datetime) -> int:
        """The id after which the events from ``occurred_at`` on start (the head's id when there are none, 0 on an
        empty trail): where a reconciler without a cursor begins."""
        first_since = (
            select(_EVENTS.c.id)
            .where(_EVENTS.c.occurred_at >= occurred_at)
            .order_by(_EVENTS.c.occurred_at, _EVENTS.c.id)
            .limit(1)
        )
        async with unavailable_when_unreachable(), self._engine.connect() as connection:
            first = (await connection.execute(first_since)).scalar_one_or_none()
            if first is not None:
                return int(first) - 1
            head = (await connection.execute(select(func.max(_EVENTS.c.id)))).scalar_one_or_none()
        return int(head or 0)

    async def allowed_decisions(self, *, after_id: int, limit: int) -> list[tuple[int, AuditEvent]]:
        query = (
            select(_EVENTS)
            .where(
                _EVENTS.c.id > after_id,
                _EVENTS.c.kind == AuditEventKind.DECISION.value,
                _EVENTS.c.result == "ALLOW",
            )
            .order_by(_EVENTS.c.id)
            .limit(limit)
        )
        async with unavailable_when_unreachable(), self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [(row.id, _event(row)) for row in rows]

    async def outcomes_of(self, trace_ids: Sequence[str]) -> list[AuditEvent]:
        if not trace_ids:
            return []
        query = select(_EVENTS).where(
            _EVENTS.c.trace_id.in_(sorted(set(trace_ids))), _EVENTS.c.kind == AuditEventKind.OUTCOME.value
        )
        async with unavailable_when_unreachable(), self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [_event(row) for row in rows]
