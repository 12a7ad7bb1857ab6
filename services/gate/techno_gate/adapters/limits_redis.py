"""Limits shared by every gate replica through Redis.

Each decision is ONE Lua script, which Redis runs atomically: replicas can hammer the same subject in parallel
and the count stays exact (no read-then-write race between them). The scripts read the clock with Redis'
``TIME``, so replicas whose own clocks disagree still share one timeline. Every key carries a TTL, so the store
holds only subjects that are active now, and a crashed gate's in-flight leases free themselves.

Every Redis failure (refused connection, timeout, error reply) surfaces as ``LimitStoreUnavailable``; the gate
decides whether that denies (default) or admits. Timeouts are short on purpose: a limit check that waits on a
sick Redis would turn the gate's tail latency into Redis' outage.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from techno_gate.domain.limits import (
    MICROS,
    ConcurrencyLimit,
    GcraResult,
    LimitDecision,
    LimitStoreUnavailable,
    RateLimit,
    decision,
)

log = logging.getLogger(__name__)

DEFAULT_KEY_PREFIX = "techno:limits:"

# A transcription of ``techno_gate.domain.limits.gcra`` (read that for the reasoning). Times are integer
# microseconds held in Lua doubles, exact below 2**53. Numbers are formatted with %.0f before reaching Redis,
# because Lua's default number-to-string keeps only 14 significant digits and would round epoch microseconds.
# KEYS[1]: the subject's TAT. ARGV: emission interval (us), capacity = burst * interval (us), '1' to consume,
# and optionally now (us) from an injected clock instead of Redis' TIME (tests: exact values at exact instants).
# Returns {allowed 0/1, remaining, retry_after_us, reset_after_us}.
_GCRA_LUA = """
local emission = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local injected = ARGV[4]
local now
if injected then
  now = tonumber(injected)
else
  local clock = redis.call('TIME')
  now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
end
local tat = now
local stored = redis.call('GET', KEYS[1])
if stored then
  local value = tonumber(stored)
  if value and value > now then tat = value end
end
local new_tat = tat + emission
local allow_at = new_tat - capacity
if now < allow_at then
  return {0, 0, allow_at - now, tat - now}
end
if ARGV[3] == '1' then
  -- Expire when the bucket is full again: from then on a missing key means exactly the same thing.
  -- Redis expires keys on its own clock, which an injected one does not follow: then no TTL (tests delete them).
  if injected then
    redis.call('SET', KEYS[1], string.format('%.0f', new_tat))
  else
    local ttl_ms = math.ceil((new_tat - now) / 1000)
    redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', string.format('%.0f', ttl_ms))
  end
end
return {1, math.floor((now - allow_at) / emission), 0, new_tat - now}
"""

# KEYS[1]: sorted set of lease ids scored by their expiry (us). ARGV: max in flight, lease (us), lease id.
# Expired leases (their gate crashed or lost Redis before releasing) are dropped before counting.
# Returns 1 when the lease is granted, 0 when every slot is taken.
_ENTER_LUA = """
local max_in_flight = tonumber(ARGV[1])
local lease = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now))
if redis.call('ZCARD', KEYS[1]) >= max_in_flight then
  return 0
end
redis.call('ZADD', KEYS[1], string.format('%.0f', now + lease), ARGV[3])
-- The newest lease expires last, so the set may go when it does.
redis.call('PEXPIRE', KEYS[1], string.format('%.0f', math.ceil(lease / 1000)))
return 1
"""


@contextmanager
def _store_errors() -> Iterator[None]:
    try:
        yield
    except (RedisError, OSError) as error:  # OSError covers the builtin TimeoutError too
        raise LimitStoreUnavailable(f"redis: {type(error).__name__}: {error}") from error


def connect(url: str, *, timeout_seconds: float = 0.25) -> Redis:
    """A client that fails fast. Nothing connects until the first command (no I/O at construction).

    One retry, without backoff, absorbs a pooled connection that went stale (Redis restarted); more would only
    stretch the time a request waits on a Redis that is really gone.
    """
    client: Redis = Redis.from_url(
        url,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        retry=Retry(NoBackoff(), retries=1),
    )
    return client


class RedisRateLimiter:
    def __init__(
        self, client: Redis, *, key_prefix: str = DEFAULT_KEY_PREFIX, clock: Callable[[], int] | None = None
    ) -> None:
        """``clock`` (integer microseconds) replaces Redis' ``TIME`` for tests that need exact instants; keys
        written on it carry no TTL. Left ``None`` in service, so every replica shares Redis' one timeline."""
        self._prefix = f"{key_prefix}rate:"
        self._clock = clock
        # register_script sends EVALSHA, and loads the script on NOSCRIPT (after a Redis restart or failover).
        self._script = client.register_script(_GCRA_LUA)

    async def acquire(self, subject: str, limit: RateLimit) -> LimitDecision:
        return await self._run(subject, limit, consume=True)

    async def peek(self, subject: str, limit: RateLimit) -> LimitDecision:
        return await self._run(subject, limit, consume=False)

    async def _run(self, subject: str, limit: RateLimit, *, consume: bool) -> LimitDecision:
        args = [limit.emission_interval_us, limit.capacity_us, "1" if consume else "0"]
        if self._clock is not None:
            args.append(self._clock())
        with _store_errors():
            reply: Any = await self._script(keys=[self._prefix + subject], args=args)
        allowed, remaining, retry_after_us, reset_after_us = (int(value) for value in reply)
        return decision(limit, GcraResult(allowed == 1, remaining, retry_after_us, reset_after_us, None))


class _RedisLease:
    def __init__(self, client: Redis, key: str, lease_id: str) -> None:
        self._client = client
        self._key = key
        self._id = lease_id
        self._released = False

    async def release(self) -> None:
        if self._released:
            return
        # Marked first: a second call must not remove anything even if this one fails half way.
        self._released = True
        try:
            await self._client.zrem(self._key, self._id)
        except (RedisError, OSError) as error:
            # Never raised: release runs in the gate's cleanup path, and the lease expires on its own anyway.
            log.warning("concurrency lease not released; it will expire", extra={"error": type(error).__name__})


class RedisConcurrencyLimiter:
    """In-flight slots as a sorted set of lease ids scored by expiry.

    A lease lasts ``lease_seconds`` unless released; it must outlive the longest request (the executor's timeout
    ceiling), or a slow request stops counting before it ends.
    """

    def __init__(self, client: Redis, *, key_prefix: str = DEFAULT_KEY_PREFIX, lease_seconds: float = 60.0) -> None:
        if not lease_seconds > 0:
            raise ValueError(f"lease_seconds must be positive, got {lease_seconds}")
        self._client = client
        self._prefix = f"{key_prefix}concurrency:"
        self._lease_us = max(1000, round(lease_seconds * MICROS))
        self._script = client.register_script(_ENTER_LUA)

    async def enter(self, subject: str, limit: ConcurrencyLimit) -> _RedisLease | None:
        key = self._prefix + subject
        lease_id = uuid.uuid4().hex
        with _store_errors():
            granted: Any = await self._script(keys=[key], args=[limit.max_in_flight, self._lease_us, lease_id])
        return _RedisLease(self._client, key, lease_id) if int(granted) == 1 else None


class RedisLimitStore:
    """One client shared by both limiters; ``close`` releases its connections."""

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        lease_seconds: float = 60.0,
        timeout_seconds: float = 0.25,
    ) -> None:
        self._client = connect(url, timeout_seconds=timeout_seconds)
        self.rate = RedisRateLimiter(self._client, key_prefix=key_prefix)
        self.concurrency = RedisConcurrencyLimiter(self._client, key_prefix=key_prefix, lease_seconds=lease_seconds)

    async def ping(self) -> None:
        """For health checks: raises ``LimitStoreUnavailable`` when Redis does not answer."""
        with _store_errors():
            await self._client.ping()

    async def close(self) -> None:
        await self._client.aclose()
