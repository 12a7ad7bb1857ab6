"""The memory service's data access over an ``AsyncEngine``: the audit trail and the API key directory."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Any, cast

from opentelemetry.trace import TracerProvider
from sqlalchemy import ColumnElement, Row, Table, insert, select, text, update
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from techno_core.errors import AlreadyExists, NotFound, Unavailable
from techno_memory.adapters.audit_appender import FailureObserver, PostgresAuditAppender
from techno_memory.adapters.tables import ApiKeyRow, AuditEventRow
from techno_memory.domain.audit_query import AuditFilter
from techno_memory.domain.chain import GENESIS_HASH, ChainLink, chain
from techno_memory.domain.records import (
    ApiKey,
    AuditEvent,
    AuditEventKind,
    KeyListing,
    NewApiKey,
    new_events,
    utc_now,
)

DATABASE_UNAVAILABLE = "DATABASE_UNAVAILABLE"
API_KEY_EXISTS = "API_KEY_EXISTS"
API_KEY_NOT_FOUND = "API_KEY_NOT_FOUND"


@contextlib.asynccontextmanager
async def unavailable_when_unreachable() -> AsyncIterator[None]:
    """A lost or refused connection (or an exhausted pool) is the database being unavailable: the caller may
    retry. Anything else (a bug, a constraint we did not expect) stays an internal error."""
    try:
        yield
    except (OperationalError, InterfaceError, PoolTimeoutError) as error:
        raise Unavailable(
            reason=DATABASE_UNAVAILABLE, message="the database is unavailable", retry_after_seconds=1.0
        ) from error


# SQLite's chain lock, the first statement of a transaction that extends the chain: BEGIN IMMEDIATE takes the
# database's write lock at once (waiting up to busy_timeout), where the driver's implicit BEGIN would only take it
# at the INSERT, after the head was read; it is kept until the transaction ends, so reading the head and appending
# after it cannot interleave with another writer. (PostgreSQL's is in ``audit_appender``.)
_SQLITE_CHAIN_LOCK = text("BEGIN IMMEDIATE")


def _event_row(link: ChainLink, recorded_at: datetime) -> dict[str, Any]:
    event, prev_hash, hash_ = link.event, link.prev_hash, link.hash
    return {
        "event_id": event.event_id,
        "trace_id": event.trace_id,
        "kind": event.kind.value,
        "occurred_at": event.occurred_at,
        "recorded_at": recorded_at,
        "service": event.service,
        "principal_id": event.principal_id,
        "action": event.action,
        "context_id": event.context_id,
        "result": event.result,
        "reason_codes": list(event.reason_codes),
        "attributes": event.attributes,
        "prev_hash": prev_hash,
        "hash": hash_,
    }


def _event(row: AuditEventRow | Row[Any]) -> AuditEvent:
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
        recorded_at=row.recorded_at,
    )


def _conditions(table: Table, filters: AuditFilter, after_id: int | None) -> list[ColumnElement[bool]]:
    conditions = []
    if filters.trace_id:
        conditions.append(table.c.trace_id == filters.trace_id)
    if filters.principal_id:
        conditions.append(table.c.principal_id == filters.principal_id)
    if filters.start_time is not None:
        conditions.append(table.c.occurred_at >= filters.start_time)
    if filters.end_time is not None:
        conditions.append(table.c.occurred_at < filters.end_time)
    if after_id is not None:
        conditions.append(table.c.id > after_id)
    return conditions


def _api_key(row: ApiKeyRow) -> ApiKey:
    return ApiKey(
        key_id=row.key_id,
        prefix=row.prefix,
        key_hash=row.key_hash,
        name=row.name,
        profile=row.profile,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        scopes=tuple(row.scopes),
        expires_at=row.expires_at,
        updated_at=row.updated_at,
    )


def _libpq_conninfo(engine: AsyncEngine) -> str:
    """The engine's PostgreSQL URL as libpq takes it (no SQLAlchemy driver name)."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


class SqlRepository:
    """Implements ``AuditStore`` and ``KeyStore``. ``clock`` stamps recorded_at, created_at, revoked_at and
    updated_at, and tells the time of a key listing (``read_at``).

    On PostgreSQL, audit appends go through ``PostgresAuditAppender`` (psycopg directly, on a connection of its
    own: ``close`` closes it); on SQLite, through SQLAlchemy Core below. ``tracer_provider`` traces those appends
    and ``failures`` is told of their failures (the engine's own statements are traced and watched by it)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        clock: Callable[[], datetime] = utc_now,
        tracer_provider: TracerProvider | None = None,
        failures: FailureObserver | None = None,
    ) -> None:
        self._engine = engine
        self._appender = (
            PostgresAuditAppender(_libpq_conninfo(engine), tracer_provider=tracer_provider, failures=failures)
            if engine.dialect.name == "postgresql"
            else None
        )
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._clock = clock
        table = cast(Table, AuditEventRow.__table__)
        # A plain INSERT: under the chain lock the events already stored are filtered out first, so a conflict
        # cannot happen, and one that did (a bug) must fail the batch rather than leave a hole in the chain.
        # Rows are inserted (and given their ids) in the order of the parameters, which is the chain's order.
        self._insert_events = insert(table).returning(table.c.id, sort_by_parameter_order=True)
        self._chain_head = select(table.c.hash).order_by(table.c.id.desc()).limit(1)

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncSession]:
        async with unavailable_when_unreachable(), self._sessions.begin() as session:
            yield session

    async def store_events(self, events: Sequence[AuditEvent]) -> list[bool]:
        if not events:
            return []
        recorded_at = self._clock()
        if self._appender is not None:
            return await self._appender.store_events(events, recorded_at)
        table = cast(Table, AuditEventRow.__table__)
        # SQLite (the embedded default): SQLAlchemy Core on a bare connection rather than an ORM session (measured,
        # the session's unit-of-work and bulk-ORM layers doubled the cost of an append).
        async with unavailable_when_unreachable(), self._engine.connect() as connection:
            await connection.execute(_SQLITE_CHAIN_LOCK)
            # Under the lock, so no other writer can store one of these ids before this transaction commits.
            ids = list(dict.fromkeys(event.event_id for event in events))
            query = select(table.c.event_id).where(table.c.event_id.in_(ids))
            flags, new = new_events(events, set((await connection.execute(query)).scalars()))
            if new:
                head = (await connection.execute(self._chain_head)).scalar_one_or_none() or GENESIS_HASH
                rows = [_event_row(link, recorded_at) for link in chain(new, head)]
                row_ids = (await connection.execute(self._insert_events, rows)).scalars().all()
                if len(row_ids) != len(rows) or list(row_ids) != sorted(row_ids):
                    raise RuntimeError("audit events were not given ids in chain order")  # rolled back
            await connection.commit()
        return flags

    async def append_events(self, events: Sequence[AuditEvent]) -> int:
        """Store ``events`` in one transaction; how many were new."""
        return sum(await self.store_events(events))

    async def audit_trail(self, trace_id: str) -> list[AuditEvent]:
        query = select(AuditEventRow).where(AuditEventRow.trace_id == trace_id).order_by(AuditEventRow.id)
        async with self._transaction() as session:
            return [_event(row) for row in await session.scalars(query)]

    async def list_events(
        self, filters: AuditFilter, *, after_id: int | None, limit: int
    ) -> list[tuple[int, AuditEvent]]:
        """Keyset paging: ``id > after_id ORDER BY id LIMIT limit``, never an OFFSET, so every page costs the same.
        With a principal or a time range, the (principal_id, id) or (occurred_at, id) index serves it; with a
        trace, the trace_id index."""
        table = cast(Table, AuditEventRow.__table__)
        query = select(table).where(*_conditions(table, filters, after_id)).order_by(table.c.id).limit(limit)
        async with unavailable_when_unreachable(), self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [(row.id, _event(row)) for row in rows]

    async def create_api_key(self, key: NewApiKey) -> ApiKey:
        now = self._clock()
        row = ApiKeyRow(
            key_id=key.key_id,
            prefix=key.prefix,
            key_hash=key.key_hash,
            name=key.name,
            profile=key.profile,
            created_at=now,
            revoked_at=None,
            scopes=list(key.scopes),
            expires_at=key.expires_at,
            updated_at=now,
        )
        try:
            async with self._transaction() as session:
                session.add(row)
        except IntegrityError as error:
            # Both unique columns are checked by the database itself, so two concurrent creations cannot both win.
            raise AlreadyExists(
                reason=API_KEY_EXISTS,
                message="an API key with this key_id or key_hash already exists",
                metadata={"key_id": key.key_id},
            ) from error
        return _api_key(row)

    async def list_api_keys(self, updated_since: datetime | None = None) -> KeyListing:
        """``read_at`` is taken BEFORE the query, by the clock that stamps ``updated_at``: a key changed while the
        query runs is stamped at or after ``read_at``, so a next read from ``read_at`` returns it even if this one
        did not see it. What this cannot cover is a change stamped before ``read_at`` whose transaction commits
        after the query's snapshot (or one stamped by another replica whose clock lags): hence the gate asks from
        ``read_at`` less a safety margin, and gets a few keys twice rather than miss one."""
        read_at = self._clock()
        query = select(ApiKeyRow).order_by(ApiKeyRow.created_at, ApiKeyRow.key_id)
        if updated_since is not None:
            query = query.where(ApiKeyRow.updated_at >= updated_since)
        async with self._transaction() as session:
            keys = tuple(_api_key(row) for row in await session.scalars(query))
        return KeyListing(keys=keys, read_at=read_at)

    async def revoke_api_key(self, key_id: str) -> ApiKey:
        # Only an unrevoked key is updated: revoking twice keeps the first revocation time, and changes nothing a
        # gate would have to refresh (so updated_at stays too).
        now = self._clock()
        revoke = (
            update(ApiKeyRow)
            .where(ApiKeyRow.key_id == key_id, ApiKeyRow.revoked_at.is_(None))
            .values(revoked_at=now, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        async with self._transaction() as session:
            await session.execute(revoke)
            row = await session.get(ApiKeyRow, key_id)
        if row is None:
            raise NotFound(reason=API_KEY_NOT_FOUND, message="no API key with this key_id", metadata={"key_id": key_id})
        return _api_key(row)

    async def close(self) -> None:
        """Close the audit appender's connection (the engine's pool is the engine's to dispose of)."""
        if self._appender is not None:
            await self._appender.close()

    async def __aenter__(self) -> SqlRepository:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def ping(self) -> None:
        """Health probe: the database answers a trivial query."""
        async with self._engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
