"""API keys: generation and hashing.

Keys carry 256 random bits, so a fast SHA-256 is the right hash (slow password hashes like argon2 exist to
protect low-entropy secrets; they would only add latency here). The stored hash is the lookup key, so no
comparison of secrets happens in Python at all; the short visible prefix lets operators tell keys apart.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

KEY_SCHEME = "tk_"
_PREFIX_CHARS = 8


@dataclass(frozen=True)
class NewApiKey:
    """A freshly generated key: ``secret`` is shown once and never stored."""

    secret: str
    key_id: str
    prefix: str
    key_hash: str


@dataclass(frozen=True)
class ApiKeyRecord:
    """What the gate knows about a stored key."""

    key_id: str
    prefix: str
    key_hash: str
    name: str
    profile: str
    created_at: datetime | None
    revoked_at: datetime | None
    scopes: frozenset[str] = frozenset({"process"})
    expires_at: datetime | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def generate_key() -> NewApiKey:
    body = secrets.token_hex(4) + "_" + secrets.token_urlsafe(32)
    secret = KEY_SCHEME + body
    return NewApiKey(
        secret=secret,
        key_id="key_" + secrets.token_hex(8),
        prefix=secret[: len(KEY_SCHEME) + _PREFIX_CHARS],
        key_hash=hash_key(secret),
    )
