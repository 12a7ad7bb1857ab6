"""gRPC status → HTTP status and the JSON error body, from a received AioRpcError."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import status_pb2

from techno_core import errors
from techno_core.grpc_errors import to_rpc_status
from techno_edge.adapters.upstream import http_error_of
from techno_edge.domain.errors import HTTP_STATUS_BY_GRPC_CODE, http_status_of, method_not_allowed

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


def test_error_info_bad_request_and_retry_info_reach_the_body() -> None:
    status = to_rpc_status(
        errors.InvalidArgument(
            reason="PAYLOAD_INVALID",
            message="payload.text is required",
            violations=[errors.FieldViolation("payload.text", "required")],
            retry_after_seconds=1.2,
        )
    )
    error = http_error_of(_rpc_error(status))
    assert error.status == 400
    assert error.retry_after_seconds == 2  # rounded up
    assert error.body("abc") == {
        "error": {
            "code": 400,
            "status": "INVALID_ARGUMENT",
            "message": "payload.text is required",
            "reason_codes": ["PAYLOAD_INVALID"],
            "trace_id": "abc",
            "field_violations": [{"field": "payload.text", "description": "required"}],
        }
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
    assert "10.0.0.7" not in mapped.message
    assert mapped.body("t")["error"]["reason_codes"] == ["UPSTREAM_UNAVAILABLE"]
    assert "field_violations" not in mapped.body("t")["error"]


def test_service_message_is_kept_when_it_gave_a_reason() -> None:
    status = to_rpc_status(errors.Unavailable(reason="AUDIT_UNAVAILABLE", message="audit down"))
    mapped = http_error_of(_rpc_error(status))
    assert (mapped.status, mapped.message, mapped.reasons) == (503, "audit down", ("AUDIT_UNAVAILABLE",))


def test_method_not_allowed_carries_allow_header() -> None:
    error = method_not_allowed(("GET", "DELETE"))
    assert error.status == 405
    assert ("allow", "GET, DELETE") in error.headers
