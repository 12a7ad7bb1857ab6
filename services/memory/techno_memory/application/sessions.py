"""Conversation sessions of a principal: create, read, append, delete, with a sliding expiry and a bound on
the messages kept.

Every lookup is by session id AND principal: a session of another principal answers exactly as a missing or
expired one (NOT_FOUND), so a caller learns nothing about sessions that are not its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from techno_core.errors import NotFound
from techno_memory.application.ports import SessionStore
from techno_memory.domain.records import utc_now
from techno_memory.domain.session_validation import validate_append, validate_principal_id, validate_session_ref
from techno_memory.domain.sessions import NewMessage, Session, new_session_id

SESSION_NOT_FOUND = "SESSION_NOT_FOUND"


def _not_found(session_id: str) -> NotFound:
    return NotFound(reason=SESSION_NOT_FOUND, message="no such session", metadata={"session_id": session_id})


class Sessions:
    """``clock`` decides expiry (injected so tests move time instead of sleeping)."""

    def __init__(
        self,
        store: SessionStore,
        *,
        ttl: timedelta,
        max_messages: int,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._store = store
        self._ttl = ttl
        self._max_messages = max_messages
        self._clock = clock

    async def create(self, principal_id: str) -> Session:
        validate_principal_id(principal_id)
        now = self._clock()
        session = Session(new_session_id(), principal_id, created_at=now, expires_at=now + self._ttl)
        await self._store.create_session(session)
        return session

    async def get(self, session_id: str, principal_id: str) -> Session:
        validate_session_ref(session_id, principal_id)
        now = self._clock()
        session = await self._store.use_session(session_id, principal_id, now=now, expires_at=now + self._ttl)
        if session is None:
            raise _not_found(session_id)
        return session

    async def append(self, session_id: str, principal_id: str, messages: Sequence[NewMessage]) -> Session:
        validate_append(session_id, principal_id, messages)
        now = self._clock()
        # Messages of this request beyond the bound would be dropped at once: they are not even written.
        session = await self._store.append_messages(
            session_id,
            principal_id,
            messages[-self._max_messages :],
            now=now,
            expires_at=now + self._ttl,
            keep=self._max_messages,
        )
        if session is None:
            raise _not_found(session_id)
        return session

    async def delete(self, session_id: str, principal_id: str) -> None:
        validate_session_ref(session_id, principal_id)
        if not await self._store.delete_session(session_id, principal_id, now=self._clock()):
            raise _not_found(session_id)
