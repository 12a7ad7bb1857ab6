"""One gate replica's worth of limit checks, run as its own OS process by ``test_redis_limits.py``.

Its own interpreter means its own event loop and its own Redis connection pool: the exactness the test checks
can then only come from Redis' atomic scripts, never from sharing anything in-process.

Protocol: prints ``ready`` once Redis answers, waits for a line on stdin (so both replicas start together),
hammers, then prints one JSON line of counts.

    limits_worker.py rate URL PREFIX SUBJECT LIMIT PERIOD_SECONDS REQUESTS
    limits_worker.py concurrency URL PREFIX SUBJECT MAX_IN_FLIGHT TASKS ROUNDS
"""

from __future__ import annotations

import asyncio
import json
import sys

from redis.asyncio import Redis

from techno_gate.adapters.limits_redis import RedisConcurrencyLimiter, RedisRateLimiter, connect
from techno_gate.domain.limits import ConcurrencyLimit, LimitStoreUnavailable, RateLimit

# Generous: hundreds of simultaneous calls from two processes queue up in Redis; this test is about exactness.
TIMEOUT_SECONDS = 5.0


async def hammer_rate(
    client: Redis, prefix: str, subject: str, limit: int, period: float, requests: int
) -> dict[str, int]:
    limiter = RedisRateLimiter(client, key_prefix=prefix)
    rate = RateLimit(f"{subject}/test", limit=limit, period_seconds=period)
    outcomes = await asyncio.gather(*(limiter.acquire(subject, rate) for _ in range(requests)), return_exceptions=True)
    return {
        "admitted": sum(1 for o in outcomes if not isinstance(o, BaseException) and o.allowed),
        "refused": sum(1 for o in outcomes if not isinstance(o, BaseException) and not o.allowed),
        "errors": sum(1 for o in outcomes if isinstance(o, BaseException)),
    }


async def hammer_concurrency(
    client: Redis, prefix: str, subject: str, max_in_flight: int, tasks: int, rounds: int
) -> dict[str, int]:
    limiter = RedisConcurrencyLimiter(client, key_prefix=prefix, lease_seconds=60)
    limit = ConcurrencyLimit(f"{subject}/in_flight", max_in_flight)
    # Holders count themselves in a Redis counter shared by both processes: after entering, before leaving.
    counter = f"{prefix}observed:{subject}"
    counts = {"admitted": 0, "refused": 0, "errors": 0, "peak": 0}

    async def one_task() -> None:
        for _ in range(rounds):
            try:
                lease = await limiter.enter(subject, limit)
            except LimitStoreUnavailable:
                counts["errors"] += 1
                continue
            if lease is None:
                counts["refused"] += 1
                await asyncio.sleep(0)
                continue
            try:
                counts["admitted"] += 1
                counts["peak"] = max(counts["peak"], int(await client.incr(counter)))
                await asyncio.sleep(0.002)  # hold the slot while the other replica tries to take it
                await client.decr(counter)
            finally:
                await lease.release()

    await asyncio.gather(*(one_task() for _ in range(tasks)))
    return counts


async def main(argv: list[str]) -> None:
    mode, url, prefix, subject, *numbers = argv
    client = connect(url, timeout_seconds=TIMEOUT_SECONDS)
    try:
        await client.ping()
        print("ready", flush=True)
        sys.stdin.readline()  # the go signal; blocking is fine, nothing else runs yet
        if mode == "rate":
            result = await hammer_rate(client, prefix, subject, int(numbers[0]), float(numbers[1]), int(numbers[2]))
        else:
            result = await hammer_concurrency(
                client, prefix, subject, int(numbers[0]), int(numbers[1]), int(numbers[2])
            )
        print(json.dumps(result), flush=True)
    finally:
        await client.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
