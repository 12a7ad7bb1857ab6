"""The memory service's input rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from techno_core.errors import InvalidArgument
from techno_memory.domain.records import AuditEvent, AuditEventKind, NewApiKey
from techno_memory.domain.validation import (
    MAX_EVENTS_PER_REQUEST,
    trace_id_problem,
    validate_events,
    validate_key_id,
    validate_new_key,
    validate_trace_id,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
KEY_HASH = "a" * 64
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def event(**changes: Any) -> AuditEvent:
    fields: dict[str, Any] = {
        "event_id": "e-1",
        "trace_id": TRACE_ID,
        "kind": AuditEventKind.DECISION,
        "occurred_at": datetime(2025, 1, 2, tzinfo=UTC),
        "service": "gate",
    }
    return AuditEvent(**(fields | changes))


@pytest.mark.parametrize(
    ("trace_id", "valid"),
    [
        (TRACE_ID, True),
        ("", False),
        (TRACE_ID.upper(), False),  # W3C trace ids are lowercase
        (TRACE_ID[:-1], False),
        (TRACE_ID + "0", False),
        ("0" * 32, False),  # the W3C "invalid" trace id
        ("g" * 32, False),
    ],
)
def test_trace_id_must_be_32_lowercase_hex_digits(trace_id: str, valid: bool) -> None:
    assert (trace_id_problem(trace_id) is None) is valid


def test_valid_events_pass() -> None:
    validate_events([event(), event(event_id="e-2", kind=AuditEventKind.OUTCOME)])


def test_every_violation_of_every_event_is_reported_with_its_path() -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_events([event(), event(event_id="", trace_id="nope", service="", action="x" * 2000)])
    assert raised.value.reason == "INVALID_AUDIT_EVENT"
    fields = {violation.field for violation in raised.value.violations}
    assert fields == {"events[1].event_id", "events[1].trace_id", "events[1].service", "events[1].action"}


def test_an_append_needs_events_and_has_a_limit() -> None:
    with pytest.raises(InvalidArgument) as empty:
        validate_events([])
    assert empty.value.violations[0].field == "events"
    with pytest.raises(InvalidArgument):
        validate_events([event(event_id=str(n)) for n in range(MAX_EVENTS_PER_REQUEST + 1)])


def test_get_audit_trail_needs_a_valid_trace_id() -> None:
    validate_trace_id(TRACE_ID)
    with pytest.raises(InvalidArgument) as raised:
        validate_trace_id("")
    assert raised.value.reason == "INVALID_TRACE_ID"
    assert raised.value.violations[0].field == "trace_id"
    assert raised.value.violations[0].description == "required"


def test_new_key_needs_a_sha256_hex_hash_id_prefix_and_profile() -> None:
    validate_new_key(NewApiKey("key_1", "tk_ab12", KEY_HASH, "", "default"), now=NOW)  # a name is optional
    with pytest.raises(InvalidArgument) as raised:
        validate_new_key(NewApiKey("", "", KEY_HASH.upper(), "n", ""), now=NOW)
    assert raised.value.reason == "INVALID_API_KEY"
    assert {v.field for v in raised.value.violations} == {"key_id", "prefix", "key_hash", "profile"}


@pytest.mark.parametrize("key_hash", ["", "a" * 63, "a" * 65, "z" * 64])
def test_key_hash_must_be_64_lowercase_hex_digits(key_hash: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_new_key(NewApiKey("key_1", "tk_ab12", key_hash, "n", "default"), now=NOW)
    assert [v.field for v in raised.value.violations] == ["key_hash"]


def test_revoking_needs_a_key_id() -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_key_id("")
    assert raised.value.reason == "INVALID_KEY_ID"


def test_every_known_scope_and_a_future_expiry_pass() -> None:
    key = NewApiKey(
        "key_1", "tk_ab12", KEY_HASH, "n", "default", ("process", "audit:read", "admin"), NOW + timedelta(seconds=1)
    )
    validate_new_key(key, now=NOW)


def test_unknown_scopes_are_reported_by_index() -> None:
    key = NewApiKey("key_1", "tk_ab12", KEY_HASH, "n", "default", ("process", "Admin", "", "audit:write"))
    with pytest.raises(InvalidArgument) as raised:
        validate_new_key(key, now=NOW)
    assert raised.value.reason == "INVALID_API_KEY"
    assert [v.field for v in raised.value.violations] == ["scopes[1]", "scopes[2]", "scopes[3]"]
    assert "admin, audit:read, process" in raised.value.violations[0].description


@pytest.mark.parametrize("expires_at", [NOW, NOW - timedelta(days=1)])
def test_an_expiry_must_be_in_the_future(expires_at: datetime) -> None:
    key = NewApiKey("key_1", "tk_ab12", KEY_HASH, "n", "default", expires_at=expires_at)
    with pytest.raises(InvalidArgument) as raised:
        validate_new_key(key, now=NOW)
    assert [(v.field, v.description) for v in raised.value.violations] == [("expires_at", "must be in the future")]
