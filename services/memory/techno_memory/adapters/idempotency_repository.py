"""Idempotency records in the database (implements ``IdempotencyStore``; the semantics are documented in
``techno_memory.application.idempotency``).

Every decision is a single statement the database arbitrates: the INSERT … ON CONFLICT DO NOTHING that only one
of concurrent claims can win (the primary key), and UPDATEs and DELETEs whose WHERE holds the state they expect.
Nothing is decided by reading first and writing after without such a check. An abandoned claim is judged by its
holder's audit trail, read in the claim's transaction before the takeover (audit events are append-only, and the
holder, its lease over, writes no more decisions).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Insert, Row, Table, delete, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from techno_memory.adapters.repository import unavailable_when_unreachable
from techno_memory.adapters.tables import AuditEventRow, IdempotencyKeyRow
from techno_memory.domain.idempotency import (
    Claim,
    ClaimRequest,
    ClaimState,
    IdempotencyRecord,
    TrailEvent,
    Verdict,
    holder_may_have_run,
    judge,
    judge_abandoned,
)

# How often one claim retries after losing a compare-and-set to a concurrent change before answering IN_PROGRESS.
CLAIM_ATTEMPTS = 3

_TABLE = cast(Table, IdempotencyKeyRow.__table__)
_AUDIT = cast(Table, AuditEventRow.__table__)


def _insert_if_absent(dialect: str) -> Insert:
    """INSERT … ON CONFLICT (principal_id, idempotency_key) DO NOTHING: of concurrent inserts of one key, the
    database lets exactly one through."""
    key = ["principal_id", "idempotency_key"]
    statement: Insert
    if dialect == "postgresql":
        statement = postgresql.insert(_TABLE).on_conflict_do_nothing(index_elements=key)
    elif dialect == "sqlite":
        statement = sqlite.insert(_TABLE).on_conflict_do_nothing(index_elements=key)
    else:
        raise ValueError(f"no insert-if-absent for dialect {dialect!r}")
    # RETURNING says whether the row was inserted (a driver's rowcount is not reliable for this: psycopg gives -1).
    return statement.returning(_TABLE.c.principal_id)


def _key(principal_id: str, key: str) -> list[ColumnElement[bool]]:
    return [_TABLE.c.principal_id == principal_id, _TABLE.c.idempotency_key == key]


def _record(row: Row[Any]) -> IdempotencyRecord:
    return IdempotencyRecord(
        principal_id=row.principal_id,
        key=row.idempotency_key,
        request_hash=row.request_hash,
        response=row.response,
        created_at=row.created_at,
        expires_at=row.expires_at,
        lease_expires_at=row.lease_expires_at,
        trace_id=row.trace_id,
    )


async def _holder_trail(connection: AsyncConnection, trace_id: str) -> list[TrailEvent]:
    """The decisions and outcomes of a trace (a handful of rows, through the trace_id index)."""
    query = select(_AUDIT.c.kind, _AUDIT.c.result, _AUDIT.c.event_id, _AUDIT.c.attributes).where(
        _AUDIT.c.trace_id == trace_id, _AUDIT.c.kind.in_(("DECISION", "OUTCOME"))
    )
    trail = []
    for row in await connection.execute(query):
        named = (row.attributes or {}).get("decision_event_id")
        trail.append(TrailEvent(row.kind, row.result, row.event_id, named if isinstance(named, str) else None))
    return trail


class SqlIdempotencyStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._insert = _insert_if_absent(engine.dialect.name)

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        async with unavailable_when_unreachable(), self._engine.begin() as connection:
            yield connection

    async def claim(self, request: ClaimRequest) -> Claim:
        fresh: dict[str, Any] = {
            "request_hash": request.request_hash,
            "response": None,
            "created_at": request.now,
            "expires_at": request.expires_at,
            "lease_expires_at": request.lease_expires_at,
            "trace_id": request.trace_id or None,
        }
        insert = self._insert.values(principal_id=request.principal_id, idempotency_key=request.key, **fresh)
        read = select(_TABLE).where(*_key(request.principal_id, request.key))
        async with self._transaction() as connection:
            for _ in range(CLAIM_ATTEMPTS):
                if (await connection.execute(insert)).first() is not None:
                    return Claim(ClaimState.CLAIMED)
                row = (await connection.execute(read)).first()
                if row is None:
                    continue  # released or swept since the INSERT: insert again
                record = _record(row)
                verdict = judge(record, request.request_hash, request.now)
                if verdict is Verdict.MISMATCH:
                    return Claim(ClaimState.MISMATCH)
                if verdict is Verdict.IN_PROGRESS:
                    return Claim(ClaimState.IN_PROGRESS)
                if verdict is Verdict.COMPLETED:
                    return Claim(ClaimState.COMPLETED, record.response or b"")
                if verdict is Verdict.ABANDONED:
                    # Its request may have run, and its response is lost: running it again would run it twice.
                    may_have_run = record.trace_id is not None and holder_may_have_run(
                        await _holder_trail(connection, record.trace_id)
                    )
                    verdict = judge_abandoned(record, request.request_hash, may_have_run=may_have_run)
                    if verdict is Verdict.MISMATCH:
                        return Claim(ClaimState.MISMATCH)
                    if verdict is Verdict.OUTCOME_UNKNOWN:
                        return Claim(ClaimState.OUTCOME_UNKNOWN, trace_id=record.trace_id or "")
                if await self._take_over(connection, record, fresh):
                    return Claim(ClaimState.CLAIMED)
        return Claim(ClaimState.IN_PROGRESS)

    async def _take_over(self, connection: AsyncConnection, record: IdempotencyRecord, fresh: dict[str, Any]) -> bool:
        """Compare-and-set: replace ``record`` only if it is still exactly as read (same claim times, still
        without a response if it had none). Under concurrency the database lets one such UPDATE change the row;
        the others find it changed and match nothing."""
        unchanged = [
            *_key(record.principal_id, record.key),
            _TABLE.c.created_at == record.created_at,
            _TABLE.c.expires_at == record.expires_at,
            _TABLE.c.lease_expires_at == record.lease_expires_at,
            _TABLE.c.request_hash == record.request_hash,
        ]
        if record.response is None:
            unchanged.append(_TABLE.c.response.is_(None))
        take_over = update(_TABLE).where(*unchanged).values(**fresh).returning(_TABLE.c.principal_id)
        return (await connection.execute(take_over)).first() is not None

    async def complete(self, principal_id: str, key: str, response: bytes, *, now: datetime) -> bool:
        statement = (
            update(_TABLE)
            .where(*_key(principal_id, key), _TABLE.c.response.is_(None), _TABLE.c.expires_at > now)
            .values(response=response)
            .returning(_TABLE.c.principal_id)
        )
        async with self._transaction() as connection:
            return (await connection.execute(statement)).first() is not None

    async def stored_response(self, principal_id: str, key: str, *, now: datetime) -> bytes | None:
        query = select(_TABLE.c.response).where(*_key(principal_id, key), _TABLE.c.expires_at > now)
        async with self._transaction() as connection:
            response: bytes | None = (await connection.execute(query)).scalar_one_or_none()
        return response

    async def release(self, principal_id: str, key: str) -> None:
        statement = delete(_TABLE).where(*_key(principal_id, key), _TABLE.c.response.is_(None))
        async with self._transaction() as connection:
            await connection.execute(statement)

    async def delete_expired_idempotency_keys(self, *, now: datetime, limit: int) -> int:
        batch = select(_TABLE.c.principal_id, _TABLE.c.idempotency_key).where(_TABLE.c.expires_at <= now).limit(limit)
        # The expiry is checked again by the DELETE itself: a record taken over since the batch was selected
        # is live again and stays.
        statement = (
            delete(_TABLE)
            .where(tuple_(_TABLE.c.principal_id, _TABLE.c.idempotency_key).in_(batch), _TABLE.c.expires_at <= now)
            .returning(_TABLE.c.principal_id)
        )
        async with self._transaction() as connection:
            return len((await connection.execute(statement)).all())
