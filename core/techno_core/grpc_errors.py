"""Translate between domain errors and gRPC statuses carrying ``google.rpc`` details.

Servers: ``to_rpc_status`` builds the status a ``DomainError`` is answered with. Clients: ``from_rpc_error``
turns a received ``AioRpcError`` back into the matching ``DomainError``, so a service can pass a downstream
denial through with its reason intact.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from techno_core import errors

ERROR_DOMAIN = "techno.dev"
log = logging.getLogger(__name__)
# A status with these codes and no reason is the transport's, not an answer of the service: its text names
# internal addresses ("ipv4:10.0.0.7:50052: Failed to connect"), so it stays in the log.
_TRANSPORT_MESSAGES = {
    grpc.StatusCode.UNAVAILABLE: "a service the request needs could not be reached",
    grpc.StatusCode.UNKNOWN: "a service the request needs failed",
    grpc.StatusCode.INTERNAL: "a service the request needs failed",
    grpc.StatusCode.CANCELLED: "the call to a service the request needs was cancelled",
    grpc.StatusCode.DEADLINE_EXCEEDED: "a service the request needs did not answer in time",
    # gRPC's own RESOURCE_EXHAUSTED (a message over the size limit, a full buffer) is a failure of this service,
    # not the caller's quota: it becomes INTERNAL (500), never a 429 that asks for a retry that cannot succeed.
    grpc.StatusCode.RESOURCE_EXHAUSTED: "a service the request needs could not exchange a message",
}

_CODES: dict[type[errors.DomainError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Aborted: grpc.StatusCode.ABORTED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Internal: grpc.StatusCode.INTERNAL,
}
_CLASSES = {code: cls for cls, code in _CODES.items()}


def status_code_of(error: errors.DomainError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in _CODES:
            return _CODES[cls]
    return grpc.StatusCode.INTERNAL


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_rpc_status(error: errors.DomainError) -> status_pb2.Status:
    code = status_code_of(error)
    details = [_pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata))]
    if error.violations:
        violations = [
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in error.violations
        ]
        details.append(_pack(error_details_pb2.BadRequest(field_violations=violations)))
    if error.quota_violations:
        quota = [
            error_details_pb2.QuotaFailure.Violation(subject=v.subject, description=v.description)
            for v in error.quota_violations
        ]
        details.append(_pack(error_details_pb2.QuotaFailure(violations=quota)))
    if error.retry_after_seconds is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(error.retry_after_seconds * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    return status_pb2.Status(code=code.value[0], message=error.message, details=details)


def to_grpc_status(error: errors.DomainError) -> grpc.Status:
    return rpc_status.to_status(to_rpc_status(error))


def error_info_of(status: status_pb2.Status) -> error_details_pb2.ErrorInfo | None:
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def rpc_status_of(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The full status of a failed call: the rich one from trailers if the server sent it, else code + message."""
    trailers: Any = error.trailing_metadata() or ()
    for key, value in trailers:
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    return status_pb2.Status(code=error.code().value[0], message=error.details() or "")


@dataclass
class ErrorDetails:
    """The ``google.rpc`` details of a status, read once for every consumer (the gate passing errors on, the
    edge rendering them as JSON)."""

    reasons: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    violations: list[errors.FieldViolation] = field(default_factory=list)
    quota: list[errors.QuotaViolation] = field(default_factory=list)
    retry_after: float | None = None


def details_of(status: status_pb2.Status) -> ErrorDetails:
    found = ErrorDetails()
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            found.reasons.append(info.reason)
            found.metadata.update(info.metadata)
            continue
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            found.violations += [errors.FieldViolation(v.field, v.description) for v in bad_request.field_violations]
        elif detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            quota = error_details_pb2.QuotaFailure()
            detail.Unpack(quota)
            found.quota += [errors.QuotaViolation(v.subject, v.description) for v in quota.violations]
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            found.retry_after = retry.retry_delay.ToNanoseconds() / 1e9
    return found


def from_rpc_error(error: grpc.aio.AioRpcError, *, default_reason: str) -> errors.DomainError:
    """The domain error a downstream service answered with, details and all, so passing it on loses nothing:
    reason, metadata, field violations and retry delay reach the caller as the downstream service gave them."""
    status = rpc_status_of(error)
    code = error.code()
    cls = _CLASSES.get(code, errors.Internal)
    if code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNIMPLEMENTED):
        cls = errors.Unavailable
    details = details_of(status)
    message = status.message or code.name
    if code in _TRANSPORT_MESSAGES and not any(details.reasons):
        log.warning("downstream call failed: %s %s", code.name, status.message)
        message = _TRANSPORT_MESSAGES[code]
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            cls = errors.Internal
    return cls(
        reason=next((r for r in details.reasons if r), default_reason),
        message=message,
        metadata=details.metadata,
        violations=details.violations,
        retry_after_seconds=details.retry_after,
        quota_violations=details.quota,
    )
