"""Input rules of idempotency requests; like ``validation``, each reports every violation at once."""

from __future__ import annotations

import re
from datetime import timedelta

from techno_core.errors import FieldViolation, InvalidArgument
from techno_memory.domain.idempotency import MAX_LEASE
from techno_memory.domain.validation import MAX_ID_LENGTH, text_problems, trace_id_problem

MAX_KEY_LENGTH = 255
# A stored response is returned as is to every repeat; 4 MiB is gRPC's default message bound.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
# Printable ASCII: space to tilde (the Idempotency-Key header's value, as the client sent it).
_KEY = re.compile(r"[\x20-\x7e]+")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

INVALID_IDEMPOTENCY_REQUEST = "INVALID_IDEMPOTENCY_REQUEST"


def _key_problems(principal_id: str, key: str) -> list[FieldViolation]:
    violations = text_problems("principal_id", principal_id, required=True, max_length=MAX_ID_LENGTH)
    if not key:
        violations.append(FieldViolation("idempotency_key", "required"))
    elif len(key) > MAX_KEY_LENGTH:
        violations.append(FieldViolation("idempotency_key", f"longer than {MAX_KEY_LENGTH} characters"))
    elif not _KEY.fullmatch(key):
        violations.append(FieldViolation("idempotency_key", "must be printable ASCII (space to tilde)"))
    return violations


def _refuse(violations: list[FieldViolation]) -> None:
    if violations:
        raise InvalidArgument(
            reason=INVALID_IDEMPOTENCY_REQUEST, message="invalid idempotency request", violations=violations
        )


def validate_claim(principal_id: str, key: str, request_hash: str, lease: timedelta, trace_id: str = "") -> None:
    violations = _key_problems(principal_id, key)
    if not _SHA256_HEX.fullmatch(request_hash):
        violations.append(FieldViolation("request_hash", "must be a SHA-256 digest: 64 lowercase hex digits"))
    if lease <= timedelta(0):
        violations.append(FieldViolation("lease", "required: a positive duration"))
    elif lease > MAX_LEASE:
        violations.append(FieldViolation("lease", f"at most {int(MAX_LEASE.total_seconds())} seconds"))
    if trace_id and (problem := trace_id_problem(trace_id)) is not None:  # optional: a claim without a trace
        violations.append(FieldViolation("trace_id", problem))
    _refuse(violations)


def validate_completion(principal_id: str, key: str, response: bytes) -> None:
    violations = _key_problems(principal_id, key)
    if len(response) > MAX_RESPONSE_BYTES:
        violations.append(FieldViolation("response", f"larger than {MAX_RESPONSE_BYTES} bytes"))
    _refuse(violations)


def validate_key_ref(principal_id: str, key: str) -> None:
    _refuse(_key_problems(principal_id, key))
