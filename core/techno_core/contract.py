"""Rules of the request fields that clients send, kept once: the services enforce them and the edge's OpenAPI
document states them from this same table, so a generated client and the server cannot disagree.

A rule's ``pattern`` is matched against the *whole* value (``re.fullmatch``): ``$`` would also match before a
trailing newline, so ``"public-x\\n"`` would pass a ``^public-.*$`` check and be stored with its newline. In the
OpenAPI document the pattern is anchored as ``^(?:…)$``, which in ECMA-262 (JSON Schema's dialect) matches only at
the very end.

``FIELDS`` is keyed by (full proto message name, proto field name). Only rules that hold for every caller and
every policy are here; what depends on the running policy (which actions and profiles exist, each action's
payload) or on the moment (an expiry in the future) is the server's to check and is described, not encoded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Text:
    """A string field: an optional full-match pattern, a length range and an optional set of choices."""

    pattern: str = ""
    min_length: int = 0
    max_length: int | None = None
    choices: tuple[str, ...] = ()
    description: str = ""
    _compiled: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.pattern:
            object.__setattr__(self, "_compiled", re.compile(self.pattern))

    def accepts(self, value: str) -> bool:
        """Whether ``value`` obeys the rule; the empty string is accepted when ``min_length`` is 0."""
        if not value:
            return self.min_length == 0
        if len(value) < self.min_length or (self.max_length is not None and len(value) > self.max_length):
            return False
        if self.choices and value not in self.choices:
            return False
        return self._compiled is None or self._compiled.fullmatch(value) is not None

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string"}
        if self.choices:
            schema["enum"] = [*([""] if self.min_length == 0 else []), *self.choices]
        else:
            if self.pattern:
                optional = "?" if self.min_length == 0 else ""
                schema["pattern"] = f"^(?:{self.pattern}){optional}$"
            if self.min_length:
                schema["minLength"] = self.min_length
            if self.max_length is not None:
                schema["maxLength"] = self.max_length
        if self.description:
            schema["description"] = self.description
        return schema


@dataclass(frozen=True)
class Integer:
    minimum: int | None = None
    maximum: int | None = None
    description: str = ""

    def accepts(self, value: int) -> bool:
        return (self.minimum is None or value >= self.minimum) and (self.maximum is None or value <= self.maximum)

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {}
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        if self.description:
            schema["description"] = self.description
        return schema


@dataclass(frozen=True)
class Number:
    minimum: float
    maximum: float

    def accepts(self, value: float) -> bool:
        return self.minimum <= value <= self.maximum

    def json_schema(self) -> dict[str, Any]:
        return {"minimum": self.minimum, "maximum": self.maximum}


Rule = Text | Integer | Number

# Identifiers: ASCII letters, digits and a little punctuation, never whitespace or control characters.
ACTION_NAME = Text(
    r"[a-z][a-z0-9_]{0,63}",
    min_length=1,
    max_length=64,
    description="An action of the caller's profile (GET /v1/actions lists them), e.g. summarize.",
)
CONTEXT_ID = Text(
    r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}",
    min_length=1,
    max_length=128,
    description="The caller's context (tenant, application, channel …) the policy is evaluated against.",
)
SESSION_ID = Text(
    r"[A-Za-z0-9._:-]{1,128}", max_length=128, description="A session of the caller (POST /v1/sessions makes one)."
)
# W3C trace-context: 32 lowercase hex digits, not all zero.
TRACE_ID = Text(r"(?!0{32})[0-9a-f]{32}", max_length=32)
# The Idempotency-Key header: printable ASCII without spaces.
IDEMPOTENCY_KEY = Text(r"[\x21-\x7e]{1,255}", min_length=1, max_length=255)
# BCP 47-ish: a primary language subtag, then subtags (region, script, variant); 35 is RFC 5646's practical maximum.
LANGUAGE_TAG = Text(r"[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})*", max_length=35, description="A BCP 47 tag such as en or pt-BR.")
TONES = ("neutral", "friendly", "formal", "concise")
FORMATS = ("text", "markdown", "bullet_points")
API_KEY_SCOPES = ("process", "audit:read", "admin")
MAX_AUDIT_PAGE_SIZE = 1000

_GATE = "techno.gate.v1."
_EXECUTOR = "techno.executor.v1."
_FAULT_RATES = ("error_rate", "rate_limit_rate", "timeout_rate", "hang_rate")  # each 0-1, together at most 1
_FAULT_COUNTS = ("latency_ms", "latency_jitter_ms", "retry_after_seconds")
# A key's name: shown in listings and logs, recorded in the audit trail. No control characters (a NUL cannot even
# be stored in PostgreSQL), and not only spaces.
_NAME_CHARACTER = r"[^\x00-\x1f\x7f-\x9f]"
API_KEY_NAME = Text(rf"{_NAME_CHARACTER}*[^\s\x00-\x1f\x7f-\x9f]{_NAME_CHARACTER}*", min_length=1, max_length=128)

FIELDS: dict[tuple[str, str], Rule] = {
    (_GATE + "ProcessRequest", "action"): ACTION_NAME,
    (_GATE + "ProcessRequest", "context_id"): CONTEXT_ID,
    (_GATE + "ProcessRequest", "session_id"): SESSION_ID,
    (_GATE + "ListAuditEventsRequest", "trace_id"): TRACE_ID,
    (_GATE + "ListAuditEventsRequest", "principal_id"): Text(max_length=128),
    (_GATE + "ListAuditEventsRequest", "page_size"): Integer(
        0, description=f"Default 100, {MAX_AUDIT_PAGE_SIZE} at most."
    ),
    (_GATE + "Preferences", "tone"): Text(choices=TONES),
    (_GATE + "Preferences", "format"): Text(choices=FORMATS),
    (_GATE + "Preferences", "language"): LANGUAGE_TAG,
    (_GATE + "CreateApiKeyRequest", "name"): API_KEY_NAME,
    (_GATE + "CreateApiKeyRequest", "scopes"): Text(choices=API_KEY_SCOPES, min_length=1),
    (_GATE + "GetSessionRequest", "session_id"): Text(min_length=1, max_length=128),
    (_GATE + "DeleteSessionRequest", "session_id"): Text(min_length=1, max_length=128),
    **{(_EXECUTOR + "FaultProfile", rate): Number(0.0, 1.0) for rate in _FAULT_RATES},
    **{(_EXECUTOR + "FaultProfile", count): Integer(0) for count in _FAULT_COUNTS},
}

# X-Request-Timeout: a plain decimal number of seconds, at least one second: at most 9 digits before the point and
# 9 after it; no sign, exponent, spaces or other digits. A shorter deadline can run out before the gate answers,
# and a 504 must not be something a client can ask for.
MIN_REQUEST_TIMEOUT_SECONDS = 1
_WHOLE_SECONDS = "|".join(f"0{{{zeros}}}[1-9][0-9]{{0,{8 - zeros}}}" for zeros in range(9))
REQUEST_TIMEOUT = Text(
    rf"(?:{_WHOLE_SECONDS})(?:\.[0-9]{{1,9}})?",
    min_length=1,
    max_length=19,
    description="Seconds the caller will wait (a decimal number from 1, such as 2.5); lowers (never raises) the "
    "edge's deadline.",
)
# The methods that honour the Idempotency-Key header (full proto method names); every other method ignores it.
IDEMPOTENT_METHODS = frozenset({"techno.gate.v1.GateService.Process", "techno.gate.v1.GateService.StreamProcess"})
# Message fields the server explains rather than enforces: a dry run answers 200 with the violations of the request
# it evaluates, so that request is described with its types only, none of the rules above.
EXPLAINED_FIELDS = frozenset({("techno.gate.v1.DryRunRequest", "request")})
# The scope each method needs besides valid credentials (full proto method names; "" for any authenticated caller):
# an API key's scopes, or a bearer token's `scope`/`scp` claim. The gate enforces it from here
# (techno_gate.application.scopes; a method missing from the table is refused to everyone); the edge's OpenAPI
# document states it per operation from here; tests/integration/test_generated_client.py checks the two agree.
METHOD_SCOPES: dict[str, str] = {
    _GATE + "GateService.Process": "process",
    _GATE + "GateService.StreamProcess": "process",
    _GATE + "GateService.ListActions": "",
    _GATE + "GateService.ListModels": "",
    _GATE + "GateService.CreateSession": "process",
    _GATE + "GateService.GetSession": "process",
    _GATE + "GateService.DeleteSession": "process",
    _GATE + "GateService.GetPreferences": "process",
    _GATE + "GateService.UpdatePreferences": "process",
    _GATE + "GateService.ExportMyData": "process",
    _GATE + "GateService.DeleteMyData": "process",
    _GATE + "GateAdminService.CreateApiKey": "admin",
    _GATE + "GateAdminService.ListApiKeys": "admin",
    _GATE + "GateAdminService.RevokeApiKey": "admin",
    _GATE + "GateAdminService.RotateApiKey": "admin",
    _GATE + "GateAdminService.SetProviderFaults": "admin",
    _GATE + "GateAdminService.ListCircuitBreakers": "admin",
    _GATE + "GateAdminService.SetCircuitBreaker": "admin",
    # A dry run explains the caller's own request: a caller without "process" is answered DENY SCOPE_MISSING.
    _GATE + "GateAdminService.DryRun": "",
    _GATE + "GateAdminService.ListAuditEvents": "audit:read",
}
