"""Shape checks of a request that every action shares. Per-action input checks belong to the executor's
action catalogue; these run first so nothing malformed is even recorded as an action. The rules are
``techno_core.contract``'s, which the OpenAPI document states too; each matches the whole value, so a trailing
newline is refused."""

from __future__ import annotations

from techno_core.contract import ACTION_NAME, CONTEXT_ID, SESSION_ID
from techno_core.errors import FieldViolation


def request_violations(
    *, action: str, context_id: str, session_id: str, has_payload: bool, payload_bytes: int, max_payload_bytes: int
) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    if not action:
        violations.append(FieldViolation("action", "is required"))
    elif not ACTION_NAME.accepts(action):
        violations.append(FieldViolation("action", "must be a lowercase action name, e.g. summarize"))
    if not context_id:
        violations.append(FieldViolation("context_id", "is required"))
    elif not CONTEXT_ID.accepts(context_id):
        violations.append(FieldViolation("context_id", "must be 1-128 characters of letters, digits and ._:/-"))
    if not SESSION_ID.accepts(session_id):  # empty: no session
        violations.append(FieldViolation("session_id", "must be 1-128 characters of letters, digits and ._:-"))
    if not has_payload:
        violations.append(FieldViolation("payload", "is required (a JSON object)"))
    elif payload_bytes > max_payload_bytes:
        violations.append(FieldViolation("payload", f"is larger than {max_payload_bytes} bytes"))
    return violations
