"""Applies a profile's limits to one principal: concurrent in-flight requests, then request rate (per key,
then shared by the profile). Refusals carry QuotaFailure (which limit) and RetryInfo (when to retry).

When the limit store cannot be reached the configured choice applies: deny (fail closed, the default) or
allow. A refusal by the profile-wide rate after the per-key rate admitted costs that key one unit; the
limits are checked one after the other, not in one transaction across both.

Every authenticated call is admitted here. ``Process`` and ``StreamProcess`` (the default family, "") use the
buckets named ``key:<id>/requests_per_minute``; every other family of routes (``RouteFamily``) has the same limits
in buckets of its own (``key:<id>/personal/requests_per_minute`` …), so reading or exporting one's data can never
use up the budget of processing, nor the other way round.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from techno_core import errors
from techno_gate.application.ports import PolicySource
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
from techno_gate.domain.reasons import Reason

MINUTE = 60.0


class RouteFamily(StrEnum):
    """Routes that share one budget per key (and per profile). ``PROCESS`` is ``Process`` itself."""

    PROCESS = ""  # Process and StreamProcess (a stream holds its in-flight slot until it ends)
    PERSONAL = "personal"  # sessions, preferences, export and erasure of one's data
    CATALOG = "catalog"  # the action catalogue (ListActions)
    ADMIN = "admin"  # GateAdminService: keys, breakers, faults, dry runs, audit reads


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


def _bucket(family: RouteFamily) -> tuple[str, str]:
    """The suffixes of a family's bucket: of its subject (the store's key) and of the name a client sees."""
    return (f":{family}", f"/{family}") if family else ("", "")


def _rates(
    principal: Principal, profile: str, spec: LimitsSpec, family: RouteFamily = RouteFamily.PROCESS
) -> list[tuple[str, str, RateLimit]]:
    subject, name = _bucket(family)
    rates = []
    if spec.requests_per_minute:
        limit = RateLimit(f"key:{principal.id}{name}/requests_per_minute", spec.requests_per_minute, MINUTE, spec.burst)
        rates.append(("key", f"{principal.id}{subject}", limit))
    if spec.profile_requests_per_minute:
        limit = RateLimit(f"profile:{profile}{name}/requests_per_minute", spec.profile_requests_per_minute, MINUTE)
        rates.append(("profile", f"profile:{profile}{subject}", limit))
    return rates


@dataclass
class LimitGate:
    rates: RateLimiter
    concurrency: ConcurrencyLimiter
    observer: LimitObserver
    fail_open: bool = False

    async def admit(
        self, principal: Principal, profile: str, spec: LimitsSpec, family: RouteFamily = RouteFamily.PROCESS
    ) -> Admission:
        lease: Lease | None = None
        try:
            if spec.max_in_flight:
                lease = await self._enter(principal, spec.max_in_flight, family)
            remaining = None
            for scope, subject, limit in _rates(principal, profile, spec, family):
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

    async def _enter(self, principal: Principal, max_in_flight: int, family: RouteFamily) -> Lease:
        subject, name = _bucket(family)
        limit = ConcurrencyLimit(f"key:{principal.id}{name}/in_flight", max_in_flight)
        lease = await self.concurrency.enter(f"key:{principal.id}{subject}", limit)
        if lease is None:
            self.observer.rejected("concurrency")
            raise concurrency_limited(limit)
        return lease


@dataclass
class RouteLimits:
    """The limits of every authenticated call other than ``Process`` (which admits itself, so that a refusal is
    a recorded decision): the caller's profile's limits, in the buckets of the route's family. A refusal is the
    same 429 ``RATE_LIMITED`` / ``CONCURRENCY_LIMITED`` with ``QuotaFailure`` and ``RetryInfo``; a key whose
    profile is not in the policy is refused (``PROFILE_UNKNOWN``), as ``Process`` refuses it, rather than
    served without limits."""

    gate: LimitGate
    policies: PolicySource

    @contextlib.asynccontextmanager
    async def admitted(self, principal: Principal, family: RouteFamily) -> AsyncIterator[Principal]:
        profile = self.policies.current.profile(principal.profile)
        if profile is None:
            raise errors.PermissionDenied(
                reason=Reason.PROFILE_UNKNOWN, message="the caller's governance profile is not in the policy"
            )
        admission = await self.gate.admit(principal, principal.profile, profile.limits, family)
        try:
            yield principal
        finally:
            await admission.release()
