"""Who may call memory: the authorization table the shared interceptor enforces (``techno_core.authorization``).

Memory holds the audit trail, the API key hashes and people's data, so every method names its callers:

- the audit trail and the key store belong to the gate, the only service that decides and authenticates, and
  to the operator's tools (``techno-keys``); ``APPENDABLE_KINDS`` restricts what the others may append: the
  executor its circuit breaker transitions, the operator admin events only (memory itself records the
  operator's key changes, see ``application/operator_keys.py``);
- sessions and preferences are read and written by the gate (people's own routes) and the executor (chat
  history, prompt preferences);
- idempotency records are the gate's.
"""

from __future__ import annotations

from collections.abc import Iterable

from techno.memory.v1 import memory_pb2
from techno_core import errors
from techno_core.authorization import callers
from techno_core.identity import Identity

GATE, EXECUTOR, OPERATOR = Identity.GATE, Identity.EXECUTOR, Identity.OPERATOR

CALLERS = callers(
    {
        "AppendAuditEvents": frozenset({GATE, EXECUTOR, OPERATOR}),
        "GetAuditTrail": frozenset({GATE, OPERATOR}),
        "ListAuditEvents": frozenset({GATE, OPERATOR}),
        "CreateApiKey": frozenset({GATE, OPERATOR}),
        "ListApiKeys": frozenset({GATE, OPERATOR}),
        "RevokeApiKey": frozenset({GATE, OPERATOR}),
        "CreateSession": frozenset({GATE, EXECUTOR}),
        "GetSession": frozenset({GATE, EXECUTOR}),
        "DeleteSession": frozenset({GATE, EXECUTOR}),
        "AppendSessionMessages": frozenset({GATE, EXECUTOR}),
        "GetPreferences": frozenset({GATE, EXECUTOR}),
        "SetPreferences": frozenset({GATE, EXECUTOR}),
        "ExportPrincipalData": frozenset({GATE, OPERATOR}),
        "DeletePrincipalData": frozenset({GATE, OPERATOR}),
        "ClaimIdempotencyKey": frozenset({GATE}),
        "CompleteIdempotencyKey": frozenset({GATE}),
        "ReleaseIdempotencyKey": frozenset({GATE}),
    },
    "techno.memory.v1.MemoryService",
)

# What each caller may append to the audit trail, beyond being allowed to call AppendAuditEvents at all. The
# executor records its breakers only, the operator's tools admin events only: a DECISION or OUTCOME from either
# would be a forgery (only the gate decides).
APPENDABLE_KINDS: dict[Identity, frozenset[int]] = {
    EXECUTOR: frozenset({memory_pb2.AUDIT_EVENT_KIND_BREAKER}),
    OPERATOR: frozenset({memory_pb2.AUDIT_EVENT_KIND_ADMIN}),
}


def check_appendable(peer: Identity | None, kinds: Iterable[int]) -> None:
    """PermissionDenied when ``peer`` may not append an event of one of ``kinds``. ``None`` is the plaintext
    opt-out (no identities at all), where only the method table's absence applies."""
    allowed = APPENDABLE_KINDS.get(peer) if peer is not None else None
    if allowed is None:
        return
    refused = sorted({memory_pb2.AuditEventKind.Name(kind) for kind in kinds if kind not in allowed})
    if refused:
        raise errors.PermissionDenied(
            reason="PEER_NOT_AUTHORIZED", message=f"{peer} may not append {', '.join(refused)} events"
        )
