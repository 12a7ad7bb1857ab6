"""Who is calling: the identity every decision is made for, however it was proven (API key or bearer token)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Scope(StrEnum):
    PROCESS = "process"
    AUDIT_READ = "audit:read"
    ADMIN = "admin"


class CredentialKind(StrEnum):
    API_KEY = "api_key"
    TOKEN = "token"  # noqa: S105 (a kind of credential, not a secret)


@dataclass(frozen=True)
class Principal:
    """``id`` is the key id for API keys and ``token:<sub>`` for bearer tokens: never a secret."""

    id: str
    kind: CredentialKind
    profile: str
    scopes: frozenset[Scope]
    expires_at: datetime | None = None

    def has(self, scope: Scope) -> bool:
        return scope in self.scopes
