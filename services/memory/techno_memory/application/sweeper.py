"""The background task that deletes expired sessions and expired idempotency records.

Expiry itself needs no sweeper (an expired session is refused, and an expired idempotency record taken over, the
moment it expires); the sweeper only makes sure the data does not outlive its expiry by more than one interval.
It deletes in bounded batches so one sweep never holds a long transaction over a large backlog, and sweeps the
two kinds independently, so a failure with one never holds back the other.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from techno_core.periodic import Periodic
from techno_memory.application.ports import IdempotencyStore, SessionStore, SweepObserver
from techno_memory.domain.records import utc_now

log = logging.getLogger(__name__)

SWEEP_BATCH = 500


@dataclass(frozen=True)
class Swept:
    """What one sweep deleted."""

    sessions: int
    idempotency_keys: int


class ExpirySweeper:
    def __init__(
        self,
        sessions: SessionStore,
        idempotency: IdempotencyStore,
        observer: SweepObserver,
        *,
        interval_seconds: float,
        batch: int = SWEEP_BATCH,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._sessions = sessions
        self._idempotency = idempotency
        self._observer = observer
        self._batch = batch
        self._clock = clock
        self._periodic = Periodic(self._sweep_logged, interval_seconds=interval_seconds, name="expiry-sweeper")

    async def _drain(self, delete: Callable[..., Awaitable[int]], observe: Callable[[int], None], now: datetime) -> int:
        total = 0
        while True:
            deleted = await delete(now=now, limit=self._batch)
            total += deleted
            observe(deleted)
            if deleted < self._batch:
                return total

    async def sweep_sessions(self, now: datetime) -> int:
        """Delete every session expired by ``now``, batch by batch; how many were deleted."""
        return await self._drain(self._sessions.delete_expired_sessions, self._observer.expired, now)

    async def sweep_idempotency_keys(self, now: datetime) -> int:
        """Delete every idempotency record expired by ``now``, batch by batch; how many were deleted."""
        return await self._drain(
            self._idempotency.delete_expired_idempotency_keys, self._observer.idempotency_keys_expired, now
        )

    async def sweep(self) -> Swept:
        now = self._clock()
        return Swept(await self.sweep_sessions(now), await self.sweep_idempotency_keys(now))

    async def start(self) -> None:
        await self._periodic.start()

    async def _sweep_logged(self) -> None:
        sweeps = (("sessions", self.sweep_sessions), ("idempotency keys", self.sweep_idempotency_keys))
        now = self._clock()
        for what, sweep in sweeps:
            try:
                await sweep(now)
            except Exception as error:  # the database may be down for a while: keep sweeping once it is back
                self._observer.failed()
                # The type only: a database error's text can carry statement parameters.
                log.warning(f"expired {what} sweep failed", extra={"error": type(error).__name__})

    async def close(self) -> None:
        await self._periodic.close()
