"""Key management for operators (the ``admin`` scope): create, list, revoke, rotate."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from techno_core import errors
from techno_gate.application.authenticate import require
from techno_gate.application.ports import KeyAdminStore
from techno_gate.domain.keys import ApiKeyRecord, generate_key
from techno_gate.domain.principal import Principal, Scope
from techno_gate.domain.reasons import Reason


@dataclass(frozen=True)
class IssuedKey:
    record: ApiKeyRecord
    secret: str  # shown once, never stored


class KeyCacheWriter(Protocol):
    """What the admin use cases tell the local key cache, so this replica sees its own change at once (the
    others within a refresh)."""

    def remember(self, record: ApiKeyRecord) -> None: ...


@dataclass
class KeyAdmin:
    store: KeyAdminStore
    cache: KeyCacheWriter
    known_profiles: Callable[[], set[str]]
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    async def create(
        self, caller: Principal, *, name: str, profile: str, scopes: tuple[str, ...], expires_at: datetime | None
    ) -> IssuedKey:
        require(caller, Scope.ADMIN)
        self._check(name=name, profile=profile, scopes=scopes, expires_at=expires_at)
        key = generate_key()
        record = await self.store.create(key, name=name, profile=profile, scopes=scopes, expires_at=expires_at)
        self.cache.remember(record)
        return IssuedKey(record, key.secret)

    async def list(self, caller: Principal) -> list[ApiKeyRecord]:
        require(caller, Scope.ADMIN)
        return await self.store.list()

    async def revoke(self, caller: Principal, key_id: str) -> ApiKeyRecord:
        require(caller, Scope.ADMIN)
        record = await self.store.revoke(key_id)
        self.cache.remember(record)
        return record

    async def rotate(self, caller: Principal, key_id: str) -> tuple[IssuedKey, ApiKeyRecord]:
        """A new key with the old one's name, profile, scopes and expiry; then the old one is revoked. The new
        key is stored first, so a failure between the two steps never leaves the holder without a key."""
        require(caller, Scope.ADMIN)
        old = next((k for k in await self.store.list() if k.key_id == key_id), None)
        if old is None:
            raise errors.NotFound(reason="API_KEY_NOT_FOUND", message=f"no API key {key_id}")
        if old.revoked:
            raise errors.FailedPrecondition(reason=Reason.API_KEY_REVOKED, message="a revoked key cannot be rotated")
        issued = await self.create(
            caller, name=old.name, profile=old.profile, scopes=tuple(sorted(old.scopes)), expires_at=old.expires_at
        )
        return issued, await self.revoke(caller, key_id)

    def _check(self, *, name: str, profile: str, scopes: tuple[str, ...], expires_at: datetime | None) -> None:
        violations = []
        if not name.strip() or len(name) > 128:
            violations.append(errors.FieldViolation("name", "must be 1-128 characters"))
        if profile not in self.known_profiles():
            violations.append(errors.FieldViolation("profile", f"must be one of {sorted(self.known_profiles())}"))
        unknown = sorted(set(scopes) - {s.value for s in Scope})
        if unknown:
            violations.append(errors.FieldViolation("scopes", f"unknown scopes {unknown}"))
        if expires_at is not None and expires_at <= self.clock():
            violations.append(errors.FieldViolation("expires_at", "must be in the future"))
        if violations:
            raise errors.InvalidArgument(
                reason=Reason.INVALID_ARGUMENT, message="invalid key request", violations=violations
            )
