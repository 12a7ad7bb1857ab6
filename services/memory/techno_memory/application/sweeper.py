"""The background task that deletes expired sessions.

Expiry itself needs no sweeper (an expired session is refused the moment it expires); the sweeper only makes
sure the personal data in it does not outlive the TTL by more than one interval. It deletes in bounded batches
so one sweep never holds a long transaction over a large backlog.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from techno_memory.application.ports import SessionStore, SweepObserver
from techno_memory.domain.records import utc_now

log = logging.getLogger(__name__)

SWEEP_BATCH = 500


class SessionSweeper:
    def __init__(
        self,
        store: SessionStore,
        observer: SweepObserver,
        *,
        interval_seconds: float,
        batch: int = SWEEP_BATCH,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._store = store
        self._observer = observer
        self._interval = interval_seconds
        self._batch = batch
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    async def sweep(self) -> int:
        """Delete every session expired by now, batch by batch; how many were deleted."""
        now = self._clock()
        total = 0
        while True:
            deleted = await self._store.delete_expired_sessions(now=now, limit=self._batch)
            total += deleted
            self._observer.expired(deleted)
            if deleted < self._batch:
                return total

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="session-sweeper")

    async def _loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception as error:  # the database may be down for a while: keep sweeping once it is back
                self._observer.failed()
                # The type only: a database error's text can carry statement parameters.
                log.warning("expired session sweep failed", extra={"error": type(error).__name__})
            await asyncio.sleep(self._interval)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
