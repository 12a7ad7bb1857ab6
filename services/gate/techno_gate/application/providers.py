"""The executor's configured providers, as the gate needs them: what ``*`` in an action's providers stands for,
and the models ``ListModels`` names.

Asked of the executor (``ListProviders``) and kept for a few seconds, so a burst of requests costs one call: the
list changes only when an executor is redeployed. Concurrent misses share one call. A failure is not kept, so
the next request asks again; it is ``EXECUTOR_UNAVAILABLE`` for the request that needed the list.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from techno_core.single_flight import SingleFlight
from techno_gate.application.ports import ProviderInfo

DEFAULT_TTL_SECONDS = 10.0


class ProviderCatalogue:
    def __init__(
        self,
        fetch: Callable[[], Awaitable[tuple[ProviderInfo, ...]]],
        *,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._ttl = ttl_seconds
        self._clock = clock
        self._kept: tuple[ProviderInfo, ...] | None = None
        self._kept_until = 0.0
        self._flight: SingleFlight[None, tuple[ProviderInfo, ...]] = SingleFlight()

    async def providers(self) -> tuple[ProviderInfo, ...]:
        if self._kept is not None and self._clock() < self._kept_until:
            return self._kept
        return await self._flight.run(None, self._refresh)

    async def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in await self.providers())

    async def _refresh(self) -> tuple[ProviderInfo, ...]:
        providers = await self._fetch()
        self._kept, self._kept_until = providers, self._clock() + self._ttl
        return providers
