"""HTTP errors of the edge: the gRPC → HTTP status table and the one JSON error body every failure answers with.

The body is Google's AIP-193 JSON form of a ``google.rpc.Status`` (what Google's REST APIs answer)::

    {"error": {"code": 403, "message": "...", "status": "PERMISSION_DENIED", "details": [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "ACTION_NOT_ALLOWED",
         "domain": "techno.dev", "metadata": {"traceId": "4bf9…"}},
        {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [{"field": …, "description": …}]},
        …]}}

``code`` is the HTTP status (grpc-gateway's unwrapped form puts the gRPC code there instead), ``status`` the gRPC
code's name, ``details`` the status details as proto3 JSON: an upstream's are passed through as it sent them
(rendered by ``techno_edge.adapters.upstream``), the edge's own are built here in the same form. Every body has
an ErrorInfo, and its metadata carries the request's trace id as ``traceId``.

Codes are handled by name (``"NOT_FOUND"``) so this module stays free of grpc.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# grpc-gateway's table (runtime/errors.go HTTPStatusFromCode), the de-facto standard of REST over gRPC.
HTTP_STATUS_BY_GRPC_CODE: dict[str, int] = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "UNAUTHENTICATED": 401,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
}

# The ``@type`` of the google.rpc details the edge builds itself (upstream ones pass through as they come).
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
QUOTA_FAILURE = "type.googleapis.com/google.rpc.QuotaFailure"
RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
# The gate's ErrorInfo domain (techno_core.grpc_errors.ERROR_DOMAIN; a unit test keeps them equal): the edge's own
# reasons are documented beside the gate's, in docs/reason-codes.md, so they share it.
ERROR_DOMAIN = "techno.dev"
TRACE_ID_KEY = "traceId"  # lowerCamelCase, as AIP-193 asks of ErrorInfo metadata keys

# Reasons of the failures the edge itself detects, before any upstream is called (ErrorInfo-style names).
ROUTE_NOT_FOUND = "ROUTE_NOT_FOUND"
METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
BODY_TOO_LARGE = "BODY_TOO_LARGE"
INVALID_ARGUMENT = "INVALID_ARGUMENT"
INTERNAL = "INTERNAL"
UPSTREAM_NOT_STARTED = "UPSTREAM_NOT_STARTED"
UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
# The gate's reasons for malformed credentials and idempotency keys, given by the edge to a header too large to
# forward, so a client reads the same reason whichever of the two refused it.
API_KEY_INVALID = "API_KEY_INVALID"
TOKEN_INVALID = "TOKEN_INVALID"  # noqa: S105  (a reason code, not a token)
IDEMPOTENCY_KEY_INVALID = "IDEMPOTENCY_KEY_INVALID"


def http_status_of(grpc_code: str) -> int:
    """Unknown codes (a newer gRPC, a buggy server) are server errors."""
    return HTTP_STATUS_BY_GRPC_CODE.get(grpc_code, 500)


@dataclass(frozen=True)
class Violation:
    field: str
    description: str


@dataclass(eq=False)
class HttpError(Exception):
    """A failure answered as JSON. ``grpc_code`` is the gRPC code name reported in ``error.status``.

    ``reasons``, ``violations``, ``quota_violations`` and ``retry_after_seconds`` are what the failure says, for
    whoever reads it in code (the Retry-After header, another API's error shape). ``details``, when set, are an
    upstream's ``google.rpc`` details already in proto3 JSON and are answered as they are; otherwise the details
    are built from the fields."""

    status: int
    grpc_code: str
    message: str
    reasons: tuple[str, ...] = ()
    violations: tuple[Violation, ...] = ()
    retry_after_seconds: int | None = None
    quota_violations: tuple[Violation, ...] = ()  # field = the limit's subject
    headers: tuple[tuple[str, str], ...] = field(default=())
    details: tuple[dict[str, Any], ...] = ()

    def __post_init__(self) -> None:
        super().__init__(self.message)

    @classmethod
    def from_grpc(cls, grpc_code: str, message: str, **details: Any) -> HttpError:
        return cls(http_status_of(grpc_code), grpc_code, message, **details)

    def body(self, trace_id: str) -> dict[str, Any]:
        details = list(self.details) if self.details else self._own_details()
        return {
            "error": {
                "code": self.status,
                "message": self.message,
                "status": self.grpc_code,
                "details": _with_trace_id(details, self.reasons or (self.grpc_code,), trace_id),
            }
        }

    def _own_details(self) -> list[dict[str, Any]]:
        details: list[dict[str, Any]] = [_error_info(reason) for reason in self.reasons]
        if self.violations:
            violations = [{"field": v.field, "description": v.description} for v in self.violations]
            details.append({"@type": BAD_REQUEST, "fieldViolations": violations})
        if self.quota_violations:
            quota = [{"subject": v.field, "description": v.description} for v in self.quota_violations]
            details.append({"@type": QUOTA_FAILURE, "violations": quota})
        if self.retry_after_seconds is not None:
            details.append({"@type": RETRY_INFO, "retryDelay": f"{self.retry_after_seconds}s"})
        return details


def _error_info(reason: str) -> dict[str, Any]:
    return {"@type": ERROR_INFO, "reason": reason, "domain": ERROR_DOMAIN}


def _with_trace_id(details: list[dict[str, Any]], reasons: tuple[str, ...], trace_id: str) -> list[dict[str, Any]]:
    """The trace id goes into the first ErrorInfo's metadata (a copy: an upstream's details are not changed);
    details without one (an upstream that sent none) get one first, with the failure's reason."""
    at = next((i for i, detail in enumerate(details) if detail.get("@type") == ERROR_INFO), None)
    if at is None:
        details.insert(0, _error_info(reasons[0]))
        at = 0
    if trace_id:  # empty for an answer no request was parsed for (a connection shed before its first byte)
        info = details[at]
        details[at] = {**info, "metadata": {**info.get("metadata", {}), TRACE_ID_KEY: trace_id}}
    return details


def invalid_argument(message: str, *violations: Violation) -> HttpError:
    return HttpError(400, "INVALID_ARGUMENT", message, (INVALID_ARGUMENT,), tuple(violations))


def not_found() -> HttpError:
    return HttpError(404, "NOT_FOUND", "no route matches this path", (ROUTE_NOT_FOUND,))


def method_not_allowed(allowed: tuple[str, ...]) -> HttpError:
    return HttpError(
        405,
        "UNIMPLEMENTED",
        "this path does not accept this method",
        (METHOD_NOT_ALLOWED,),
        headers=(("allow", ", ".join(allowed)),),
    )


def body_too_large(limit: int) -> HttpError:
    return HttpError(413, "RESOURCE_EXHAUSTED", f"request body exceeds {limit} bytes", (BODY_TOO_LARGE,))


def unsupported_media_type() -> HttpError:
    return HttpError(
        415,
        "INVALID_ARGUMENT",
        "the request body must be JSON: send Content-Type: application/json",
        (UNSUPPORTED_MEDIA_TYPE,),
        (Violation("Content-Type", "must be application/json"),),
    )


def malformed_forwarded_header(name: str, problem: str) -> HttpError:
    """A credential or idempotency key no real one looks like (longer than any, or not printable ASCII): refused
    before it is forwarded, as what it is: a bad key is 400, a credential that cannot be one is 401 with the
    credential's own reason, like any other invalid credential."""
    if name == "idempotency-key":
        return HttpError(
            400,
            "INVALID_ARGUMENT",
            f"the Idempotency-Key header {problem}",
            (IDEMPOTENCY_KEY_INVALID,),
            (Violation("Idempotency-Key", problem),),
        )
    reason, header = (API_KEY_INVALID, "X-API-Key") if name == "x-api-key" else (TOKEN_INVALID, "Authorization")
    return HttpError(401, "UNAUTHENTICATED", f"the {header} header {problem}: it cannot be a credential", (reason,))


def internal() -> HttpError:
    # Never the exception's text: it may carry internals. The log has it, under the same trace id.
    return HttpError(500, "INTERNAL", "internal error; see the logs under this trace id", (INTERNAL,))
