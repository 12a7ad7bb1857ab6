"""gRPC status → HTTP status and the AIP-193 JSON error body, from a received AioRpcError or the edge itself."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from techno_core import errors, grpc_errors
from techno_core.grpc_errors import to_rpc_status
from techno_edge.adapters.upstream import http_error_of
from techno_edge.domain.errors import (
    ERROR_DOMAIN,
    HTTP_STATUS_BY_GRPC_CODE,
    HttpError,
    Violation,
    http_status_of,
    method_not_allowed,
    not_found,
)

GRPC_GATEWAY_TABLE = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}


@pytest.mark.parametrize(("code", "http"), GRPC_GATEWAY_TABLE.items(), ids=lambda v: str(v))
def test_every_grpc_code_maps_like_grpc_gateway(code: grpc.StatusCode, http: int) -> None:
    assert http_status_of(code.name) == http


def test_the_table_covers_every_grpc_code() -> None:
    assert set(HTTP_STATUS_BY_GRPC_CODE) == {code.name for code in grpc.StatusCode}
    assert http_status_of("SOMETHING_NEW") == 500


def _rpc_error(status: status_pb2.Status) -> grpc.aio.AioRpcError:
    code = next(c for c in grpc.StatusCode if c.value[0] == status.code)
    trailers = grpc.aio.Metadata(("grpc-status-details-bin", status.SerializeToString()))
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailers, status.message, None)


def _detail(body: dict[str, Any], type_name: str) -> dict[str, Any]:
    found = [d for d in body["error"]["details"] if d["@type"] == f"type.googleapis.com/google.rpc.{type_name}"]
    assert len(found) == 1, body
    detail: dict[str, Any] = found[0]
    return detail


def test_every_detail_of_the_status_reaches_the_body_as_aip_193_json() -> None:
    status = to_rpc_status(
        errors.ResourceExhausted(
            reason="RATE_LIMITED",
            message="rate limit reached",
            metadata={"scope": "process"},
            violations=[errors.FieldViolation("payload.text", "required")],
            retry_after_seconds=1.2,
            quota_violations=[errors.QuotaViolation("key/k1/requests", "10 per minute")],
        )
    )
    error = http_error_of(_rpc_error(status))
    assert error.status == 429
    assert error.retry_after_seconds == 2  # rounded up
    assert error.body("abc") == {
        "error": {
            "code": 429,
            "message": "rate limit reached",
            "status": "RESOURCE_EXHAUSTED",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "RATE_LIMITED",
                    "domain": "techno.dev",
                    "metadata": {"scope": "process", "traceId": "abc"},
                },
                {
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [{"field": "payload.text", "description": "required"}],
                },
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [{"subject": "key/k1/requests", "description": "10 per minute"}],
                },
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.200s"},
            ],
        }
    }


def test_the_trace_id_is_added_to_a_copy_of_the_upstream_details() -> None:
    error = http_error_of(_rpc_error(to_rpc_status(errors.NotFound(reason="SESSION_NOT_FOUND", message="gone"))))
    first, second = error.body("one"), error.body("two")
    assert _detail(first, "ErrorInfo")["metadata"] == {"traceId": "one"}
    assert _detail(second, "ErrorInfo")["metadata"] == {"traceId": "two"}


def _packed(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def test_debug_info_and_unknown_details_are_not_passed_through() -> None:
    status = to_rpc_status(errors.Internal(reason="EXECUTION_FAILED", message="failed"))
    status.details.append(_packed(error_details_pb2.DebugInfo(stack_entries=["File secret.py, line 1"])))
    status.details.append(any_pb2.Any(type_url="type.googleapis.com/acme.Secret", value=b"\x0a\x01x"))
    body = http_error_of(_rpc_error(status)).body("t")
    assert [d["@type"] for d in body["error"]["details"]] == ["type.googleapis.com/google.rpc.ErrorInfo"]
    assert "secret" not in json.dumps(body)


def test_an_upstream_error_without_error_info_gets_one_named_after_its_code() -> None:
    status = status_pb2.Status(code=grpc.StatusCode.NOT_FOUND.value[0], message="no such thing")
    body = http_error_of(_rpc_error(status)).body("t")
    assert body["error"]["details"] == [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "NOT_FOUND",
            "domain": "techno.dev",
            "metadata": {"traceId": "t"},
        }
    ]


def test_the_edges_own_details_are_what_json_format_renders_for_the_same_status() -> None:
    """The edge builds its own details by hand (the domain stays free of protobuf): they must be exactly what
    an upstream's identical status renders to."""
    own = HttpError(
        429,
        "RESOURCE_EXHAUSTED",
        "slow down",
        ("RATE_LIMITED",),
        (Violation("body", "must be an object"),),
        retry_after_seconds=3,
        quota_violations=(Violation("connections", "too many"),),
    )
    status = to_rpc_status(
        errors.ResourceExhausted(
            reason="RATE_LIMITED",
            message="slow down",
            violations=[errors.FieldViolation("body", "must be an object")],
            retry_after_seconds=3,
            quota_violations=[errors.QuotaViolation("connections", "too many")],
        )
    )
    assert own.body("t") == http_error_of(_rpc_error(status)).body("t")


def test_the_edges_domain_is_the_gates() -> None:
    assert ERROR_DOMAIN == grpc_errors.ERROR_DOMAIN


def test_an_answer_without_a_trace_has_no_trace_id_metadata() -> None:
    assert _detail(not_found().body(""), "ErrorInfo") == {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "ROUTE_NOT_FOUND",
        "domain": "techno.dev",
    }


def test_transport_failure_hides_the_address() -> None:
    error = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        "failed to connect to all addresses; last error: ipv4:10.0.0.7:50051",
        None,
    )
    mapped = http_error_of(error)
    assert mapped.status == 503
    assert "10.0.0.7" not in json.dumps(mapped.body("t"))
    assert _detail(mapped.body("t"), "ErrorInfo")["reason"] == "UPSTREAM_UNAVAILABLE"
    assert len(mapped.body("t")["error"]["details"]) == 1


def test_service_message_is_kept_when_it_gave_a_reason() -> None:
    status = to_rpc_status(errors.Unavailable(reason="AUDIT_UNAVAILABLE", message="audit down"))
    mapped = http_error_of(_rpc_error(status))
    assert (mapped.status, mapped.message, mapped.reasons) == (503, "audit down", ("AUDIT_UNAVAILABLE",))


def test_method_not_allowed_carries_allow_header() -> None:
    error = method_not_allowed(("GET", "DELETE"))
    assert error.status == 405
    assert ("allow", "GET, DELETE") in error.headers
