"""Key management for operators (the ``admin`` scope): create, list, revoke, rotate."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from techno_core import errors
from techno_core.contract import API_KEY_NAME
from techno_gate.application.admin_audit import AdminAudit, AdminOperation
from techno_gate.application.ports import KeyAdminStore
from techno_gate.application.scopes import Caller
from techno_gate.domain.keys import ApiKeyRecord, NewApiKey, generate_key
from techno_gate.domain.principal import Scope
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
    """Each change is an admin operation of ``audit`` (recorded before it runs; see ``admin_audit``)."""

    store: KeyAdminStore
    cache: KeyCacheWriter
    known_profiles: Callable[[], set[str]]
    audit: AdminAudit
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    async def create(
        self, caller: Caller, *, name: str, profile: str, scopes: tuple[str, ...], expires_at: datetime | None
    ) -> IssuedKey:
        key = generate_key()
        attributes = _key_attributes(key.key_id, name=name, profile=profile, scopes=scopes, expires_at=expires_at)
        operation = AdminOperation("api_key.create", key.key_id, attributes)

        async def create() -> IssuedKey:
            self._check(profile=profile, scopes=scopes, expires_at=expires_at)
            return await self._store_new(key, name=name, profile=profile, scopes=scopes, expires_at=expires_at)

        def check_name() -> None:  # before anything is recorded: the name goes into the audit event
            if not API_KEY_NAME.accepts(name):
                raise errors.InvalidArgument(
                    reason=Reason.INVALID_ARGUMENT,
                    message="invalid key request",
                    violations=[errors.FieldViolation("name", "must be 1-128 characters, not all spaces, no controls")],
                )

        return await self.audit.run(caller, operation, create, check=check_name)

    async def list(self) -> list[ApiKeyRecord]:
        """Its caller is checked for the scope of ListApiKeys before it asks (``entrypoints.admin_grpc``)."""
        return await self.store.list()

    async def revoke(self, caller: Caller, key_id: str, *, force: bool = False) -> ApiKeyRecord:
        """Revoking the caller's own key needs ``force``: by mistake it would lock the operator out."""
        operation = AdminOperation("api_key.revoke", key_id, {"key_id": key_id, "force": force})

        async def revoke() -> ApiKeyRecord:
            if key_id == caller.id and not force:
                raise errors.FailedPrecondition(
                    reason=Reason.SELF_REVOCATION,
                    message="this is the key of this request; revoke it with force=true if that is meant",
                )
            return await self._revoke(key_id)

        return await self.audit.run(caller, operation, revoke)

    async def rotate(self, caller: Caller, key_id: str) -> tuple[IssuedKey, ApiKeyRecord]:
        """A new key with the old one's name, profile, scopes and expiry; then the old one is revoked. The new
        key is stored first, so a failure between the two steps never leaves the holder without a key."""
        key = generate_key()
        operation = AdminOperation("api_key.rotate", key_id, {"key_id": key_id, "new_key_id": key.key_id})

        async def rotate() -> tuple[IssuedKey, ApiKeyRecord]:
            old = next((k for k in await self.store.list() if k.key_id == key_id), None)
            if old is None:
                raise errors.NotFound(reason="API_KEY_NOT_FOUND", message=f"no API key {key_id}")
            if old.revoked:
                raise errors.FailedPrecondition(
                    reason=Reason.API_KEY_REVOKED, message="a revoked key cannot be rotated"
                )
            issued = await self._store_new(
                key, name=old.name, profile=old.profile, scopes=tuple(sorted(old.scopes)), expires_at=old.expires_at
            )
            return issued, await self._revoke(key_id)

        return await self.audit.run(caller, operation, rotate)

    async def _store_new(
        self, key: NewApiKey, *, name: str, profile: str, scopes: tuple[str, ...], expires_at: datetime | None
    ) -> IssuedKey:
        record = await self.store.create(key, name=name, profile=profile, scopes=scopes, expires_at=expires_at)
        self.cache.remember(record)
        return IssuedKey(record, key.secret)

    async def _revoke(self, key_id: str) -> ApiKeyRecord:
        record = await self.store.revoke(key_id)
        self.cache.remember(record)
        return record

    def _check(self, *, profile: str, scopes: tuple[str, ...], expires_at: datetime | None) -> None:
        violations = []
        if profile not in self.known_profiles():
            violations.append(errors.FieldViolation("profile", f"must be one of {sorted(self.known_profiles())}"))
        unknown = sorted(set(scopes) - {s.value for s in Scope})
        if not scopes:
            violations.append(errors.FieldViolation("scopes", f"name at least one of {[s.value for s in Scope]}"))
        elif unknown:
            violations.append(errors.FieldViolation("scopes", f"unknown scopes {unknown}"))
        if expires_at is not None and expires_at <= self.clock():
            violations.append(errors.FieldViolation("expires_at", "must be in the future"))
        if violations:
            raise errors.InvalidArgument(
                reason=Reason.INVALID_ARGUMENT, message="invalid key request", violations=violations
            )


def _key_attributes(
    key_id: str, *, name: str, profile: str, scopes: tuple[str, ...], expires_at: datetime | None
) -> dict[str, Any]:
    """What an admin event says of a key: never its secret or hash."""
    attributes: dict[str, Any] = {"key_id": key_id, "name": name, "profile": profile, "scopes": list(scopes)}
    if expires_at is not None:
        attributes["expires_at"] = expires_at.isoformat()
    return attributes
