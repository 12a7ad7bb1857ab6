"""Who is calling: an API key from the in-process cache, or a bearer JWT verified locally. Neither costs a
database round trip; both end in a ``Principal`` or an ``Unauthenticated`` naming the reason."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from techno_core import errors
from techno_gate.application.ports import KeyDirectory
from techno_gate.domain.keys import KEY_SCHEME, hash_key
from techno_gate.domain.principal import CredentialKind, Principal, Scope
from techno_gate.domain.reasons import Reason


@dataclass(frozen=True)
class Credentials:
    """What the caller presented: ``x-api-key``, or the value of ``Authorization: Bearer``."""

    api_key: str | None = None
    bearer: str | None = None


class TokenVerifier(Protocol):
    def verify(self, token: str) -> Principal: ...


class NoTokens:
    """Bearer tokens not configured: every JWT is refused."""

    def verify(self, token: str) -> Principal:
        raise errors.Unauthenticated(reason=Reason.TOKEN_INVALID, message="bearer tokens are not configured")


_MESSAGES = {
    Reason.CREDENTIALS_MISSING: "an API key (X-API-Key or Authorization: Bearer) is required",
    Reason.API_KEY_INVALID: "the API key is not valid",
    Reason.API_KEY_REVOKED: "the API key has been revoked",
    Reason.API_KEY_EXPIRED: "the API key has expired",
}


def _refuse(reason: Reason) -> errors.Unauthenticated:
    return errors.Unauthenticated(reason=reason, message=_MESSAGES[reason])


@dataclass
class Authenticator:
    keys: KeyDirectory
    tokens: TokenVerifier
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def authenticate(self, credentials: Credentials) -> Principal:
        if not self.keys.ready:  # fail closed until the key cache has loaded once
            raise errors.Unavailable(reason=Reason.AUTH_UNAVAILABLE, message="authentication is not available yet")
        key = credentials.api_key
        if key is None and credentials.bearer is not None:
            if not credentials.bearer.startswith(KEY_SCHEME):
                return self.tokens.verify(credentials.bearer)
            key = credentials.bearer
        if not key:
            raise _refuse(Reason.CREDENTIALS_MISSING)
        return self._api_key_principal(key)

    def _api_key_principal(self, secret: str) -> Principal:
        # The hash is the lookup key: no secret is compared in Python, so there is no timing to measure.
        record = self.keys.lookup(hash_key(secret))
        if record is None:
            raise _refuse(Reason.API_KEY_INVALID)
        if record.revoked:
            raise _refuse(Reason.API_KEY_REVOKED)
        if record.expired(self.clock()):
            raise _refuse(Reason.API_KEY_EXPIRED)
        return Principal(
            record.key_id, CredentialKind.API_KEY, record.profile, _scopes(record.scopes), record.expires_at
        )


@functools.lru_cache(maxsize=256)
def _scopes(stored: frozenset[str]) -> frozenset[Scope]:
    """A key's stored scopes that this gate knows (others give nothing). Kept per set: keys share a few sets,
    and building the members cost more than the rest of the look-up on every request."""
    return frozenset(Scope(s) for s in stored if s in Scope._value2member_map_)
