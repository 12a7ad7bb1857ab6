"""The caller's own data: conversation sessions and explicit preferences, export and erasure. Every call acts
on the authenticated principal only; an id of someone else's session is answered as not found."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from techno_gate.application.authenticate import Credentials, require
from techno_gate.application.process import Gatekeeper
from techno_gate.domain.principal import Principal, Scope


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


class PersonalDataStore(Protocol):
    async def create_session(self, principal_id: str) -> SessionView: ...

    async def get_session(self, principal_id: str, session_id: str) -> SessionView: ...

    async def delete_session(self, principal_id: str, session_id: str) -> None: ...

    async def preferences(self, principal_id: str) -> PreferencesView: ...

    async def set_preferences(self, principal_id: str, preferences: PreferencesView) -> PreferencesView: ...

    async def export(self, principal_id: str) -> tuple[list[SessionView], PreferencesView]: ...

    async def erase(self, principal_id: str) -> tuple[int, bool]: ...


@dataclass
class PersonalData:
    gatekeeper: Gatekeeper
    store: PersonalDataStore

    def caller(self, credentials: Credentials) -> Principal:
        principal = self.gatekeeper.authenticate(credentials)
        require(principal, Scope.PROCESS)
        return principal
