"""A background task that runs one step now and then every interval, until closed (memory's expiry sweeper and
outcome reconciler, the gate's policy file watch). The step handles its own failures: the loop only waits and
repeats."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class Periodic:
    def __init__(self, step: Callable[[], Awaitable[object]], *, interval_seconds: float, name: str) -> None:
        self._step = step
        self._interval = interval_seconds
        self._name = name
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=self._name)

    async def _loop(self) -> None:
        while True:
            await self._step()
            await asyncio.sleep(self._interval)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
