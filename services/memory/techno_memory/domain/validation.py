"""Input rules, checked before anything reaches the database.

Every rule reports all violations of a request at once (as ``FieldViolation``s with the request's field paths),
so a writer fixes its request in one round trip.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

from techno_core.errors import FieldViolation, InvalidArgument
from techno_memory.domain.records import API_KEY_SCOPES, AuditEvent, NewApiKey

# W3C trace-context: 32 lowercase hex digits, and all zeros is the "invalid" id.
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_INVALID_TRACE_ID = "0" * 32

# Column sizes of the schema (see adapters/tables.py); checked here so an oversized value is the caller's
# INVALID_ARGUMENT, not a database error.
MAX_ID_LENGTH = 128
MAX_TEXT_LENGTH = 1024
MAX_EVENTS_PER_REQUEST = 1000

INVALID_AUDIT_EVENT = "INVALID_AUDIT_EVENT"
INVALID_TRACE_ID = "INVALID_TRACE_ID"
INVALID_API_KEY = "INVALID_API_KEY"
INVALID_KEY_ID = "INVALID_KEY_ID"
INVALID_KEY_LISTING = "INVALID_KEY_LISTING"


def trace_id_problem(trace_id: str) -> str | None:
    if not trace_id:
        return "required"
    if not _TRACE_ID.fullmatch(trace_id) or trace_id == _INVALID_TRACE_ID:
        return "must be a W3C trace id: 32 lowercase hex digits, not all zero"
    return None


def text_problems(path: str, value: str, *, required: bool, max_length: int) -> list[FieldViolation]:
    if not value:
        return [FieldViolation(path, "required")] if required else []
    if len(value) > max_length:
        return [FieldViolation(path, f"longer than {max_length} characters")]
    return []


def event_violations(event: AuditEvent, path: str) -> list[FieldViolation]:
    """Violations of one event; ``path`` prefixes the field names (``events[3]``)."""
    violations = text_problems(f"{path}.event_id", event.event_id, required=True, max_length=MAX_ID_LENGTH)
    if (problem := trace_id_problem(event.trace_id)) is not None:
        violations.append(FieldViolation(f"{path}.trace_id", problem))
    violations += text_problems(f"{path}.service", event.service, required=True, max_length=MAX_ID_LENGTH)
    violations += text_problems(f"{path}.principal_id", event.principal_id, required=False, max_length=MAX_ID_LENGTH)
    for name in ("action", "context_id", "result"):
        violations += text_problems(f"{path}.{name}", getattr(event, name), required=False, max_length=MAX_TEXT_LENGTH)
    return violations


def validate_events(events: Sequence[AuditEvent], *, extra: Sequence[FieldViolation] = ()) -> None:
    """``extra`` carries violations found while decoding (missing kind or timestamp), reported together."""
    violations = list(extra)
    if not events:
        violations.append(FieldViolation("events", "at least one event is required"))
    if len(events) > MAX_EVENTS_PER_REQUEST:
        violations.append(FieldViolation("events", f"at most {MAX_EVENTS_PER_REQUEST} events per request"))
    for index, event in enumerate(events):
        violations += event_violations(event, f"events[{index}]")
    if violations:
        raise InvalidArgument(reason=INVALID_AUDIT_EVENT, message="invalid audit events", violations=violations)


def validate_trace_id(trace_id: str) -> None:
    if (problem := trace_id_problem(trace_id)) is not None:
        raise InvalidArgument(
            reason=INVALID_TRACE_ID, message=f"trace_id {problem}", violations=[FieldViolation("trace_id", problem)]
        )


def _scope_violations(scopes: Sequence[str]) -> list[FieldViolation]:
    allowed = ", ".join(sorted(API_KEY_SCOPES))
    return [
        FieldViolation(f"scopes[{index}]", f"unknown scope {scope!r}: must be one of {allowed}")
        for index, scope in enumerate(scopes)
        if scope not in API_KEY_SCOPES
    ]


def validate_new_key(key: NewApiKey, *, now: datetime) -> None:
    """``now`` is this service's clock: a key must not be born expired (it would be listed, cached and never
    usable, which hides the operator's mistake)."""
    violations = text_problems("key_id", key.key_id, required=True, max_length=MAX_ID_LENGTH)
    violations += text_problems("prefix", key.prefix, required=True, max_length=MAX_ID_LENGTH)
    if not _SHA256_HEX.fullmatch(key.key_hash):
        violations.append(FieldViolation("key_hash", "must be a SHA-256 digest: 64 lowercase hex digits"))
    violations += text_problems("name", key.name, required=False, max_length=MAX_TEXT_LENGTH)
    violations += text_problems("profile", key.profile, required=True, max_length=MAX_ID_LENGTH)
    violations += _scope_violations(key.scopes)
    if key.expires_at is not None and key.expires_at <= now:
        violations.append(FieldViolation("expires_at", "must be in the future"))
    if violations:
        raise InvalidArgument(reason=INVALID_API_KEY, message="invalid API key", violations=violations)


def validate_key_id(key_id: str) -> None:
    violations = text_problems("key_id", key_id, required=True, max_length=MAX_ID_LENGTH)
    if violations:
        raise InvalidArgument(reason=INVALID_KEY_ID, message="invalid key_id", violations=violations)
