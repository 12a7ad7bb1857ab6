"""Single flight: concurrent requests for one key share one run of the work instead of each starting its own
(a cache miss under load otherwise sends a burst of identical calls to the service behind it).

The run is a task of its own, so a caller that gives up (cancelled) does not cancel the run the others wait for;
it is forgotten as soon as it ends, before anyone can see its result, so a failure is never handed to a later
caller: the next call after a failure runs the work again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._running: dict[K, asyncio.Task[V]] = {}

    def start(self, key: K, work: Callable[[], Awaitable[V]]) -> asyncio.Task[V]:
        """The run for ``key`` in flight, started (``work()``) if there is none."""
        running = self._running.get(key)
        if running is None:
            running = asyncio.ensure_future(self._run(key, work))
            self._running[key] = running
        return running

    async def run(self, key: K, work: Callable[[], Awaitable[V]]) -> V:
        """The result of the run for ``key``; cancelling this caller leaves the run to the others."""
        return await asyncio.shield(self.start(key, work))

    def in_flight(self, key: K) -> bool:
        return key in self._running

    async def _run(self, key: K, work: Callable[[], Awaitable[V]]) -> V:
        try:
            return await work()
        finally:
            del self._running[key]
