"""Input rules of sessions and preferences; like ``validation``, each reports every violation at once."""

from __future__ import annotations

import re
from collections.abc import Sequence

from techno_core.errors import FieldViolation, InvalidArgument
from techno_memory.domain.sessions import FORMATS, MESSAGE_ROLES, TONES, NewMessage, Preferences
from techno_memory.domain.validation import MAX_ID_LENGTH, text_problems

MAX_CONTENT_LENGTH = 100_000
# Bounds one request (the stored bound is the configured max messages per session).
MAX_MESSAGES_PER_APPEND = 100
# BCP 47-ish: a primary language subtag, then subtags (region, script, variant). 35 is RFC 5646's practical maximum.
_LANGUAGE = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})*")
MAX_LANGUAGE_LENGTH = 35
# C0 and C1 controls and DEL, except tab, line feed and carriage return (text has those). NUL in particular cannot
# be stored in PostgreSQL text; the others have no place in a conversation and can hide content from a reader.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")

INVALID_PRINCIPAL_ID = "INVALID_PRINCIPAL_ID"
INVALID_SESSION_REQUEST = "INVALID_SESSION_REQUEST"
INVALID_SESSION_MESSAGES = "INVALID_SESSION_MESSAGES"
INVALID_PREFERENCES = "INVALID_PREFERENCES"


def _principal_problems(principal_id: str) -> list[FieldViolation]:
    return text_problems("principal_id", principal_id, required=True, max_length=MAX_ID_LENGTH)


def validate_principal_id(principal_id: str) -> None:
    if violations := _principal_problems(principal_id):
        raise InvalidArgument(reason=INVALID_PRINCIPAL_ID, message="invalid principal_id", violations=violations)


def _session_ref_problems(session_id: str, principal_id: str) -> list[FieldViolation]:
    violations = text_problems("session_id", session_id, required=True, max_length=MAX_ID_LENGTH)
    return violations + _principal_problems(principal_id)


def validate_session_ref(session_id: str, principal_id: str) -> None:
    if violations := _session_ref_problems(session_id, principal_id):
        raise InvalidArgument(reason=INVALID_SESSION_REQUEST, message="invalid session request", violations=violations)


def _message_problems(message: NewMessage, path: str) -> list[FieldViolation]:
    violations = []
    if message.role not in MESSAGE_ROLES:
        violations.append(FieldViolation(f"{path}.role", f"must be one of {', '.join(sorted(MESSAGE_ROLES))}"))
    if not message.content:
        violations.append(FieldViolation(f"{path}.content", "required"))
    elif len(message.content) > MAX_CONTENT_LENGTH:
        violations.append(FieldViolation(f"{path}.content", f"longer than {MAX_CONTENT_LENGTH} characters"))
    elif _CONTROL.search(message.content):
        violations.append(FieldViolation(f"{path}.content", "contains control characters (only tab, LF, CR allowed)"))
    return violations


def validate_append(session_id: str, principal_id: str, messages: Sequence[NewMessage]) -> None:
    violations = _session_ref_problems(session_id, principal_id)
    if not messages:
        violations.append(FieldViolation("messages", "at least one message is required"))
    if len(messages) > MAX_MESSAGES_PER_APPEND:
        violations.append(FieldViolation("messages", f"at most {MAX_MESSAGES_PER_APPEND} messages per request"))
    for index, message in enumerate(messages):
        violations += _message_problems(message, f"messages[{index}]")
    if violations:
        raise InvalidArgument(
            reason=INVALID_SESSION_MESSAGES, message="invalid session messages", violations=violations
        )


def _choice_problem(path: str, value: str, allowed: frozenset[str]) -> list[FieldViolation]:
    if value and value not in allowed:
        return [FieldViolation(path, f"must be empty or one of {', '.join(sorted(allowed))}")]
    return []


def validate_preferences(principal_id: str, preferences: Preferences) -> None:
    violations = _principal_problems(principal_id)
    violations += _choice_problem("preferences.tone", preferences.tone, TONES)
    violations += _choice_problem("preferences.format", preferences.format, FORMATS)
    language = preferences.language
    if language and (len(language) > MAX_LANGUAGE_LENGTH or not _LANGUAGE.fullmatch(language)):
        violations.append(FieldViolation("preferences.language", "must be empty or a BCP 47 tag such as en or pt-BR"))
    if violations:
        raise InvalidArgument(reason=INVALID_PREFERENCES, message="invalid preferences", violations=violations)
