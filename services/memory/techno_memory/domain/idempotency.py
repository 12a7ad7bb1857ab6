"""Idempotency records: what a stored key means to the next claim of it (the semantics are documented in
``techno_memory.application.idempotency``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

# The longest claim a caller may ask for; retention is never shorter (see the settings), so a record cannot
# expire while its claim is still held.
MAX_LEASE = timedelta(hours=1)


class ClaimState(StrEnum):
    """What a claim found (the proto's ``IdempotencyClaimState``)."""

    CLAIMED = "CLAIMED"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    MISMATCH = "MISMATCH"


@dataclass(frozen=True)
class Claim:
    """The answer to a claim; ``response`` is the stored response when COMPLETED, else empty."""

    state: ClaimState
    response: bytes = b""


@dataclass(frozen=True)
class ClaimRequest:
    """A claim with its times already decided by the service's clock: the record it creates (or takes over)
    expires at ``expires_at``, and its claim at ``lease_expires_at``."""

    principal_id: str
    key: str
    request_hash: str
    now: datetime
    lease_expires_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class IdempotencyRecord:
    """A stored key. ``response`` is None while its execution has not completed."""

    principal_id: str
    key: str
    request_hash: str
    response: bytes | None
    created_at: datetime
    expires_at: datetime
    lease_expires_at: datetime

    def expired(self, now: datetime) -> bool:
        return self.expires_at <= now

    def abandoned(self, now: datetime) -> bool:
        """Unfinished, and its holder's lease has run out (the holder crashed or overran)."""
        return self.response is None and self.lease_expires_at <= now


class Verdict(StrEnum):
    """What a claim must do about a record it found."""

    TAKE_OVER = "TAKE_OVER"
    MISMATCH = "MISMATCH"
    COMPLETED = "COMPLETED"
    IN_PROGRESS = "IN_PROGRESS"


def judge(record: IdempotencyRecord, request_hash: str, now: datetime) -> Verdict:
    """The rules, in order: an expired record, or an abandoned claim, is taken over (whatever request it was for:
    nothing of it is kept that a repeat could get); a live record of another request is a MISMATCH; a completed
    one answers with its response; otherwise its execution is still IN_PROGRESS."""
    if record.expired(now) or record.abandoned(now):
        return Verdict.TAKE_OVER
    if record.request_hash != request_hash:
        return Verdict.MISMATCH
    if record.response is not None:
        return Verdict.COMPLETED
    return Verdict.IN_PROGRESS
