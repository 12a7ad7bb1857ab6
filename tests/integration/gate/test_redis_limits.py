"""Limits against a real Redis (``TECHNO_TEST_REDIS_URL``), which is required: unreachable, these tests fail.

Each test writes under its own random key prefix and deletes its keys afterwards. Semantics shared with the
in-process limiters run against both backends.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from redis.asyncio import Redis
from redis.exceptions import RedisError

from techno_gate.adapters.limits_local import LocalConcurrencyLimiter, LocalRateLimiter
from techno_gate.adapters.limits_redis import (
    RedisConcurrencyLimiter,
    RedisLimitStore,
    RedisRateLimiter,
    _RedisLease,
    connect,
)
from techno_gate.domain.limits import (
    ConcurrencyLimit,
    ConcurrencyLimiter,
    LimitDecision,
    LimitStoreUnavailable,
    RateLimit,
    RateLimiter,
)
from techno_gate.limit_settings import LimitSettings, build_limiters
from tests.unit.gate.test_limits_properties import (
    Clock,
    LimiterFactory,
    check_admits_exactly_what_a_token_bucket_admits,
    check_no_window_admits_more_than_burst_plus_refill,
    check_retry_after_is_exact_and_remaining_is_the_next_admissions,
    gaps,
    limits,
)

REDIS_URL = os.environ.get("TECHNO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
WORKER = Path(__file__).with_name("limits_worker.py")


@pytest.fixture
async def redis_client() -> AsyncIterator[Redis]:
    client = connect(REDIS_URL, timeout_seconds=2)
    try:
        await client.ping()
    except RedisError as error:
        await client.aclose()
        pytest.fail(f"Redis is required at {REDIS_URL}: {error}")
    yield client
    await client.aclose()


@pytest.fixture
async def key_prefix(redis_client: Redis) -> AsyncIterator[str]:
    prefix = f"techno:test:{uuid.uuid4().hex}:"
    yield prefix
    keys = [key async for key in redis_client.scan_iter(match=f"{prefix}*")]
    if keys:
        await redis_client.delete(*keys)


@pytest.fixture(params=["local", "redis"])
def limiters(
    request: pytest.FixtureRequest, redis_client: Redis, key_prefix: str
) -> tuple[RateLimiter, ConcurrencyLimiter]:
    if request.param == "local":
        return LocalRateLimiter(), LocalConcurrencyLimiter()
    return RedisRateLimiter(redis_client, key_prefix=key_prefix), RedisConcurrencyLimiter(
        redis_client, key_prefix=key_prefix
    )


async def until(condition: Callable[[], Awaitable[bool]], *, timeout: float = 5.0, poll: float = 0.02) -> float:
    """Awaits ``condition``; returns how long it took. Fails the test past ``timeout``."""
    started = time.monotonic()
    while not await condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"condition not met within {timeout}s")
        await asyncio.sleep(poll)
    return time.monotonic() - started


# --- semantics, both backends ------------------------------------------------------------------------------


async def test_burst_then_refusal_with_exact_retry_and_reset(limiters: tuple[RateLimiter, ConcurrencyLimiter]) -> None:
    rate, _ = limiters
    five_per_hour = RateLimit("key:k/requests_per_hour", limit=5, period_seconds=3600)  # T = 720 s
    admitted = [await rate.acquire("k", five_per_hour) for _ in range(5)]
    assert [d.remaining for d in admitted] == [4, 3, 2, 1, 0]
    assert all(d.allowed for d in admitted)
    refusals = [await rate.acquire("k", five_per_hour) for _ in range(20)]
    assert not any(d.allowed for d in refusals)
    for refused in refusals:  # refused requests consume nothing: the wait only shrinks as time passes
        assert 719 < refused.retry_after_seconds <= 720
        assert 3599 < refused.reset_after_seconds <= 3600
        assert refused.limit is five_per_hour


async def test_peek_consumes_nothing(limiters: tuple[RateLimiter, ConcurrencyLimiter]) -> None:
    rate, _ = limiters
    three = RateLimit("x", limit=3, period_seconds=3600)
    for _ in range(10):
        probe = await rate.peek("k", three)
        assert (probe.allowed, probe.remaining) == (True, 2)
    assert [(await rate.acquire("k", three)).allowed for _ in range(4)] == [True, True, True, False]
    assert not (await rate.peek("k", three)).allowed


async def test_refill_after_retry_after(limiters: tuple[RateLimiter, ConcurrencyLimiter]) -> None:
    rate, _ = limiters
    paced = RateLimit("x", limit=5, period_seconds=1, burst=1)  # one request per 200 ms
    assert (await rate.acquire("k", paced)).allowed
    refused = await rate.acquire("k", paced)
    assert not refused.allowed
    assert 0 < refused.retry_after_seconds <= 0.2
    last: list[LimitDecision] = [refused]

    async def admitted() -> bool:
        last.append(await rate.acquire("k", paced))
        return last[-1].allowed

    waited = await until(admitted, poll=refused.retry_after_seconds / 4)
    assert waited >= refused.retry_after_seconds - 0.01


# --- the exact-value properties of tests/unit/gate/test_limits_properties.py, on Redis' Lua script ------------
# The script reads an injected clock here, so every retry_after and remaining is checked at exact instants.

REDIS_PROPERTIES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def on_redis(client: Redis, key_prefix: str) -> LimiterFactory:
    def make(clock: Clock) -> RateLimiter:  # a fresh namespace per example: no subject seen yet
        return RedisRateLimiter(client, key_prefix=f"{key_prefix}{uuid.uuid4().hex}:", clock=clock)

    return make


@REDIS_PROPERTIES
@given(limit=limits, request_gaps=gaps)
async def test_redis_no_window_admits_more_than_burst_plus_refill(
    redis_client: Redis, key_prefix: str, limit: RateLimit, request_gaps: list[int]
) -> None:
    await check_no_window_admits_more_than_burst_plus_refill(on_redis(redis_client, key_prefix), limit, request_gaps)


@REDIS_PROPERTIES
@given(limit=limits, request_gaps=gaps)
async def test_redis_admits_exactly_what_a_token_bucket_admits(
    redis_client: Redis, key_prefix: str, limit: RateLimit, request_gaps: list[int]
) -> None:
    await check_admits_exactly_what_a_token_bucket_admits(on_redis(redis_client, key_prefix), limit, request_gaps)


@REDIS_PROPERTIES
@given(limit=limits, request_gaps=gaps)
async def test_redis_retry_after_is_exact_and_remaining_is_the_next_admissions(
    redis_client: Redis, key_prefix: str, limit: RateLimit, request_gaps: list[int]
) -> None:
    await check_retry_after_is_exact_and_remaining_is_the_next_admissions(
        on_redis(redis_client, key_prefix), limit, request_gaps
    )


async def test_concurrent_acquires_in_one_process_admit_exactly_the_limit(
    limiters: tuple[RateLimiter, ConcurrencyLimiter],
) -> None:
    rate, _ = limiters
    hundred = RateLimit("x", limit=100, period_seconds=3600)
    decisions = await asyncio.gather(*(rate.acquire("k", hundred) for _ in range(300)))
    assert sum(d.allowed for d in decisions) == 100


async def test_concurrency_slots(limiters: tuple[RateLimiter, ConcurrencyLimiter]) -> None:
    _, concurrency = limiters
    two = ConcurrencyLimit("key:k/in_flight", max_in_flight=2)
    first, second = await concurrency.enter("k", two), await concurrency.enter("k", two)
    assert first is not None
    assert second is not None
    assert await concurrency.enter("k", two) is None
    other = await concurrency.enter("other", two)
    assert other is not None
    await first.release()
    await first.release()  # idempotent
    third = await concurrency.enter("k", two)
    assert third is not None
    assert await concurrency.enter("k", two) is None
    for lease in (second, third, other):
        await lease.release()
    leases = [await concurrency.enter("k", two) for _ in range(2)]
    assert None not in leases
    for held in leases:
        assert held is not None
        await held.release()


# --- Redis only --------------------------------------------------------------------------------------------


async def run_replicas(*args: str, replicas: int = 2) -> list[dict[str, int]]:
    """Starts ``replicas`` worker processes, releases them together once all are connected, returns their counts."""
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(replicas)
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
            assert line.strip() == b"ready", line
        for process in processes:
            assert process.stdin is not None
            process.stdin.write(b"go\n")
            await process.stdin.drain()
        outputs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in processes)), timeout=60)
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert [p.returncode for p in processes] == [0] * replicas
    return [json.loads(stdout.decode().strip().splitlines()[-1]) for stdout, _ in outputs]


async def test_two_replicas_admit_exactly_the_limit(key_prefix: str) -> None:
    # 100 per hour: one refill takes 36 s, far longer than the run, so exactly the burst of 100 may pass.
    results = await run_replicas("rate", REDIS_URL, key_prefix, "key:shared", "100", "3600", "300")
    assert [r["errors"] for r in results] == [0, 0]
    assert sum(r["admitted"] for r in results) == 100
    assert sum(r["refused"] for r in results) == 500


async def test_two_replicas_never_exceed_the_concurrency_limit(key_prefix: str, redis_client: Redis) -> None:
    results = await run_replicas("concurrency", REDIS_URL, key_prefix, "key:shared", "5", "40", "10")
    assert [r["errors"] for r in results] == [0, 0]
    assert max(r["peak"] for r in results) <= 5
    assert sum(r["admitted"] for r in results) > 0
    assert sum(r["refused"] for r in results) > 0  # the limit was actually contended
    assert await redis_client.zcard(f"{key_prefix}concurrency:key:shared") == 0  # every lease released


async def test_unreleased_leases_expire(redis_client: Redis, key_prefix: str) -> None:
    limiter = RedisConcurrencyLimiter(redis_client, key_prefix=key_prefix, lease_seconds=0.3)
    one = ConcurrencyLimit("x", max_in_flight=1)
    started = time.monotonic()
    assert await limiter.enter("k", one) is not None  # never released: its gate "crashed"
    assert await limiter.enter("k", one) is None

    async def free_again() -> bool:
        return await limiter.enter("k", one) is not None

    await until(free_again)
    assert time.monotonic() - started >= 0.25
    # The set itself carries a TTL, so an abandoned subject leaves nothing behind.
    assert 0 < await redis_client.pttl(f"{key_prefix}concurrency:k") <= 300


async def test_rate_keys_expire_when_the_bucket_is_full_again(redis_client: Redis, key_prefix: str) -> None:
    rate = RedisRateLimiter(redis_client, key_prefix=key_prefix)
    limit = RateLimit("x", limit=10, period_seconds=60)
    decision = await rate.acquire("k", limit)
    ttl_ms = await redis_client.pttl(f"{key_prefix}rate:k")
    assert 0 < ttl_ms <= decision.reset_after_seconds * 1000 + 1
    await rate.peek("other", limit)
    assert await redis_client.exists(f"{key_prefix}rate:other") == 0  # a peek writes nothing


async def test_scripts_survive_a_script_cache_flush(redis_client: Redis, key_prefix: str) -> None:
    rate = RedisRateLimiter(redis_client, key_prefix=key_prefix)
    limit = RateLimit("x", limit=2, period_seconds=60)
    assert (await rate.acquire("k", limit)).allowed
    await redis_client.script_flush()  # as after a Redis restart or failover: EVALSHA answers NOSCRIPT
    assert (await rate.acquire("k", limit)).remaining == 0


async def test_build_limiters_for_redis(key_prefix: str) -> None:
    settings = LimitSettings(gate_limits_backend="redis", gate_redis_url=REDIS_URL, gate_limits_key_prefix=key_prefix)
    rate, concurrency, close = build_limiters(settings)
    try:
        assert (await rate.acquire("k", RateLimit("x", limit=1, period_seconds=60))).allowed
        assert not (await rate.acquire("k", RateLimit("x", limit=1, period_seconds=60))).allowed
        lease = await concurrency.enter("k", ConcurrencyLimit("x", 1))
        assert lease is not None
        await lease.release()
    finally:
        await close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_unreachable_redis_is_reported_quickly() -> None:
    store = RedisLimitStore(f"redis://127.0.0.1:{closed_port()}/0", timeout_seconds=0.25)
    try:
        started = time.monotonic()
        with pytest.raises(LimitStoreUnavailable):
            await store.rate.acquire("k", RateLimit("x", limit=1, period_seconds=60))
        with pytest.raises(LimitStoreUnavailable):
            await store.rate.peek("k", RateLimit("x", limit=1, period_seconds=60))
        with pytest.raises(LimitStoreUnavailable):
            await store.concurrency.enter("k", ConcurrencyLimit("x", 1))
        with pytest.raises(LimitStoreUnavailable):
            await store.ping()
        assert time.monotonic() - started < 2
    finally:
        await store.close()


async def test_a_silent_redis_times_out_quickly() -> None:
    """A Redis that accepts connections but never answers (overloaded, half-dead) must not hold requests."""
    writers: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.read()  # until the client hangs up

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = RedisLimitStore(f"redis://127.0.0.1:{port}/0", timeout_seconds=0.25)
    try:
        started = time.monotonic()
        with pytest.raises(LimitStoreUnavailable):
            await store.rate.acquire("k", RateLimit("x", limit=1, period_seconds=60))
        assert time.monotonic() - started < 1.5
    finally:
        await store.close()
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_releasing_a_lease_while_redis_is_down_does_not_raise() -> None:
    client = connect(f"redis://127.0.0.1:{closed_port()}/0", timeout_seconds=0.25)
    try:
        lease = _RedisLease(client, "techno:test:lease", "id")
        await lease.release()  # logged; the lease's TTL reclaims the slot
        await lease.release()
    finally:
        await client.aclose()
