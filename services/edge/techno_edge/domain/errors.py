"""HTTP errors of the edge: the gRPC → HTTP status table and the one JSON error body every failure answers with.

Codes are handled by name (``"NOT_FOUND"``) so this module stays free of grpc; the adapter that receives an
``AioRpcError`` converts it with ``techno_edge.adapters.upstream.http_error_of``.
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
    """A failure answered as JSON. ``grpc_code`` is the gRPC code name reported in ``error.status``."""

    status: int
    grpc_code: str
    message: str
    reasons: tuple[str, ...] = ()
    violations: tuple[Violation, ...] = ()
    retry_after_seconds: int | None = None
    quota_violations: tuple[Violation, ...] = ()  # field = the limit's subject
    headers: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        super().__init__(self.message)

    @classmethod
    def from_grpc(cls, grpc_code: str, message: str, **details: Any) -> HttpError:
        return cls(http_status_of(grpc_code), grpc_code, message, **details)

    def body(self, trace_id: str) -> dict[str, Any]:
        error: dict[str, Any] = {
            "code": self.status,
            "status": self.grpc_code,
            "message": self.message,
            "reason_codes": list(self.reasons),
            "trace_id": trace_id,
        }
        if self.violations:
            error["field_violations"] = [{"field": v.field, "description": v.description} for v in self.violations]
        if self.quota_violations:
            error["quota_violations"] = [
                {"subject": v.field, "description": v.description} for v in self.quota_violations
            ]
        return {"error": error}


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
