"""Verifying the audit trail's hash chain as stored (see ``techno_memory.domain.chain``)."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Row, Table, select
from sqlalchemy.ext.asyncio import AsyncEngine

from techno_memory.adapters.tables import AuditEventRow
from techno_memory.domain.chain import ChainReport, ChainVerifier
from techno_memory.domain.records import AuditEvent, AuditEventKind

VERIFY_BATCH = 1000


async def verify_chain(engine: AsyncEngine, *, batch_size: int = VERIFY_BATCH) -> ChainReport:
    """Walk the whole audit trail in append (id) order, ``batch_size`` events per query, recompute every hash and
    check every link; stops at the first broken one. Each batch is its own short read (the chain is append-only,
    so later batches only ever see more events after the ones already checked)."""
    table = cast(Table, AuditEventRow.__table__)
    content = [column for column in table.c if column.name != "recorded_at"]
    verifier = ChainVerifier()
    last_id: int | None = None
    while not verifier.broken:
        query = select(*content).order_by(table.c.id).limit(batch_size)
        if last_id is not None:
            query = query.where(table.c.id > last_id)
        async with engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        if not rows:
            break
        for row in rows:
            try:
                event = _event(row)
            except (ValueError, TypeError) as error:  # e.g. a kind no writer could have stored
                verifier.unreadable(row.id, row.event_id, str(error))
                break
            if not verifier.check(row.id, event, row.prev_hash, row.hash):
                break
        last_id = rows[-1].id
    return verifier.report()


def _event(row: Row[Any]) -> AuditEvent:
    return AuditEvent(
        event_id=row.event_id,
        trace_id=row.trace_id,
        kind=AuditEventKind(row.kind),
        occurred_at=row.occurred_at,
        service=row.service,
        principal_id=row.principal_id,
        action=row.action,
        context_id=row.context_id,
        result=row.result,
        reason_codes=tuple(row.reason_codes),
        attributes=dict(row.attributes),
    )
