"""Domain errors shared by every service.

Domain code raises these plain exceptions and never imports grpc; ``techno_core.grpc_errors`` translates them to
a gRPC status with ``google.rpc`` details, once, at the server boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FieldViolation:
    """One invalid field of a request (becomes a ``google.rpc.BadRequest.FieldViolation``)."""

    field: str
    description: str


@dataclass(frozen=True)
class QuotaViolation:
    """One limit that refused the request (becomes a ``google.rpc.QuotaFailure.Violation``)."""

    subject: str
    description: str


@dataclass
class DomainError(Exception):
    """A failure the caller can act on. ``reason`` is a machine-readable UPPER_SNAKE_CASE code."""

    reason: str
    message: str
    metadata: dict[str, str] = field(default_factory=dict)
    violations: list[FieldViolation] = field(default_factory=list)
    retry_after_seconds: float | None = None
    quota_violations: list[QuotaViolation] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


class InvalidArgument(DomainError):
    """The request is malformed; never retry it unchanged."""


class Unauthenticated(DomainError):
    """No valid credentials were presented."""


class PermissionDenied(DomainError):
    """The caller is known but may not do this."""


class NotFound(DomainError):
    """The named thing does not exist."""


class AlreadyExists(DomainError):
    """The thing to create exists already."""


class FailedPrecondition(DomainError):
    """The system is not in a state that allows this."""


class Aborted(DomainError):
    """The request conflicts with another one in progress (e.g. the same idempotency key); retry later."""


class ResourceExhausted(DomainError):
    """A limit was reached; retry after ``retry_after_seconds``."""


class Unavailable(DomainError):
    """A dependency cannot serve now; retrying later may succeed."""


class DeadlineExceeded(DomainError):
    """The caller's deadline ran out before the work finished."""


class Internal(DomainError):
    """An invariant broke; the details are in the log, not in the answer."""
