"""Applies a profile's limits to one principal: concurrent in-flight requests, then request rate (per key,
then shared by the profile). Refusals carry QuotaFailure (which limit) and RetryInfo (when to retry).

When the limit store cannot be reached the configured choice applies: deny (fail closed, the default) or
allow. A refusal by the profile-wide rate after the per-key rate admitted costs that key one unit; the
limits are checked one after the other, not in one transaction across both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from techno_gate.domain.limits import (
    ConcurrencyLimit,
    ConcurrencyLimiter,
    Lease,
    LimitStoreUnavailable,
    RateLimit,
    RateLimiter,
    concurrency_limited,
    limits_unavailable,
    rate_limited,
)
from techno_gate.domain.policy import LimitsSpec
from techno_gate.domain.principal import Principal

MINUTE = 60.0


class LimitObserver(Protocol):
    def rejected(self, scope: str) -> None: ...

    def store_unavailable(self, allowed: bool) -> None: ...


@dataclass
class Admission:
    """An admitted request: release it when it ends. ``remaining`` is the key's rate budget left."""

    lease: Lease | None
    remaining: int | None

    async def release(self) -> None:
        if self.lease is not None:
            await self.lease.release()


def _rates(principal: Principal, profile: str, spec: LimitsSpec) -> list[tuple[str, str, RateLimit]]:
    rates = []
    if spec.requests_per_minute:
        name = f"key:{principal.id}/requests_per_minute"
        rates.append(("key", principal.id, RateLimit(name, spec.requests_per_minute, MINUTE, spec.burst)))
    if spec.profile_requests_per_minute:
        name = f"profile:{profile}/requests_per_minute"
        rates.append(("profile", f"profile:{profile}", RateLimit(name, spec.profile_requests_per_minute, MINUTE)))
    return rates


@dataclass
class LimitGate:
    rates: RateLimiter
    concurrency: ConcurrencyLimiter
    observer: LimitObserver
    fail_open: bool = False

    async def admit(self, principal: Principal, profile: str, spec: LimitsSpec) -> Admission:
        lease: Lease | None = None
        try:
            if spec.max_in_flight:
                lease = await self._enter(principal, spec.max_in_flight)
            remaining = None
            for scope, subject, limit in _rates(principal, profile, spec):
                decision = await self.rates.acquire(subject, limit)
                if not decision.allowed:
                    self.observer.rejected(scope)
                    raise rate_limited(decision)
                remaining = decision.remaining if remaining is None else remaining
            return Admission(lease, remaining)
        except LimitStoreUnavailable as error:
            if lease is not None:
                await lease.release()
            self.observer.store_unavailable(self.fail_open)
            if self.fail_open:
                return Admission(None, None)
            raise limits_unavailable() from error
        except BaseException:
            if lease is not None:
                await lease.release()
            raise

    async def remaining(self, principal: Principal, profile: str, spec: LimitsSpec) -> int | None:
        """The key's rate budget left, consuming nothing (dry run). None when unlimited or unknown."""
        for scope, subject, limit in _rates(principal, profile, spec):
            if scope == "key":
                try:
                    return (await self.rates.peek(subject, limit)).remaining
                except LimitStoreUnavailable:
                    return None
        return None

    async def _enter(self, principal: Principal, max_in_flight: int) -> Lease:
        limit = ConcurrencyLimit(f"key:{principal.id}/in_flight", max_in_flight)
        lease = await self.concurrency.enter(f"key:{principal.id}", limit)
        if lease is None:
            self.observer.rejected("concurrency")
            raise concurrency_limited(limit)
        return lease
