"""Memory's patterns match whole values: a trailing newline is refused like any other stray character."""

from __future__ import annotations

from datetime import timedelta

import pytest

from techno_core.errors import InvalidArgument
from techno_memory.domain.idempotency_validation import validate_claim
from techno_memory.domain.session_validation import validate_preferences
from techno_memory.domain.sessions import Preferences
from techno_memory.domain.validation import trace_id_problem

HASH = "a" * 64


def test_a_trace_id_with_a_trailing_newline_is_refused() -> None:
    assert trace_id_problem("0af7651916cd43dd8448eb211c80319c") is None
    assert trace_id_problem("0af7651916cd43dd8448eb211c80319c\n") is not None


@pytest.mark.parametrize(("key", "request_hash"), [("key\n", HASH), ("key", HASH + "\n")])
def test_an_idempotency_claim_with_a_trailing_newline_is_refused(key: str, request_hash: str) -> None:
    validate_claim("key_1", "key", HASH, timedelta(seconds=5))
    with pytest.raises(InvalidArgument):
        validate_claim("key_1", key, request_hash, timedelta(seconds=5))


def test_a_language_with_a_trailing_newline_is_refused() -> None:
    validate_preferences("key_1", Preferences(language="pt-BR"))
    with pytest.raises(InvalidArgument):
        validate_preferences("key_1", Preferences(language="pt-BR\n"))
