"""Conversation sessions and a principal's explicit preferences.

Both are personal data: sessions expire (a sliding TTL), are bounded in length, and everything kept about a
principal can be exported or erased. Preferences are only ever what the principal set; this service infers
nothing and writes nothing of its own into them.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from techno_memory.domain.idempotency import IdempotencyRecord

MESSAGE_ROLES = frozenset({"user", "assistant"})
TONES = frozenset({"neutral", "friendly", "formal", "concise"})
FORMATS = frozenset({"text", "markdown", "bullet_points"})


def new_session_id() -> str:
    """192 random bits, url-safe: the id is chosen here, never by a caller, so it cannot be guessed or reused."""
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class NewMessage:
    """A message as a caller sends it; the service stamps its time."""

    role: str
    content: str


@dataclass(frozen=True)
class SessionMessage:
    role: str
    content: str
    created_at: datetime


@dataclass(frozen=True)
class Session:
    """``messages`` are the most recent ones, oldest first."""

    session_id: str
    principal_id: str
    created_at: datetime
    expires_at: datetime
    messages: tuple[SessionMessage, ...] = ()


@dataclass(frozen=True)
class Preferences:
    """Empty means "no preference"."""

    tone: str = ""
    format: str = ""
    language: str = ""

    @property
    def empty(self) -> bool:
        return not (self.tone or self.format or self.language)


@dataclass(frozen=True)
class PrincipalExport:
    """Everything kept about a principal: sessions, preferences, and the idempotency records of their requests
    (which hold full responses)."""

    sessions: tuple[Session, ...]
    preferences: Preferences
    idempotency_records: tuple[IdempotencyRecord, ...]
    # One page of it (``techno_memory.domain.export_pages``): where the next one starts, "" on the last page.
    next_page_token: str = ""


@dataclass(frozen=True)
class Erasure:
    """What erasing a principal's data removed."""

    sessions_deleted: int
    preferences_deleted: bool
    idempotency_records_deleted: int
