"""Idempotency records: what a stored key means to the next claim of it (the semantics are documented in
``techno_memory.application.idempotency``)."""

from __future__ import annotations

from collections.abc import Iterable
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
    OUTCOME_UNKNOWN = "OUTCOME_UNKNOWN"


@dataclass(frozen=True)
class Claim:
    """The answer to a claim; ``response`` is the stored response when COMPLETED, else empty; ``trace_id`` the
    earlier holder's trace id when OUTCOME_UNKNOWN (empty if it had none)."""

    state: ClaimState
    response: bytes = b""
    trace_id: str = ""


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
    # The W3C trace id of the claimant's request ("" without one), kept with the claim.
    trace_id: str = ""


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
    # The holder's trace id; None for a claim without one (or made before it was kept).
    trace_id: str | None = None

    def expired(self, now: datetime) -> bool:
        return self.expires_at <= now

    def abandoned(self, now: datetime) -> bool:
        """Unfinished, and its holder's lease has run out (the holder crashed or overran)."""
        return self.response is None and self.lease_expires_at <= now


class Verdict(StrEnum):
    """What a claim must do about a record it found."""

    TAKE_OVER = "TAKE_OVER"
    ABANDONED = "ABANDONED"
    MISMATCH = "MISMATCH"
    COMPLETED = "COMPLETED"
    IN_PROGRESS = "IN_PROGRESS"
    OUTCOME_UNKNOWN = "OUTCOME_UNKNOWN"


def judge(record: IdempotencyRecord, request_hash: str, now: datetime) -> Verdict:
    """The rules, in order: an expired record is taken over (whatever request it was for: nothing of it is kept
    that a repeat could get); an abandoned claim is ABANDONED, to be judged by its holder's audit trail
    (``judge_abandoned``); a live record of another request is a MISMATCH; a completed one answers with its
    response; otherwise its execution is still IN_PROGRESS."""
    if record.expired(now):
        return Verdict.TAKE_OVER
    if record.abandoned(now):
        return Verdict.ABANDONED
    if record.request_hash != request_hash:
        return Verdict.MISMATCH
    if record.response is not None:
        return Verdict.COMPLETED
    return Verdict.IN_PROGRESS


@dataclass(frozen=True)
class TrailEvent:
    """What an abandoned claim's judgement reads of its holder's trace: a DECISION or an OUTCOME, with the
    ``event_id`` of the decision an outcome names (``attributes.decision_event_id``; None if it names none)."""

    kind: str
    result: str
    event_id: str
    decision_event_id: str | None = None


def holder_may_have_run(trail: Iterable[TrailEvent]) -> bool:
    """Whether the holder's request may have run: its trace holds an ``ALLOW`` decision (written and committed
    before anything runs) that no ``FAILED`` outcome naming it closes (a failure releases the key anyway, so this
    is the case of a release that was lost). A trace that a client reused for several requests may show an
    earlier request's decision: the answer then errs on the side of not running twice."""
    events = list(trail)
    failed = {event.decision_event_id for event in events if event.kind == "OUTCOME" and event.result == "FAILED"}
    allowed = {event.event_id for event in events if event.kind == "DECISION" and event.result == "ALLOW"}
    return bool(allowed - failed)


def judge_abandoned(record: IdempotencyRecord, request_hash: str, *, may_have_run: bool) -> Verdict:
    """An abandoned claim whose request may have run is never taken over (it would run twice): a repeat learns
    its OUTCOME_UNKNOWN, another request its MISMATCH, until the record expires. One that cannot have run (its
    holder stopped before an allowed decision) is taken over by any request."""
    if not may_have_run:
        return Verdict.TAKE_OVER
    if record.request_hash != request_hash:
        return Verdict.MISMATCH
    return Verdict.OUTCOME_UNKNOWN
