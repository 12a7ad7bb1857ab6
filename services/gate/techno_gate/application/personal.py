"""The caller's own data: conversation sessions and explicit preferences, and export and erasure of all of it
(idempotency records too). Every call acts
on the authenticated principal only; an id of someone else's session is answered as not found."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class Message:
    role: str
    content: str
    created_at: datetime | None


@dataclass(frozen=True)
class SessionView:
    session_id: str
    created_at: datetime | None
    expires_at: datetime | None
    messages: tuple[Message, ...]


@dataclass(frozen=True)
class PreferencesView:
    tone: str = ""
    format: str = ""
    language: str = ""


@dataclass(frozen=True)
class IdempotencyRecordView:
    """One of the caller's Idempotency-Keys; ``response`` is the serialized ProcessResponse kept for repeats
    (None while the request has not completed)."""

    key: str
    created_at: datetime | None
    expires_at: datetime | None
    response: bytes | None


@dataclass(frozen=True)
class PersonalExport:
    """One page of it: ``next_page_token`` names the next page, "" after the last (a session cut between two
    pages continues, under the same id, on the next)."""

    sessions: list[SessionView]
    preferences: PreferencesView
    idempotency_records: list[IdempotencyRecordView]
    next_page_token: str = ""


@dataclass(frozen=True)
class PersonalErasure:
    sessions_deleted: int
    preferences_deleted: bool
    idempotency_records_deleted: int


class PersonalDataStore(Protocol):
    async def create_session(self, principal_id: str) -> SessionView: ...

    async def get_session(self, principal_id: str, session_id: str) -> SessionView: ...

    async def delete_session(self, principal_id: str, session_id: str) -> None: ...

    async def preferences(self, principal_id: str) -> PreferencesView: ...

    async def set_preferences(self, principal_id: str, preferences: PreferencesView) -> PreferencesView: ...

    async def export(self, principal_id: str, page_token: str = "") -> PersonalExport: ...

    async def erase(self, principal_id: str) -> PersonalErasure: ...


@dataclass
class PersonalData:
    """The caller is authenticated, checked for its method's scope and admitted by its limits before any call
    reaches the store (``entrypoints.grpc``)."""

    store: PersonalDataStore
