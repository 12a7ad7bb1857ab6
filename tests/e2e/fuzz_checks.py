"""A schemathesis check for the fuzz test (loaded through ``SCHEMATHESIS_HOOKS``): the rules that depend on the
running policy or on the moment cannot be written into /openapi.json, so a schema-valid request may be refused by
them, and only by them. Each operation lists the reasons (and for INVALID_ARGUMENT, the fields) that may refuse
schema-valid data; any other 400 on positive data fails, as does a 400 with no parseable error body."""

from __future__ import annotations

import json
from typing import Any

import schemathesis

# Process's: which actions exist and what each takes is the policy's (GET /v1/actions), the document only has the
# shape; which Idempotency-Keys the caller has used, and for what, is the moment's.
_PROCESS = {
    "ACTION_UNKNOWN": frozenset[str](),
    "PAYLOAD_INVALID": frozenset[str](),
    "IDEMPOTENCY_KEY_REUSED": frozenset[str](),
}
# operation id -> {reason: fields that reason may name (empty: any)}
RUNTIME_RULES: dict[str, dict[str, frozenset[str]]] = {
    "GateService_Process": _PROCESS,
    "GateService_StreamProcess": _PROCESS,  # the same request, answered as a stream
    "GateService_ListModels": {"ACTION_UNKNOWN": frozenset()},
    # The chat action's input rules are the policy's (a message not empty, without control characters, not too
    # long): the rendered conversation may break them. Idempotency-Keys as for Process.
    "OpenAI_CreateChatCompletion": {"PAYLOAD_INVALID": frozenset(), "IDEMPOTENCY_KEY_REUSED": frozenset()},
    # Profiles are the policy's; an expiry must be in the future at the moment of the call.
    "GateAdminService_CreateApiKey": {"INVALID_ARGUMENT": frozenset({"profile", "expires_at"})},
    # A revoked key cannot be rotated (FAILED_PRECONDITION): which keys are revoked is the moment's.
    "GateAdminService_RotateApiKey": {"API_KEY_REVOKED": frozenset()},
    # Revoking the caller's own key needs force=true: which key is the caller's is the request's credential.
    "GateAdminService_RevokeApiKey": {"API_KEY_REVOKED": frozenset(), "SELF_REVOCATION": frozenset()},
    # A page token is only valid for the export (and the person) it was issued for.
    "GateService_ExportMyData": {"INVALID_PAGE_TOKEN": frozenset()},
    # startTime must come before endTime; a page token is only valid with the filters it was issued for.
    "GateAdminService_ListAuditEvents": {
        "INVALID_AUDIT_QUERY": frozenset({"end_time"}),
        "INVALID_PAGE_TOKEN": frozenset(),
    },
}


def _error(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except ValueError:
        return {}
    error = document.get("error") if isinstance(document, dict) else None
    return error if isinstance(error, dict) else {}


def _details(error: dict[str, Any], type_name: str) -> list[dict[str, Any]]:
    """The AIP-193 details of one google.rpc type, read defensively: a malformed body is what this looks for."""
    details = error.get("details")
    if not isinstance(details, list):
        return []
    wanted = f"type.googleapis.com/google.rpc.{type_name}"
    return [d for d in details if isinstance(d, dict) and d.get("@type") == wanted]


@schemathesis.check
def refused_only_by_runtime_rules(ctx: Any, response: Any, case: Any) -> None:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 400:
        return
    operation_id = case.operation.definition.raw.get("operationId", "")
    allowed = RUNTIME_RULES.get(operation_id, {})
    error = _error(response.content)
    reasons = [d.get("reason") for d in _details(error, "ErrorInfo")]
    if "details" not in error and isinstance(error.get("reason_codes"), list):  # the OpenAI-compatible routes'
        reasons = list(error["reason_codes"])
    fields = {v.get("field") for d in _details(error, "BadRequest") for v in d.get("fieldViolations") or []}
    for reason in reasons:
        if reason not in allowed:
            raise AssertionError(f"schema-valid data refused with {reason}: {error.get('message')}")
        if allowed[reason] and not fields <= allowed[reason]:
            raise AssertionError(f"schema-valid data refused for {sorted(fields - allowed[reason])}")
    if not reasons:
        raise AssertionError(f"a 400 without an ErrorInfo reason: {response.content[:200]!r}")
