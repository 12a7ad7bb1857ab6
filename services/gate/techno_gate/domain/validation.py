"""Shape checks of a request that every action shares. Per-action input checks belong to the executor's
action catalogue; these run first so nothing malformed is even recorded as an action."""

from __future__ import annotations

import re

from techno_core.errors import FieldViolation

_CONTEXT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
_SESSION_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_ACTION = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def request_violations(
    *, action: str, context_id: str, session_id: str, has_payload: bool, payload_bytes: int, max_payload_bytes: int
) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    if not action:
        violations.append(FieldViolation("action", "is required"))
    elif not _ACTION.match(action):
        violations.append(FieldViolation("action", "must be a lowercase action name, e.g. summarize"))
    if not context_id:
        violations.append(FieldViolation("context_id", "is required"))
    elif not _CONTEXT_ID.match(context_id):
        violations.append(FieldViolation("context_id", "must be 1-128 characters of letters, digits and ._:/-"))
    if session_id and not _SESSION_ID.match(session_id):
        violations.append(FieldViolation("session_id", "must be 1-128 characters of letters, digits and ._:-"))
    if not has_payload:
        violations.append(FieldViolation("payload", "is required (a JSON object)"))
    elif payload_bytes > max_payload_bytes:
        violations.append(FieldViolation("payload", f"is larger than {max_payload_bytes} bytes"))
    return violations
