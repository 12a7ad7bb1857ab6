"""Conversion between the idempotency protos and the domain's claims."""

from __future__ import annotations

from datetime import timedelta

from techno.memory.v1 import memory_pb2
from techno_memory.domain.idempotency import Claim, ClaimState

_STATE_TO_PROTO = {
    ClaimState.CLAIMED: memory_pb2.IDEMPOTENCY_CLAIM_STATE_CLAIMED,
    ClaimState.IN_PROGRESS: memory_pb2.IDEMPOTENCY_CLAIM_STATE_IN_PROGRESS,
    ClaimState.COMPLETED: memory_pb2.IDEMPOTENCY_CLAIM_STATE_COMPLETED,
    ClaimState.MISMATCH: memory_pb2.IDEMPOTENCY_CLAIM_STATE_MISMATCH,
    ClaimState.OUTCOME_UNKNOWN: memory_pb2.IDEMPOTENCY_CLAIM_STATE_OUTCOME_UNKNOWN,
}


def lease_from_proto(request: memory_pb2.ClaimIdempotencyKeyRequest) -> timedelta:
    """An unset lease is zero, which the domain refuses as missing. Computed from seconds and nanos directly:
    ``Duration.ToTimedelta`` raises on values a timedelta cannot hold, and any such value is refused anyway."""
    if not request.HasField("lease"):
        return timedelta(0)
    seconds = request.lease.seconds + request.lease.nanos / 1e9
    # Far beyond any valid lease, and within what a timedelta can hold: the domain names the real bound.
    return timedelta(seconds=max(min(seconds, 10**9), -(10**9)))


def claim_to_proto(claim: Claim) -> memory_pb2.ClaimIdempotencyKeyResponse:
    return memory_pb2.ClaimIdempotencyKeyResponse(
        state=_STATE_TO_PROTO[claim.state], response=claim.response, trace_id=claim.trace_id
    )
