"""The gate's idempotency protocol against a store that keeps claims in a dict (memory's real store and its
concurrency are tested in tests/integration/memory and end to end in tests/e2e/test_idempotency.py)."""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc
import pytest

from techno_core import errors
from techno_core.grpc_errors import error_info_of, to_rpc_status
from techno_gate.application.idempotency import (
    Claim,
    ClaimState,
    Idempotency,
    outcome_unknown,
    request_hash,
    validate_key,
)
from techno_gate.domain.reasons import Reason


class DictStore:
    def __init__(self) -> None:
        self.records: dict[tuple[str, str], tuple[str, bytes | None]] = {}
        self.released = 0
        self.trace_ids: list[str] = []
        # Keys whose holder's lease ran out after its request was allowed: memory answers OUTCOME_UNKNOWN.
        self.lost: dict[tuple[str, str], str] = {}

    async def claim(
        self, principal_id: str, key: str, request_hash: str, *, lease_seconds: float, trace_id: str
    ) -> Claim:
        self.trace_ids.append(trace_id)
        if (principal_id, key) in self.lost:
            return Claim(ClaimState.OUTCOME_UNKNOWN, trace_id=self.lost[principal_id, key])
        found = self.records.get((principal_id, key))
        if found is None:
            self.records[principal_id, key] = (request_hash, None)
            return Claim(ClaimState.CLAIMED)
        stored_hash, response = found
        if stored_hash != request_hash:
            return Claim(ClaimState.MISMATCH)
        return Claim(ClaimState.IN_PROGRESS) if response is None else Claim(ClaimState.COMPLETED, response)

    async def complete(self, principal_id: str, key: str, response: bytes) -> None:
        self.records[principal_id, key] = (self.records[principal_id, key][0], response)

    async def release(self, principal_id: str, key: str) -> None:
        self.released += 1
        del self.records[principal_id, key]


class Outcomes:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def idempotent(self, outcome: str) -> None:
        self.counts[outcome] += 1


@pytest.fixture
def store() -> DictStore:
    return DictStore()


@pytest.fixture
def outcomes() -> Outcomes:
    return Outcomes()


@pytest.fixture
def idempotency(store: DictStore, outcomes: Outcomes) -> Idempotency:
    return Idempotency(store, outcomes, first_poll_seconds=0.001, max_poll_seconds=0.005)


async def test_concurrent_duplicates_run_once_and_get_the_same_bytes(
    idempotency: Idempotency, outcomes: Outcomes
) -> None:
    runs = 0
    release = asyncio.Event()

    async def work() -> bytes:
        nonlocal runs
        runs += 1
        await release.wait()
        return b"the response"

    calls = [asyncio.create_task(idempotency.run("p", "k", "h", work, timeout=5)) for _ in range(8)]
    await asyncio.sleep(0.01)
    release.set()
    assert await asyncio.gather(*calls) == [b"the response"] * 8
    assert runs == 1
    assert outcomes.counts == {"executed": 1, "replayed": 7}


async def test_a_key_reused_for_another_request_is_refused(idempotency: Idempotency) -> None:
    async def work() -> bytes:
        return b"first"

    await idempotency.run("p", "k", "hash-1", work, timeout=1)
    with pytest.raises(errors.InvalidArgument) as raised:
        await idempotency.run("p", "k", "hash-2", work, timeout=1)
    assert raised.value.reason == Reason.IDEMPOTENCY_KEY_REUSED


async def test_a_failure_releases_the_key_so_a_retry_runs(idempotency: Idempotency, store: DictStore) -> None:
    async def fails() -> bytes:
        raise errors.Unavailable(reason="PROVIDER_UNAVAILABLE", message="down")

    async def works() -> bytes:
        return b"ok"

    with pytest.raises(errors.Unavailable):
        await idempotency.run("p", "k", "h", fails, timeout=1)
    assert store.released == 1
    assert await idempotency.run("p", "k", "h", works, timeout=1) == b"ok"


async def test_a_duplicate_that_outlives_its_deadline_waiting_gets_a_conflict(
    idempotency: Idempotency, store: DictStore, outcomes: Outcomes
) -> None:
    store.records["p", "k"] = ("h", None)  # held by a request still running elsewhere

    async def work() -> bytes:
        raise AssertionError("must not run")

    with pytest.raises(errors.Aborted) as raised:
        await idempotency.run("p", "k", "h", work, timeout=0.02)
    assert raised.value.reason == Reason.IDEMPOTENCY_KEY_IN_PROGRESS
    assert raised.value.retry_after_seconds
    assert outcomes.counts["conflict"] == 1


TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


async def test_the_claim_names_the_requests_trace(idempotency: Idempotency, store: DictStore) -> None:
    async def work() -> bytes:
        return b"ok"

    await idempotency.run("p", "k", "h", work, timeout=1, trace_id=TRACE_ID)
    assert store.trace_ids == [TRACE_ID]


@pytest.mark.parametrize("earlier_trace_id", [TRACE_ID, ""])
async def test_a_repeat_whose_earlier_request_may_have_run_is_refused_and_not_run(
    idempotency: Idempotency, store: DictStore, outcomes: Outcomes, earlier_trace_id: str
) -> None:
    """The holder's gate stopped after its request was allowed and before the response was stored: memory says
    OUTCOME_UNKNOWN, and the gate answers 409 ABORTED at once (no waiting, no Retry-After: retrying cannot help)."""
    store.lost["p", "k"] = earlier_trace_id

    async def work() -> bytes:
        raise AssertionError("must not run")

    with pytest.raises(errors.Aborted) as raised:
        await idempotency.run("p", "k", "h", work, timeout=5, trace_id="f" * 32)
    refusal = raised.value
    assert refusal.reason == Reason.IDEMPOTENCY_OUTCOME_UNKNOWN
    assert refusal.retry_after_seconds is None
    assert "may have run and its result was lost; it is not run again" in refusal.message
    assert "or send it with a new key" in refusal.message
    if earlier_trace_id:
        assert refusal.metadata == {"earlierTraceId": TRACE_ID}
        assert f"trace id {TRACE_ID}" in refusal.message
    else:
        assert refusal.metadata == {}
    assert outcomes.counts == {"unknown": 1}
    assert store.trace_ids == ["f" * 32]  # asked once


def test_the_refusal_is_aborted_with_the_reason_and_trace_in_error_info() -> None:
    """ABORTED, which the edge answers as 409 with the ErrorInfo's reason and metadata."""
    status = to_rpc_status(outcome_unknown(TRACE_ID))
    assert status.code == grpc.StatusCode.ABORTED.value[0]
    info = error_info_of(status)
    assert info is not None
    assert info.reason == "IDEMPOTENCY_OUTCOME_UNKNOWN"
    assert dict(info.metadata) == {"earlierTraceId": TRACE_ID}


@pytest.mark.parametrize("key", ["", "k" * 256, "with space", "naïve", "tab\there"])
def test_invalid_keys_are_refused(key: str) -> None:
    with pytest.raises(errors.InvalidArgument) as raised:
        validate_key(key)
    assert raised.value.reason == Reason.IDEMPOTENCY_KEY_INVALID


def test_valid_keys_pass_and_requests_hash_to_hex() -> None:
    validate_key("0b7c6c5e-5d4b-4c9e-9a57-2f1f3b1d2a10")
    validate_key("k" * 255)
    assert len(request_hash(b"request")) == 64
