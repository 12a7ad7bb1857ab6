"""Idempotency rules, the verdict on a stored record, the use case's errors and the sweeper's isolation, over
fakes."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf import duration_pb2
from pydantic import ValidationError

from techno.memory.v1 import memory_pb2
from techno_core.errors import FailedPrecondition, InvalidArgument
from techno_memory.application.idempotency import (
    IDEMPOTENCY_KEY_ALREADY_COMPLETED,
    IDEMPOTENCY_KEY_NOT_CLAIMED,
    IdempotencyKeys,
)
from techno_memory.application.sweeper import ExpirySweeper
from techno_memory.domain.idempotency import (
    Claim,
    ClaimRequest,
    ClaimState,
    IdempotencyRecord,
    TrailEvent,
    Verdict,
    holder_may_have_run,
    judge,
    judge_abandoned,
)
from techno_memory.domain.idempotency_validation import (
    INVALID_IDEMPOTENCY_REQUEST,
    MAX_RESPONSE_BYTES,
    validate_claim,
    validate_completion,
    validate_key_ref,
)
from techno_memory.entrypoints.convert_idempotency import claim_to_proto, lease_from_proto
from techno_memory.settings import MemorySettings

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
HASH = "a" * 64
MINUTE = timedelta(minutes=1)


def violated(call: object) -> list[str]:
    assert callable(call)
    with pytest.raises(InvalidArgument) as raised:
        call()
    assert raised.value.reason == INVALID_IDEMPOTENCY_REQUEST
    return [violation.field for violation in raised.value.violations]


@pytest.mark.parametrize("key", ["k", "a" * 255, "order 42/2025-06-01", "~!@#$%^&*()", " "])
def test_printable_ascii_keys_up_to_255_are_accepted(key: str) -> None:
    validate_claim("key_1", key, HASH, MINUTE)


@pytest.mark.parametrize("key", ["", "a" * 256, "tab\there", "new\nline", "caf\u00e9", "\x7f", "\x00"])
def test_other_keys_are_refused(key: str) -> None:
    assert violated(lambda: validate_claim("key_1", key, HASH, MINUTE)) == ["idempotency_key"]
    assert violated(lambda: validate_key_ref("key_1", key)) == ["idempotency_key"]


@pytest.mark.parametrize("request_hash", ["", "a" * 63, "a" * 65, "A" * 64, "g" * 64])
def test_the_request_hash_must_be_a_lowercase_sha256(request_hash: str) -> None:
    assert violated(lambda: validate_claim("key_1", "k", request_hash, MINUTE)) == ["request_hash"]


@pytest.mark.parametrize("lease", [timedelta(0), timedelta(seconds=-1), timedelta(hours=1, microseconds=1)])
def test_the_lease_must_be_positive_and_at_most_an_hour(lease: timedelta) -> None:
    assert violated(lambda: validate_claim("key_1", "k", HASH, lease)) == ["lease"]
    validate_claim("key_1", "k", HASH, timedelta(hours=1))
    validate_claim("key_1", "k", HASH, timedelta(microseconds=1))


def test_every_violation_is_reported_at_once() -> None:
    fields = violated(lambda: validate_claim("", "", "nope", timedelta(0)))
    assert fields == ["principal_id", "idempotency_key", "request_hash", "lease"]
    assert violated(lambda: validate_completion("p" * 129, "k", b"")) == ["principal_id"]


def test_the_response_is_bounded() -> None:
    validate_completion("key_1", "k", b"x" * MAX_RESPONSE_BYTES)
    validate_completion("key_1", "k", b"")
    assert violated(lambda: validate_completion("key_1", "k", b"x" * (MAX_RESPONSE_BYTES + 1))) == ["response"]


def record(**changes: object) -> IdempotencyRecord:
    base = IdempotencyRecord(
        principal_id="key_1",
        key="k",
        request_hash=HASH,
        response=None,
        created_at=NOW,
        expires_at=NOW + timedelta(days=1),
        lease_expires_at=NOW + MINUTE,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_the_verdict_on_a_stored_record() -> None:
    other = "b" * 64
    assert judge(record(), HASH, NOW) is Verdict.IN_PROGRESS
    assert judge(record(), other, NOW) is Verdict.MISMATCH
    assert judge(record(response=b"r"), HASH, NOW) is Verdict.COMPLETED
    assert judge(record(response=b""), HASH, NOW) is Verdict.COMPLETED  # an empty response is a response
    assert judge(record(response=b"r"), other, NOW) is Verdict.MISMATCH
    # An abandoned claim (lease run out, no response) is judged by its holder's audit trail …
    assert judge(record(), HASH, NOW + MINUTE) is Verdict.ABANDONED
    assert judge(record(), other, NOW + MINUTE) is Verdict.ABANDONED
    # … taken over, even by another request, when nothing can have run; never when it may have run.
    assert judge_abandoned(record(), HASH, may_have_run=False) is Verdict.TAKE_OVER
    assert judge_abandoned(record(), other, may_have_run=False) is Verdict.TAKE_OVER
    assert judge_abandoned(record(), HASH, may_have_run=True) is Verdict.OUTCOME_UNKNOWN
    assert judge_abandoned(record(), other, may_have_run=True) is Verdict.MISMATCH
    # A completed record outlives its lease: the response is answered until the record expires.
    assert judge(record(response=b"r"), HASH, NOW + MINUTE) is Verdict.COMPLETED
    expired = NOW + timedelta(days=1)
    assert judge(record(response=b"r"), HASH, expired) is Verdict.TAKE_OVER
    assert judge(record(response=b"r"), other, expired) is Verdict.TAKE_OVER
    assert judge(record(response=b"r"), HASH, expired - timedelta(microseconds=1)) is Verdict.COMPLETED


def allow(event_id: str = "d1") -> TrailEvent:
    return TrailEvent("DECISION", "ALLOW", event_id)


def outcome(result: str, decision_event_id: str | None = "d1") -> TrailEvent:
    return TrailEvent("OUTCOME", result, f"o-{result}", decision_event_id)


@pytest.mark.parametrize(
    ("trail", "may_have_run"),
    [
        ([], False),  # the holder stopped before its decision
        ([TrailEvent("DECISION", "DENY", "d1")], False),
        ([allow()], True),  # allowed, no outcome: it may have run
        ([allow(), outcome("SUCCEEDED")], True),  # it ran (its response was lost)
        ([allow(), outcome("UNKNOWN")], True),  # closed by the reconciler: may or may not have run
        ([allow(), outcome("FAILED")], False),  # it failed: nothing to repeat
        ([allow(), outcome("FAILED", decision_event_id=None)], True),  # a failure naming no decision: be safe
        ([allow("d0"), outcome("FAILED", "d0"), allow("d1")], True),  # a trace reused: the open decision counts
        ([allow("d0"), outcome("FAILED", "d0"), allow("d1"), outcome("FAILED", "d1")], False),
    ],
)
def test_whether_an_abandoned_holder_may_have_run(trail: list[TrailEvent], may_have_run: bool) -> None:
    assert holder_may_have_run(trail) is may_have_run


class FakeStore:
    def __init__(self) -> None:
        self.claims: list[ClaimRequest] = []
        self.completable = False
        self.stored: bytes | None = None

    async def claim(self, request: ClaimRequest) -> Claim:
        self.claims.append(request)
        return Claim(ClaimState.CLAIMED)

    async def complete(self, principal_id: str, key: str, response: bytes, *, now: datetime) -> bool:
        return self.completable

    async def stored_response(self, principal_id: str, key: str, *, now: datetime) -> bytes | None:
        return self.stored

    async def release(self, principal_id: str, key: str) -> None:
        pass

    async def delete_expired_idempotency_keys(self, *, now: datetime, limit: int) -> int:
        return 0


def keys(store: FakeStore) -> IdempotencyKeys:
    return IdempotencyKeys(store, retention=timedelta(days=1), clock=lambda: NOW)


async def test_a_claim_is_timed_by_the_services_clock() -> None:
    store = FakeStore()
    assert await keys(store).claim("key_1", "k", HASH, MINUTE) == Claim(ClaimState.CLAIMED)
    [request] = store.claims
    assert (request.now, request.lease_expires_at, request.expires_at) == (NOW, NOW + MINUTE, NOW + timedelta(days=1))


async def test_completion_errors() -> None:
    store = FakeStore()
    with pytest.raises(FailedPrecondition) as not_claimed:
        await keys(store).complete("key_1", "k", b"r")
    assert not_claimed.value.reason == IDEMPOTENCY_KEY_NOT_CLAIMED

    store.stored = b"first"
    with pytest.raises(FailedPrecondition) as completed:
        await keys(store).complete("key_1", "k", b"second")
    assert completed.value.reason == IDEMPOTENCY_KEY_ALREADY_COMPLETED
    await keys(store).complete("key_1", "k", b"first")  # a repeat of the completion that stored it

    store.completable = True
    await keys(store).complete("key_1", "k", b"second")


def test_lease_conversion() -> None:
    assert lease_from_proto(memory_pb2.ClaimIdempotencyKeyRequest()) == timedelta(0)
    lease = duration_pb2.Duration(seconds=2, nanos=500_000_000)
    assert lease_from_proto(memory_pb2.ClaimIdempotencyKeyRequest(lease=lease)) == timedelta(seconds=2.5)
    # Out of what a timedelta holds: still a value the domain refuses, never an internal error.
    huge = duration_pb2.Duration(seconds=315_576_000_000)
    assert lease_from_proto(memory_pb2.ClaimIdempotencyKeyRequest(lease=huge)) > timedelta(hours=1)
    negative = duration_pb2.Duration(seconds=-315_576_000_000)
    assert lease_from_proto(memory_pb2.ClaimIdempotencyKeyRequest(lease=negative)) < timedelta(0)


def test_claim_states_convert() -> None:
    reply = claim_to_proto(Claim(ClaimState.COMPLETED, b"\x00bytes"))
    assert reply.state == memory_pb2.IDEMPOTENCY_CLAIM_STATE_COMPLETED
    assert reply.response == b"\x00bytes"
    for state in ClaimState:
        assert memory_pb2.IdempotencyClaimState.Name(claim_to_proto(Claim(state)).state).endswith(state.value)


def test_retention_setting() -> None:
    assert MemorySettings().memory_idempotency_retention_seconds == 24 * 3600
    with pytest.raises(ValidationError):
        MemorySettings(memory_idempotency_retention_seconds=3599)


class BrokenSessions:
    async def delete_expired_sessions(self, *, now: datetime, limit: int) -> int:
        raise ConnectionError("sessions table unavailable")


class Counted:
    def __init__(self) -> None:
        self.keys_expired = asyncio.Event()
        self.failures = 0

    def expired(self, count: int) -> None:
        pass

    def idempotency_keys_expired(self, count: int) -> None:
        if count:
            self.keys_expired.set()

    def failed(self) -> None:
        self.failures += 1


class ExpiredKeys(FakeStore):
    def __init__(self, expired: int) -> None:
        super().__init__()
        self.expired = expired

    async def delete_expired_idempotency_keys(self, *, now: datetime, limit: int) -> int:
        deleted, self.expired = self.expired, 0
        return deleted


async def test_a_failing_session_sweep_does_not_hold_back_the_idempotency_sweep() -> None:
    observer = Counted()
    sweeper = ExpirySweeper(BrokenSessions(), ExpiredKeys(3), observer, interval_seconds=60, clock=lambda: NOW)  # type: ignore[arg-type]
    await sweeper.start()
    try:
        async with asyncio.timeout(5):
            await observer.keys_expired.wait()
    finally:
        await sweeper.close()
    assert observer.failures == 1
