"""Idempotency records over a real channel, on SQLite and PostgreSQL: claim, complete, repeat, mismatch, release,
lease takeover, expiry and sweeping, and concurrent claims (one server, and two servers sharing the database).
Time is a settable clock given to the service, so leases and retention expire without sleeping."""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta

import grpc
import pytest
from google.protobuf import duration_pb2
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from sqlalchemy import select

from techno.memory.v1 import memory_pb2, memory_pb2_grpc
from techno_core.server import GrpcApp
from techno_memory.adapters.database import create_database_engine
from techno_memory.adapters.tables import IdempotencyKeyRow
from techno_memory.bootstrap import bootstrap

from .conftest import gate_channel, memory_settings
from .test_api_keys import reason_of, violated_fields
from .test_audit_trail import append, audit_event, new_trace_id
from .test_sessions import Clock, until

Stub = memory_pb2_grpc.MemoryServiceStub
RETENTION = timedelta(days=1)
LEASE = timedelta(seconds=30)
ALICE, BOB = "key_alice", "key_bob"
CLAIMED = memory_pb2.IDEMPOTENCY_CLAIM_STATE_CLAIMED
IN_PROGRESS = memory_pb2.IDEMPOTENCY_CLAIM_STATE_IN_PROGRESS
COMPLETED = memory_pb2.IDEMPOTENCY_CLAIM_STATE_COMPLETED
MISMATCH = memory_pb2.IDEMPOTENCY_CLAIM_STATE_MISMATCH
OUTCOME_UNKNOWN = memory_pb2.IDEMPOTENCY_CLAIM_STATE_OUTCOME_UNKNOWN
# Not UTF-8, with NULs: the response is kept as the exact bytes.
RESPONSE = b"\x00\xff\xfe response \x00" + bytes(range(256)) * 64


def request_hash(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()


HASH_A, HASH_B = request_hash("request A"), request_hash("request B")


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def start_app(url: str, tracer_provider: TracerProvider, clock: Clock, *, sweep_seconds: float = 3600) -> GrpcApp:
    settings = memory_settings(url).model_copy(
        update={
            "memory_idempotency_retention_seconds": RETENTION.total_seconds(),
            "memory_session_sweep_seconds": sweep_seconds,
        }
    )
    app = await bootstrap(settings, tracer_provider=tracer_provider, registry=CollectorRegistry(), clock=clock)
    await app.start()
    return app


@pytest.fixture
async def idempotency_app(migrated_url: str, tracer_provider: TracerProvider, clock: Clock) -> AsyncIterator[GrpcApp]:
    app = await start_app(migrated_url, tracer_provider, clock)
    yield app
    await app.stop()


@pytest.fixture
async def stub(idempotency_app: GrpcApp) -> AsyncIterator[Stub]:
    async with gate_channel(idempotency_app.address) as channel:
        yield memory_pb2_grpc.MemoryServiceStub(channel)


def duration(delta: timedelta) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromTimedelta(delta)
    return value


async def claim(
    stub: Stub,
    key: str = "key-1",
    hash_: str = HASH_A,
    *,
    principal_id: str = ALICE,
    lease: timedelta = LEASE,
    trace_id: str = "",
) -> memory_pb2.ClaimIdempotencyKeyResponse:
    request = memory_pb2.ClaimIdempotencyKeyRequest(
        principal_id=principal_id, idempotency_key=key, request_hash=hash_, lease=duration(lease), trace_id=trace_id
    )
    response: memory_pb2.ClaimIdempotencyKeyResponse = await stub.ClaimIdempotencyKey(request, timeout=10)
    return response


async def state(stub: Stub, key: str = "key-1", hash_: str = HASH_A, **fields: object) -> int:
    return int((await claim(stub, key, hash_, **fields)).state)  # type: ignore[arg-type]


async def complete(stub: Stub, key: str = "key-1", response: bytes = RESPONSE, *, principal_id: str = ALICE) -> None:
    request = memory_pb2.CompleteIdempotencyKeyRequest(
        principal_id=principal_id, idempotency_key=key, response=response
    )
    await stub.CompleteIdempotencyKey(request, timeout=10)


async def release(stub: Stub, key: str = "key-1", *, principal_id: str = ALICE) -> None:
    request = memory_pb2.ReleaseIdempotencyKeyRequest(principal_id=principal_id, idempotency_key=key)
    await stub.ReleaseIdempotencyKey(request, timeout=10)


async def refused(call: object, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    assert raised.value.code() == code
    return raised.value


async def test_claim_complete_then_repeats_get_the_exact_response(stub: Stub) -> None:
    assert await state(stub) == CLAIMED
    assert await state(stub) == IN_PROGRESS  # a duplicate while it executes
    await complete(stub)
    for _ in range(3):
        repeat = await claim(stub)
        assert repeat.state == COMPLETED
        assert repeat.response == RESPONSE
    await complete(stub)  # a retried completion with the same bytes is fine …
    error = await refused(complete(stub, response=b"another"), grpc.StatusCode.FAILED_PRECONDITION)
    assert reason_of(error) == "IDEMPOTENCY_KEY_ALREADY_COMPLETED"  # … another response is not
    await release(stub)  # a completed record is never released
    assert (await claim(stub)).response == RESPONSE


async def test_an_empty_response_is_a_response(stub: Stub) -> None:
    assert await state(stub) == CLAIMED
    await complete(stub, response=b"")
    repeat = await claim(stub)
    assert repeat.state == COMPLETED
    assert repeat.response == b""


async def test_a_key_reused_for_another_request_is_a_mismatch(stub: Stub) -> None:
    assert await state(stub, hash_=HASH_A) == CLAIMED
    assert await state(stub, hash_=HASH_B) == MISMATCH  # while it executes
    await complete(stub)
    assert await state(stub, hash_=HASH_B) == MISMATCH  # and once completed
    assert await state(stub, hash_=HASH_A) == COMPLETED


async def test_keys_are_per_principal(stub: Stub) -> None:
    assert await state(stub, principal_id=ALICE) == CLAIMED
    assert await state(stub, principal_id=BOB, hash_=HASH_B) == CLAIMED
    await complete(stub, principal_id=BOB, response=b"bob's")
    assert (await claim(stub, principal_id=BOB, hash_=HASH_B)).response == b"bob's"
    assert await state(stub, principal_id=ALICE) == IN_PROGRESS


async def test_release_lets_a_new_claim_through(stub: Stub) -> None:
    assert await state(stub) == CLAIMED
    await release(stub)
    await release(stub)  # twice: nothing left, still fine
    await release(stub, "never-claimed")
    error = await refused(complete(stub), grpc.StatusCode.FAILED_PRECONDITION)
    assert reason_of(error) == "IDEMPOTENCY_KEY_NOT_CLAIMED"
    # Released, the key is free for any request: nothing of the first is kept.
    assert await state(stub, hash_=HASH_B) == CLAIMED
    await complete(stub, response=b"second")
    assert (await claim(stub, hash_=HASH_B)).response == b"second"


async def test_an_expired_lease_lets_another_claim_take_over(stub: Stub, clock: Clock) -> None:
    assert await state(stub, lease=LEASE) == CLAIMED
    clock.advance(LEASE - timedelta(microseconds=1))
    assert await state(stub) == IN_PROGRESS
    clock.advance(timedelta(microseconds=1))  # the holder's lease has run out: it crashed or overran
    assert await state(stub, lease=timedelta(seconds=10)) == CLAIMED
    assert await state(stub) == IN_PROGRESS  # the new claim holds, with its own lease
    clock.advance(timedelta(seconds=10))
    assert await state(stub, hash_=HASH_B) == CLAIMED  # an abandoned claim is taken over by any request
    await complete(stub, response=b"B")
    clock.advance(timedelta(hours=2))  # a completed record outlives its lease
    assert (await claim(stub, hash_=HASH_B)).response == b"B"


def outcome_of(decision: memory_pb2.AuditEvent, result: str) -> memory_pb2.AuditEvent:
    outcome = audit_event(decision.trace_id, kind=memory_pb2.AUDIT_EVENT_KIND_OUTCOME, result=result)
    outcome.attributes.update({"decision_event_id": decision.event_id})
    return outcome


async def test_an_abandoned_claim_whose_request_was_allowed_is_never_taken_over(stub: Stub, clock: Clock) -> None:
    """The holder's gate stopped after its request was allowed (the decision is committed before anything runs)
    and before the response was stored: the request may have run, so no repeat may run it again."""
    holder = new_trace_id()
    assert await state(stub, trace_id=holder) == CLAIMED
    await append(stub, audit_event(holder, result="ALLOW"))
    clock.advance(LEASE)  # the lease has run out, with no response and no outcome

    repeat = await claim(stub, trace_id=new_trace_id())
    assert (repeat.state, repeat.trace_id, repeat.response) == (OUTCOME_UNKNOWN, holder, b"")
    assert await state(stub, trace_id=new_trace_id()) == OUTCOME_UNKNOWN  # and again: nothing was taken over
    assert await state(stub, hash_=HASH_B) == MISMATCH  # the key is used, by a request that may have run
    clock.advance(timedelta(hours=2))
    assert await state(stub) == OUTCOME_UNKNOWN

    # Its outcome arriving late (the gate's outbox, or the reconciler's UNKNOWN) changes nothing …
    decision = audit_event(holder, result="ALLOW")  # (another decision of a reused trace, still open)
    await append(stub, decision, outcome_of(decision, "UNKNOWN"))
    assert await state(stub) == OUTCOME_UNKNOWN
    # … until the record expires: then the key is used afresh.
    clock.advance(RETENTION)
    assert await state(stub, trace_id=new_trace_id()) == CLAIMED


async def test_an_abandoned_claim_with_nothing_decided_is_taken_over(stub: Stub, clock: Clock) -> None:
    """The holder stopped before its request was decided (or it was denied): nothing ran, a repeat runs it."""
    holder, denied = new_trace_id(), new_trace_id()
    assert await state(stub, trace_id=holder) == CLAIMED
    assert await state(stub, "denied", trace_id=denied) == CLAIMED
    await append(stub, audit_event(denied, result="DENY", reason_codes=["RATE_LIMITED"]))
    await append(stub, audit_event(new_trace_id(), result="ALLOW"))  # another request's decision
    clock.advance(LEASE)
    assert await state(stub, trace_id=new_trace_id()) == CLAIMED
    assert await state(stub, "denied", trace_id=new_trace_id()) == CLAIMED


async def test_an_abandoned_claim_whose_request_failed_is_taken_over(stub: Stub, clock: Clock) -> None:
    """A failure releases the key; if that release was lost, the FAILED outcome still says nothing succeeded."""
    holder = new_trace_id()
    assert await state(stub, trace_id=holder) == CLAIMED
    decision = audit_event(holder, result="ALLOW")
    await append(stub, decision, outcome_of(decision, "FAILED"))
    clock.advance(LEASE)
    second = new_trace_id()
    assert await state(stub, hash_=HASH_B, trace_id=second) == CLAIMED
    # The new claim holds, under its own trace: when it is abandoned after being allowed, it is not taken over.
    await append(stub, audit_event(second, result="ALLOW"))
    clock.advance(LEASE)
    repeat = await claim(stub, hash_=HASH_B)
    assert (repeat.state, repeat.trace_id) == (OUTCOME_UNKNOWN, second)


async def test_an_abandoned_claim_without_a_trace_id_is_taken_over(stub: Stub, clock: Clock) -> None:
    """A claim made without a trace id (or before migration 0006 kept it) cannot be judged: taken over as before."""
    assert await state(stub) == CLAIMED
    clock.advance(LEASE)
    assert await state(stub) == CLAIMED


async def test_a_record_expires_after_the_retention(stub: Stub, clock: Clock) -> None:
    assert await state(stub) == CLAIMED
    await complete(stub)
    clock.advance(RETENTION - timedelta(microseconds=1))
    assert (await claim(stub)).response == RESPONSE
    clock.advance(timedelta(microseconds=1))
    assert await state(stub, hash_=HASH_B) == CLAIMED  # expired: the key is used afresh
    await complete(stub, response=b"fresh")
    assert (await claim(stub, hash_=HASH_B)).response == b"fresh"

    assert await state(stub, "unfinished") == CLAIMED
    clock.advance(RETENTION)
    error = await refused(complete(stub, "unfinished"), grpc.StatusCode.FAILED_PRECONDITION)
    assert reason_of(error) == "IDEMPOTENCY_KEY_NOT_CLAIMED"  # an expired claim cannot be completed


async def test_expired_records_are_swept(migrated_url: str, tracer_provider: TracerProvider, clock: Clock) -> None:
    app = await start_app(migrated_url, tracer_provider, clock, sweep_seconds=0.05)
    engine = create_database_engine(migrated_url, pool_size=1, tracer_provider=None)
    try:
        async with gate_channel(app.address) as channel:
            stub = memory_pb2_grpc.MemoryServiceStub(channel)
            assert await state(stub, "old") == CLAIMED
            await complete(stub, "old")
            assert await state(stub, "unfinished") == CLAIMED
            clock.advance(timedelta(hours=2))
            assert await state(stub, "recent") == CLAIMED
            clock.advance(RETENTION - timedelta(hours=1))  # "old" and "unfinished" expired, "recent" not

            async def swept() -> bool:
                return app.registry.get_sample_value("memory_idempotency_keys_expired_total") == 2

            await until(swept)
            async with engine.connect() as connection:
                keys = (await connection.execute(select(IdempotencyKeyRow.idempotency_key))).scalars().all()
            assert keys == ["recent"]
            assert app.registry.get_sample_value("memory_session_sweep_failures_total") == 0
            assert await state(stub, "old", HASH_B) == CLAIMED
    finally:
        await engine.dispose()
        await app.stop()


async def test_invalid_requests_are_refused_with_field_violations(stub: Stub) -> None:
    bad_claim = memory_pb2.ClaimIdempotencyKeyRequest(principal_id="", idempotency_key="caf\u00e9", request_hash="x")
    error = await refused(stub.ClaimIdempotencyKey(bad_claim, timeout=10), grpc.StatusCode.INVALID_ARGUMENT)
    assert reason_of(error) == "INVALID_IDEMPOTENCY_REQUEST"
    assert violated_fields(error) == ["principal_id", "idempotency_key", "request_hash", "lease"]

    for lease in (timedelta(hours=1, seconds=1), timedelta(seconds=-1)):
        error = await refused(claim(stub, lease=lease), grpc.StatusCode.INVALID_ARGUMENT)
        assert violated_fields(error) == ["lease"]
    error = await refused(claim(stub, "k" * 256), grpc.StatusCode.INVALID_ARGUMENT)
    assert violated_fields(error) == ["idempotency_key"]
    for trace_id in ("4BF92F3577B34DA6A3CE929D0E0E4736", "0" * 32, "abc"):
        error = await refused(claim(stub, trace_id=trace_id), grpc.StatusCode.INVALID_ARGUMENT)
        assert violated_fields(error) == ["trace_id"]

    error = await refused(complete(stub, ""), grpc.StatusCode.INVALID_ARGUMENT)
    assert violated_fields(error) == ["idempotency_key"]
    error = await refused(release(stub, principal_id=""), grpc.StatusCode.INVALID_ARGUMENT)
    assert violated_fields(error) == ["principal_id"]


CONCURRENT = 20


async def test_of_concurrent_claims_exactly_one_wins(stub: Stub, clock: Clock) -> None:
    for key in (f"race-{n}" for n in range(5)):
        states = await asyncio.gather(*(state(stub, key) for _ in range(CONCURRENT)))
        assert Counter(states) == {CLAIMED: 1, IN_PROGRESS: CONCURRENT - 1}

    # A takeover race: the lease of "race-0" has run out, and twenty duplicates find it at once.
    clock.advance(LEASE)
    states = await asyncio.gather(*(state(stub, "race-0") for _ in range(CONCURRENT)))
    assert Counter(states) == {CLAIMED: 1, IN_PROGRESS: CONCURRENT - 1}

    # And once completed, every concurrent repeat gets the response.
    await complete(stub, "race-0")
    replies = await asyncio.gather(*(claim(stub, "race-0") for _ in range(CONCURRENT)))
    assert {(reply.state, reply.response) for reply in replies} == {(COMPLETED, RESPONSE)}


async def test_of_concurrent_claims_through_two_servers_exactly_one_wins(
    migrated_url: str, tracer_provider: TracerProvider, clock: Clock
) -> None:
    """Two replicas sharing the database: no lock in either process can decide, only the database."""
    first = await start_app(migrated_url, tracer_provider, clock)
    second = await start_app(migrated_url, tracer_provider, clock)
    try:
        async with (
            gate_channel(first.address) as one,
            gate_channel(second.address) as two,
        ):
            stubs = [memory_pb2_grpc.MemoryServiceStub(one), memory_pb2_grpc.MemoryServiceStub(two)]
            for key in (f"replicated-{n}" for n in range(5)):
                states = await asyncio.gather(*(state(stubs[n % 2], key) for n in range(CONCURRENT)))
                assert Counter(states) == {CLAIMED: 1, IN_PROGRESS: CONCURRENT - 1}

            clock.advance(LEASE)  # every claim abandoned: twenty takeovers race across both servers
            for key in (f"replicated-{n}" for n in range(5)):
                states = await asyncio.gather(*(state(stubs[n % 2], key, HASH_B) for n in range(CONCURRENT)))
                assert Counter(states) == {CLAIMED: 1, IN_PROGRESS: CONCURRENT - 1}
    finally:
        await first.stop()
        await second.stop()
