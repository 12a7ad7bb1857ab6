"""Where the gate keeps its rate and concurrency counters, and what it does when that store is down."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings

from techno_core.settings import TECHNO_CONFIG
from techno_gate.adapters.limits_local import LocalConcurrencyLimiter, LocalRateLimiter
from techno_gate.adapters.limits_redis import DEFAULT_KEY_PREFIX, RedisLimitStore
from techno_gate.domain.limits import ConcurrencyLimiter, RateLimiter

Closer = Callable[[], Awaitable[None]]


class LimitSettings(BaseSettings):
    """Mixin of the gate's settings for request limits."""

    model_config = TECHNO_CONFIG

    gate_limits_backend: Literal["local", "redis"] = Field(
        "local",
        description=(
            "Where limits are counted: `local` (in-process; each replica enforces the full limit on its own) "
            "or `redis` (shared by every replica, exact across them)."
        ),
    )
    gate_redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Redis holding the shared limits, when the backend is `redis`."
    )
    gate_redis_timeout_seconds: float = Field(
        0.25,
        gt=0,
        description="Connect and reply timeout of each Redis call; past it the store counts as unavailable.",
    )
    gate_limits_on_store_unavailable: Literal["deny", "allow"] = Field(
        "deny",
        description=(
            "When Redis cannot be reached: `deny` answers UNAVAILABLE (LIMITS_UNAVAILABLE, fail closed) or "
            "`allow` admits the request unlimited (fail open)."
        ),
    )
    gate_limits_key_prefix: str = Field(
        DEFAULT_KEY_PREFIX, description="Prefix of every Redis key the limits write (to share one Redis safely)."
    )
    gate_concurrency_lease_seconds: float = Field(
        120.0,  # above gate_executor_timeout_seconds (60 s), so a slow request keeps its slot
        gt=0,
        description=(
            "Lifetime of a Redis in-flight slot not released (its gate crashed). Keep it above the longest "
            "request (`gate_executor_timeout_seconds`), or slow requests stop counting before they end."
        ),
    )


async def _nothing_to_close() -> None:
    return None


def build_limiters(settings: LimitSettings) -> tuple[RateLimiter, ConcurrencyLimiter, Closer]:
    """The limiters the settings ask for, and the coroutine function that frees them (call it at shutdown).
    Opens no connection: Redis is reached on the first limit check."""
    if settings.gate_limits_backend == "redis":
        store = RedisLimitStore(
            settings.gate_redis_url,
            key_prefix=settings.gate_limits_key_prefix,
            lease_seconds=settings.gate_concurrency_lease_seconds,
            timeout_seconds=settings.gate_redis_timeout_seconds,
        )
        return store.rate, store.concurrency, store.close
    return LocalRateLimiter(), LocalConcurrencyLimiter(), _nothing_to_close
