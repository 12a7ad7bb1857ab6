"""API key generation and the bearer/x-api-key metadata parsing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from techno_core import errors
from techno_gate.application.authenticate import Authenticator, Credentials, NoTokens
from techno_gate.domain.keys import generate_key, hash_key
from techno_gate.domain.reasons import Reason
from techno_gate.entrypoints.grpc import presented_credentials

from .fakes import FakeKeys, stored_key


def test_keys_are_unique_high_entropy_and_only_their_hash_is_derived() -> None:
    keys = [generate_key() for _ in range(200)]
    assert len({k.secret for k in keys}) == 200
    assert len({k.key_id for k in keys}) == 200
    for key in keys[:5]:
        assert key.secret.startswith("tk_")
        assert key.secret.startswith(key.prefix)
        assert len(key.prefix) == 11
        assert len(key.secret) > 50
        assert key.key_hash == hash_key(key.secret)
        assert key.secret not in key.key_hash


class Metadata:
    def __init__(self, *pairs: tuple[str, str]) -> None:
        self._pairs = pairs

    def invocation_metadata(self) -> Any:
        return self._pairs


def test_both_headers_are_read() -> None:
    credentials = presented_credentials(Metadata(("authorization", "Bearer b"), ("x-api-key", "a")))  # type: ignore[arg-type]
    assert credentials == Credentials(api_key="a", bearer="b")


def test_bearer_is_read_case_insensitively() -> None:
    assert presented_credentials(Metadata(("authorization", "bearer  tk_x "))).bearer == "tk_x"  # type: ignore[arg-type]


def test_other_schemes_and_absence_give_nothing() -> None:
    assert presented_credentials(Metadata(("authorization", "Basic abc"))) == Credentials()  # type: ignore[arg-type]
    assert presented_credentials(Metadata()) == Credentials()  # type: ignore[arg-type]


def test_a_key_with_an_expiry_works_until_that_instant_and_is_refused_from_it() -> None:
    expires_at = datetime(2030, 1, 1, tzinfo=UTC)
    key, record = stored_key(expires_at=expires_at)
    now = [expires_at - timedelta(days=30)]
    authenticator = Authenticator(FakeKeys(record), NoTokens(), clock=lambda: now[0])
    for moment in (expires_at - timedelta(days=30), expires_at - timedelta(microseconds=1)):
        now[0] = moment
        principal = authenticator.authenticate(Credentials(api_key=key.secret))
        assert (principal.id, principal.expires_at) == (record.key_id, expires_at)
    for moment in (expires_at, expires_at + timedelta(days=1)):
        now[0] = moment
        with pytest.raises(errors.Unauthenticated) as refused:
            authenticator.authenticate(Credentials(api_key=key.secret))
        assert refused.value.reason == Reason.API_KEY_EXPIRED
