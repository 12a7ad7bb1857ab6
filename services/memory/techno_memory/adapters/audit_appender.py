"""Appending audit events on PostgreSQL: psycopg directly, one statement (one round trip) per group commit in the
common case.

Every governed request appends two events (DECISION, OUTCOME) and waits for both, so this is the hottest write of
the system. Through SQLAlchemy it cost several round trips (pool ping, lock, duplicate check, head read, INSERT,
COMMIT), greenlet bridging for each, and a multi-row INSERT whose text changed with the batch size (too long for
psycopg's statement cache, so parsed again every time). Here every statement is fixed text, prepared once per
connection, with the whole batch in one JSON parameter, on a connection kept for this alone: the batcher runs one
flush at a time, so one connection is all a process can use.

Writers of the chain (``techno_memory.domain.chain``), in any replica, take the transaction-scoped advisory lock
``CHAIN_LOCK_KEY`` before inserting and keep it until their COMMIT (on PostgreSQL this appender is the only
writer; the SQLAlchemy path in ``repository`` serves SQLite, whose lock is ``BEGIN IMMEDIATE``). Two paths:

Fast (one statement, autocommit: the answer comes after the commit's WAL flush): the appender remembers the head
it last wrote and sends the *guarded* INSERT, the batch chained after that head, which takes the lock, then
inserts every row or none: none unless that head is still the last event and none of the event_ids is stored.
Those two checks read the statement's snapshot, taken before the lock was granted, so they can miss a writer that
committed in between; what cannot miss it is the unique ``prev_hash`` (and ``event_id``): our first row follows
the same event as that writer's first row, and PostgreSQL checks uniqueness against every committed row, whatever
the snapshot. Either way the statement fails or inserts nothing, writes nothing, and the careful path follows.

Careful (an explicit transaction): when no head is remembered (just started, or after a failure) or the fast
path did not insert: take the lock, read the head and which event_ids are stored (a statement that starts after
the lock is granted, so it sees every earlier writer), chain the new events after them and insert them with the
same guarded statement, which then passes.

So the chain can neither fork nor fall out of id order: the lock orders the writers, and ``prev_hash`` is unique.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

import psycopg
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Tracer
from psycopg import sql

from techno_core.errors import Unavailable
from techno_memory.domain.chain import GENESIS_HASH, ChainLink, chain
from techno_memory.domain.records import AuditEvent, new_events

DATABASE_UNAVAILABLE = "DATABASE_UNAVAILABLE"

# Any constant, the same in every replica: the key of the PostgreSQL advisory lock that serialises extending the
# audit chain ("audit" in ASCII).
CHAIN_LOCK_KEY = 0x6175646974

_LOCK = sql.SQL("SELECT pg_advisory_xact_lock({key})").format(key=sql.Literal(CHAIN_LOCK_KEY))
# The hash of the last event (none on an empty trail).
_HEAD = sql.SQL("(SELECT hash FROM audit_events ORDER BY id DESC LIMIT 1)")

# The columns of an event, with their types in the JSON document that carries the batch (one parameter: psycopg
# adapts one string for the whole batch, where one array per column cost more than the rest of the append).
_COLUMNS = (
    ("event_id", "text"),
    ("trace_id", "text"),
    ("kind", "text"),
    ("occurred_at", "timestamptz"),
    ("service", "text"),
    ("principal_id", "text"),
    ("action", "text"),
    ("context_id", "text"),
    ("result", "text"),
    ("reason_codes", "jsonb"),
    ("attributes", "jsonb"),
    ("prev_hash", "text"),
    ("hash", "text"),
)


def _guarded_insert() -> sql.Composed:
    """Takes the chain lock; then all rows or none: inserted in the chain's order (ids follow ``position``, the
    order of the document's rows) only while the last event is ``%(head)s`` and none of the event_ids is stored.
    Returns (id, prev_hash) of each row inserted. The lock and both checks are InitPlans: evaluated once, before
    any row is inserted."""
    names = sql.SQL(", ").join(sql.Identifier(name) for name, _ in _COLUMNS)
    typed = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in _COLUMNS)
    return sql.SQL(
        "WITH e AS (SELECT * FROM ROWS FROM (json_to_recordset(%(rows)s::json) AS ({typed})) WITH ORDINALITY "
        "AS r({names}, position)) "
        "INSERT INTO audit_events ({names}, recorded_at) SELECT {names}, %(recorded_at)s FROM e "
        "WHERE ({lock}) IS NOT NULL AND coalesce({head}, %(genesis)s) = %(head)s "
        "AND NOT EXISTS (SELECT FROM audit_events WHERE event_id = ANY(ARRAY(SELECT event_id FROM e))) "
        "ORDER BY position RETURNING id, prev_hash"
    ).format(names=names, typed=typed, lock=_LOCK, head=_HEAD)


# Plain text, composed once: psycopg then recognises the statement by its text, prepared on first use.
_INSERT = _guarded_insert().as_string()
_LOCK_TEXT = _LOCK.as_string()
# The head and which of the given event_ids are stored.
_READ = (
    sql.SQL("SELECT {head}, ARRAY(SELECT event_id FROM audit_events WHERE event_id = ANY(%s::text[]))")
    .format(head=_HEAD)
    .as_string()
)


# Every statement of the appender finds its rows through an index (the head by the primary key, stored event_ids
# by their unique index). Their plans are prepared once per connection and then kept (a generic plan), and a
# generic plan made while audit_events is small, as on a new database, reads it by a sequential scan, which is
# the cheaper way while it is small: every later append then read the whole table, a cost growing with the trail
# (most of PostgreSQL's CPU per request in issue #12) until the connection closed. Off, the planner takes the index
# whatever the table's size or statistics.
_SESSION_OPTIONS = "-c enable_seqscan=off"


async def connect(conninfo: str) -> psycopg.AsyncConnection[Any]:
    """A connection as the appender uses it. Autocommit: the fast path's INSERT is a transaction of its own.
    Every statement is prepared on first use (its text never changes), so later appends skip parsing and
    planning; no sequential scans (``_SESSION_OPTIONS``), added to any ``options`` of ``conninfo``."""
    given = psycopg.conninfo.conninfo_to_dict(conninfo).get("options")
    options = f"{given} {_SESSION_OPTIONS}" if given else _SESSION_OPTIONS
    return await psycopg.AsyncConnection.connect(conninfo, autocommit=True, prepare_threshold=0, options=options)


class FailureObserver(Protocol):
    """Told about every database operation that failed (``DatabaseFailures``)."""

    def failed(self, error: BaseException, *, disconnect: bool, statement: str | None) -> None: ...


class _Unchained(Exception):
    """The fast path's guess of the head was wrong (or an event is already stored): nothing was written."""


def _parameters(links: Sequence[ChainLink], head: str, recorded_at: datetime) -> dict[str, Any]:
    rows = [
        {
            "event_id": link.event.event_id,
            "trace_id": link.event.trace_id,
            "kind": link.event.kind.value,
            "occurred_at": link.event.occurred_at.isoformat(),  # with its offset: the server reads it exactly
            "service": link.event.service,
            "principal_id": link.event.principal_id,
            "action": link.event.action,
            "context_id": link.event.context_id,
            "result": link.event.result,
            "reason_codes": link.event.reason_codes,
            "attributes": link.event.attributes,
            "prev_hash": link.prev_hash,
            "hash": link.hash,
        }
        for link in links
    ]
    return {"rows": json.dumps(rows), "recorded_at": recorded_at, "genesis": GENESIS_HASH, "head": head}


class PostgresAuditAppender:
    """Implements ``AuditStore.store_events`` on PostgreSQL. Opens its connection on first use, and again after a
    failure; ``close`` closes it. Calls are served one at a time (the connection carries one transaction)."""

    def __init__(
        self,
        conninfo: str,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        failures: FailureObserver | None = None,
    ) -> None:
        self._conninfo = conninfo
        self._connection: psycopg.AsyncConnection[Any] | None = None
        self._head: str | None = None  # the hash this appender last appended, while it has not failed since
        self._tracer: Tracer = trace.get_tracer(__name__, tracer_provider=tracer_provider)
        self._failures = failures
        self._database = psycopg.conninfo.conninfo_to_dict(conninfo).get("dbname")
        self._busy = asyncio.Lock()

    async def store_events(self, events: Sequence[AuditEvent], recorded_at: datetime) -> list[bool]:
        """Store ``events`` in one transaction; one flag per event, True when newly stored."""
        if not events:
            return []
        with self._tracer.start_as_current_span(
            "INSERT audit_events",
            kind=SpanKind.CLIENT,
            attributes={
                "db.system": "postgresql",
                "db.name": str(self._database or ""),
                "db.operation.name": "INSERT",
                "db.operation.batch.size": len(events),
            },
        ):
            async with self._busy:
                try:
                    return await self._store(events, recorded_at)
                except psycopg.Error as error:
                    self._head = None
                    self._observe(error)
                    await self._discard_broken()
                    if isinstance(error, psycopg.OperationalError | psycopg.InterfaceError):
                        raise Unavailable(
                            reason=DATABASE_UNAVAILABLE,
                            message="the database is unavailable",
                            retry_after_seconds=1.0,
                        ) from error
                    raise
                except BaseException:  # cancelled mid-statement, or a bug: the connection's state is unknown
                    self._head = None
                    await self._discard_broken(force=True)
                    raise

    async def _store(self, events: Sequence[AuditEvent], recorded_at: datetime) -> list[bool]:
        reused = self._connection is not None and not self._connection.closed
        try:
            return await self._store_on(await self._connect(), events, recorded_at)
        except (psycopg.OperationalError, psycopg.InterfaceError) as error:
            if not reused:
                raise
            # A connection kept idle may have been closed by the server (a restart, an idle timeout): one more
            # try on a new one. Safe: an event that did get stored is recognised by its event_id.
            self._observe(error)
            self._head = None
            await self._discard_broken(force=True)
            return await self._store_on(await self._connect(), events, recorded_at)

    async def _store_on(
        self, connection: psycopg.AsyncConnection[Any], events: Sequence[AuditEvent], recorded_at: datetime
    ) -> list[bool]:
        flags, new = new_events(events, ())
        if self._head is not None:
            with contextlib.suppress(_Unchained):
                await self._append_after(connection, self._head, new, recorded_at)
                return flags
        return await self._append_carefully(connection, events, recorded_at)

    async def _append_after(
        self, connection: psycopg.AsyncConnection[Any], head: str, new: list[AuditEvent], recorded_at: datetime
    ) -> None:
        """The fast path: the guarded INSERT alone, its own transaction."""
        links = chain(new, head)
        try:
            inserted = await connection.execute(_INSERT, _parameters(links, head, recorded_at))
        except psycopg.errors.UniqueViolation as error:  # a writer got in after ``head`` (or stored an event_id)
            raise _Unchained from error
        self._check_inserted(await inserted.fetchall(), links)

    async def _append_carefully(
        self, connection: psycopg.AsyncConnection[Any], events: Sequence[AuditEvent], recorded_at: datetime
    ) -> list[bool]:
        """The careful path: lock, read the head and the stored ids, insert, in one explicit transaction."""
        ids = list(dict.fromkeys(event.event_id for event in events))
        async with connection.transaction():
            await connection.execute(_LOCK_TEXT)
            row = await (await connection.execute(_READ, (ids,))).fetchone()
            head = (row[0] if row else None) or GENESIS_HASH
            flags, new = new_events(events, row[1] if row else ())
            if not new:
                self._head = head
                return flags
            links = chain(new, head)
            inserted = await (await connection.execute(_INSERT, _parameters(links, head, recorded_at))).fetchall()
            if not inserted:
                raise RuntimeError("the guarded audit INSERT inserted nothing under the chain lock")  # rolled back
            self._check_inserted(inserted, links)  # before the COMMIT: a failed check rolls the batch back
        return flags

    def _check_inserted(self, rows: list[tuple[Any, ...]], links: Sequence[ChainLink]) -> None:
        """The ids must follow the chain: sorted by id, the rows' prev_hash values are the chain's, in order. (The
        INSERT inserts, and numbers, its rows in ``position`` order; this would catch a server that did not. On
        the fast path the statement has committed by then: the failure, an internal error, is loud and
        ``verify`` names the row.)"""
        if not rows:
            raise _Unchained
        if [prev for _, prev in sorted(rows)] != [link.prev_hash for link in links]:
            raise RuntimeError("audit events were not given ids in chain order")
        self._head = links[-1].hash

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        if self._connection is None or self._connection.closed:
            self._connection = await connect(self._conninfo)
        return self._connection

    async def _discard_broken(self, *, force: bool = False) -> None:
        """Close the connection when it is broken (or ``force``): the next append opens a new one. A connection
        left in an unknown state is never reused."""
        connection = self._connection
        if connection is None:
            return
        if force or connection.broken or connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            self._connection = None
            with contextlib.suppress(psycopg.Error):
                await connection.close()

    def _observe(self, error: psycopg.Error) -> None:
        if self._failures is not None and not isinstance(error, psycopg.IntegrityError):
            disconnect = self._connection is None or self._connection.broken
            self._failures.failed(error, disconnect=disconnect, statement="INSERT")

    async def close(self) -> None:
        async with self._busy:
            connection, self._connection = self._connection, None
            if connection is not None:
                await connection.close()
