"""Data access for sessions, their messages and preferences (implements ``SessionStore``, ``PreferenceStore``
and ``PrincipalDataStore``).

Liveness is part of every statement (``expires_at > now``), never a read followed by a check: sliding the expiry
is an UPDATE of a live row only, so an expired session cannot be revived by a read racing the sweeper, and on
PostgreSQL that UPDATE's row lock serialises concurrent appends to one session (the trim sees every insert).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import cast

from sqlalchemy import ColumnElement, Insert, Select, Table, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from techno_memory.adapters.repository import unavailable_when_unreachable
from techno_memory.adapters.tables import IdempotencyKeyRow, PreferencesRow, SessionMessageRow, SessionRow
from techno_memory.domain.export_pages import ExportCursor, Section, message_cost, record_cost
from techno_memory.domain.idempotency import IdempotencyRecord
from techno_memory.domain.sessions import Erasure, NewMessage, Preferences, PrincipalExport, Session, SessionMessage


def _upsert_preferences(dialect: str) -> Insert:
    """INSERT … ON CONFLICT (principal_id) DO UPDATE: two first-time writers cannot collide on the key."""
    table = cast(Table, PreferencesRow.__table__)
    replaced = ("tone", "format", "language", "updated_at")
    if dialect == "postgresql":
        pg = postgresql.insert(table)
        return pg.on_conflict_do_update(index_elements=["principal_id"], set_={c: pg.excluded[c] for c in replaced})
    if dialect == "sqlite":
        lite = sqlite.insert(table)
        return lite.on_conflict_do_update(index_elements=["principal_id"], set_={c: lite.excluded[c] for c in replaced})
    raise ValueError(f"no upsert for dialect {dialect!r}")


def _live(session_id: str, principal_id: str, now: datetime) -> list[ColumnElement[bool]]:
    return [SessionRow.session_id == session_id, SessionRow.principal_id == principal_id, SessionRow.expires_at > now]


def _message(row: SessionMessageRow) -> SessionMessage:
    return SessionMessage(role=row.role, content=row.content, created_at=row.created_at)


def _preferences(row: PreferencesRow | None) -> Preferences:
    return Preferences() if row is None else Preferences(tone=row.tone, format=row.format, language=row.language)


def _messages_query(session_ids: Sequence[str]) -> Select[SessionMessageRow]:
    return select(SessionMessageRow).where(SessionMessageRow.session_id.in_(session_ids)).order_by(SessionMessageRow.id)


class SqlSessionStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._upsert_preferences = _upsert_preferences(engine.dialect.name)

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncSession]:
        async with unavailable_when_unreachable(), self._sessions.begin() as db:
            yield db

    async def create_session(self, session: Session) -> None:
        async with self._transaction() as db:
            db.add(
                SessionRow(
                    session_id=session.session_id,
                    principal_id=session.principal_id,
                    created_at=session.created_at,
                    expires_at=session.expires_at,
                )
            )

    async def _slide(
        self, db: AsyncSession, session_id: str, principal_id: str, now: datetime, expires_at: datetime
    ) -> datetime | None:
        """Move a live session's expiry; its created_at, or None when it is not live."""
        slide = (
            update(SessionRow)
            .where(*_live(session_id, principal_id, now))
            .values(expires_at=expires_at)
            .returning(SessionRow.created_at)
            .execution_options(synchronize_session=False)
        )
        created_at: datetime | None = (await db.execute(slide)).scalar_one_or_none()
        return created_at

    async def _session(
        self, db: AsyncSession, session_id: str, principal_id: str, created_at: datetime, expires_at: datetime
    ) -> Session:
        messages = tuple(_message(row) for row in await db.scalars(_messages_query([session_id])))
        return Session(session_id, principal_id, created_at, expires_at, messages)

    async def use_session(
        self, session_id: str, principal_id: str, *, now: datetime, expires_at: datetime
    ) -> Session | None:
        async with self._transaction() as db:
            created_at = await self._slide(db, session_id, principal_id, now, expires_at)
            if created_at is None:
                return None
            return await self._session(db, session_id, principal_id, created_at, expires_at)

    async def append_messages(
        self,
        session_id: str,
        principal_id: str,
        messages: Sequence[NewMessage],
        *,
        now: datetime,
        expires_at: datetime,
        keep: int,
    ) -> Session | None:
        rows = [
            {"session_id": session_id, "role": message.role, "content": message.content, "created_at": now}
            for message in messages
        ]
        # The id of the oldest message to keep; NULL (nothing deleted) while the session holds fewer than ``keep``.
        oldest_kept = (
            select(SessionMessageRow.id)
            .where(SessionMessageRow.session_id == session_id)
            .order_by(SessionMessageRow.id.desc())
            .offset(keep - 1)
            .limit(1)
            .scalar_subquery()
        )
        trim = (
            delete(SessionMessageRow)
            .where(SessionMessageRow.session_id == session_id, SessionMessageRow.id < oldest_kept)
            .execution_options(synchronize_session=False)
        )
        async with self._transaction() as db:
            created_at = await self._slide(db, session_id, principal_id, now, expires_at)
            if created_at is None:
                return None
            await db.execute(insert(SessionMessageRow), rows)
            await db.execute(trim)
            return await self._session(db, session_id, principal_id, created_at, expires_at)

    async def delete_session(self, session_id: str, principal_id: str, *, now: datetime) -> bool:
        statement = (
            delete(SessionRow)
            .where(*_live(session_id, principal_id, now))
            .returning(SessionRow.session_id)
            .execution_options(synchronize_session=False)
        )
        async with self._transaction() as db:
            return (await db.execute(statement)).first() is not None

    async def delete_expired_sessions(self, *, now: datetime, limit: int) -> int:
        batch = select(SessionRow.session_id).where(SessionRow.expires_at <= now).limit(limit)
        statement = (
            delete(SessionRow)
            .where(SessionRow.session_id.in_(batch))
            .returning(SessionRow.session_id)
            .execution_options(synchronize_session=False)
        )
        async with self._transaction() as db:
            return len((await db.execute(statement)).all())

    async def preferences(self, principal_id: str) -> Preferences:
        async with self._transaction() as db:
            return _preferences(await db.get(PreferencesRow, principal_id))

    async def set_preferences(self, principal_id: str, preferences: Preferences, *, now: datetime) -> None:
        async with self._transaction() as db:
            if preferences.empty:
                # "No preference" is kept as nothing at all: no row to export or erase.
                await db.execute(delete(PreferencesRow).where(PreferencesRow.principal_id == principal_id))
                return
            values = {
                "principal_id": principal_id,
                "tone": preferences.tone,
                "format": preferences.format,
                "language": preferences.language,
                "updated_at": now,
            }
            await db.execute(self._upsert_preferences.values(values))

    async def export_principal(
        self, principal_id: str, *, now: datetime, cursor: ExportCursor, budget_bytes: int
    ) -> tuple[PrincipalExport, ExportCursor | None]:
        """One page (``techno_memory.domain.export_pages``), read in one transaction. Only the sort keys of the
        principal's live sessions and records are listed whole; contents are read as far as the page goes."""
        page = _Page(budget_bytes)
        async with self._transaction() as db:
            preferences = _preferences(await db.get(PreferencesRow, principal_id))
            following: ExportCursor | None = None
            if cursor.section is Section.SESSIONS:
                following = await self._sessions_page(db, principal_id, now, cursor, page)
            if following is None and cursor.section is Section.SESSIONS:
                cursor = ExportCursor(Section.IDEMPOTENCY)
            if following is None:
                following = await self._idempotency_page(db, principal_id, now, cursor, page)
        return PrincipalExport(tuple(page.sessions), preferences, tuple(page.records)), following

    async def _sessions_page(
        self, db: AsyncSession, principal_id: str, now: datetime, cursor: ExportCursor, page: _Page
    ) -> ExportCursor | None:
        """Sessions from the cursor into ``page``; the cursor where the next page starts, None when done."""
        live = (
            select(SessionRow)
            .where(SessionRow.principal_id == principal_id, SessionRow.expires_at > now)
            .order_by(SessionRow.created_at, SessionRow.session_id)
        )
        rows = [row for row in await db.scalars(live) if _at_or_after(row.created_at, row.session_id, cursor)]
        for row in rows:
            after = cursor.after_message_id if row.session_id == cursor.key else 0
            query = (
                select(SessionMessageRow)
                .where(SessionMessageRow.session_id == row.session_id, SessionMessageRow.id > after)
                .order_by(SessionMessageRow.id)
            )
            messages: list[SessionMessage] = []
            for message in await db.scalars(query):
                if not page.take(message_cost(message.role, message.content)):
                    if messages:  # the session continues on the next page, under the same id
                        page.add_session(row, messages)
                    return ExportCursor(Section.SESSIONS, row.created_at, row.session_id, after)
                messages.append(_message(message))
                after = message.id
            if not messages and not page.take(message_cost("", "")):
                return ExportCursor(Section.SESSIONS, row.created_at, row.session_id, after)
            page.add_session(row, messages)
        return None

    async def _idempotency_page(
        self, db: AsyncSession, principal_id: str, now: datetime, cursor: ExportCursor, page: _Page
    ) -> ExportCursor | None:
        # The sizes come with the sort keys, so the page is chosen before any response is read; the chosen ones
        # are then read in a few IN queries rather than one round trip each.
        live = (
            select(
                IdempotencyKeyRow.created_at,
                IdempotencyKeyRow.idempotency_key,
                func.coalesce(func.length(IdempotencyKeyRow.response), 0),
            )
            .where(IdempotencyKeyRow.principal_id == principal_id, IdempotencyKeyRow.expires_at > now)
            .order_by(IdempotencyKeyRow.created_at, IdempotencyKeyRow.idempotency_key)
        )
        chosen: list[str] = []
        following: ExportCursor | None = None
        for created_at, key, size in (await db.execute(live)).all():
            if not _at_or_after(created_at, key, cursor):
                continue
            if not page.take(record_cost(key, None) + size):
                following = ExportCursor(Section.IDEMPOTENCY, created_at, key)
                break
            chosen.append(key)
        rows: dict[str, IdempotencyKeyRow] = {}
        for start in range(0, len(chosen), _READ_CHUNK):
            contents = select(IdempotencyKeyRow).where(
                IdempotencyKeyRow.principal_id == principal_id,
                IdempotencyKeyRow.idempotency_key.in_(chosen[start : start + _READ_CHUNK]),
            )
            rows.update((row.idempotency_key, row) for row in await db.scalars(contents))
        page.records.extend(_idempotency_record(rows[key]) for key in chosen if key in rows)
        return following

    async def erase_principal(self, principal_id: str) -> Erasure:
        sessions = (
            delete(SessionRow)
            .where(SessionRow.principal_id == principal_id)
            .returning(SessionRow.session_id)
            .execution_options(synchronize_session=False)
        )
        preferences = (
            delete(PreferencesRow)
            .where(PreferencesRow.principal_id == principal_id)
            .returning(PreferencesRow.principal_id)
            .execution_options(synchronize_session=False)
        )
        idempotency = (
            delete(IdempotencyKeyRow)
            .where(IdempotencyKeyRow.principal_id == principal_id)
            .returning(IdempotencyKeyRow.idempotency_key)
            .execution_options(synchronize_session=False)
        )
        async with self._transaction() as db:  # one transaction: all of it goes, or nothing
            deleted = len((await db.execute(sessions)).all())
            preferences_deleted = (await db.execute(preferences)).first() is not None
            idempotency_deleted = len((await db.execute(idempotency)).all())
        return Erasure(
            sessions_deleted=deleted,
            preferences_deleted=preferences_deleted,
            idempotency_records_deleted=idempotency_deleted,
        )


# Keys per IN query when an export page reads the records it chose (well inside every driver's parameter limit).
_READ_CHUNK = 500


def _idempotency_record(row: IdempotencyKeyRow) -> IdempotencyRecord:
    return IdempotencyRecord(
        principal_id=row.principal_id,
        key=row.idempotency_key,
        request_hash=row.request_hash,
        response=row.response,
        created_at=row.created_at,
        expires_at=row.expires_at,
        lease_expires_at=row.lease_expires_at,
    )


def _at_or_after(created_at: datetime, key: str, cursor: ExportCursor) -> bool:
    return cursor.created_at is None or (created_at, key) >= (cursor.created_at, cursor.key)


class _Page:
    """What one export page holds so far, and what is left of its budget. The first item always fits, so every
    page moves the export on."""

    def __init__(self, budget_bytes: int) -> None:
        self.left = budget_bytes
        self.sessions: list[Session] = []
        self.records: list[IdempotencyRecord] = []
        self._empty = True

    def take(self, cost: int) -> bool:
        if cost > self.left and not self._empty:
            return False
        self.left -= cost
        self._empty = False
        return True

    def add_session(self, row: SessionRow, messages: list[SessionMessage]) -> None:
        self.sessions.append(Session(row.session_id, row.principal_id, row.created_at, row.expires_at, tuple(messages)))
