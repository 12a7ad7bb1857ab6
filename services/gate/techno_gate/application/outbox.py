"""The outbox of outcomes: an outcome memory could not commit is kept in the gate and sent again until memory
acknowledges it.

The request it belongs to has run (its decision is committed, the executor answered), so the caller gets its
answer; what is left is making the trail say so. ``put`` never waits and never fails: it keeps the record, and a
background task sends what is kept, oldest first, in groups (the audit log coalesces a group into one append),
pausing with capped exponential back-off while memory refuses. Sending again is safe: every record carries its
``event_id`` and memory stores an event id once.

Bounded: past ``capacity`` the oldest record is dropped, logged and counted, and the gate keeps serving. A full
outbox means memory has refused outcomes for long while still committing decisions (else nothing would run);
refusing requests would not bring the lost outcomes back, and a decision whose outcome never arrives is closed
by memory's reconciler as ``UNKNOWN`` (``OUTCOME_LOST``), so the trail still shows every decision closed. The
same holds for records still kept when the process dies: ``close`` gives them one last chance within the
shutdown grace, a SIGKILL gives them none.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Protocol

from techno_gate.application.ports import AuditLog
from techno_gate.domain.audit import AuditRecord

log = logging.getLogger(__name__)

DEFAULT_CAPACITY = 10_000
SEND_GROUP = 256  # records sent at once: one coalesced append, well under memory's 1000 events per request


class OutboxObserver(Protocol):
    """Metrics: how many records were delivered late and how many were given up."""

    def delivered(self, count: int) -> None: ...

    def dropped(self, count: int) -> None: ...


class OutcomeOutbox:
    def __init__(
        self,
        audit: AuditLog,
        observer: OutboxObserver,
        *,
        capacity: int = DEFAULT_CAPACITY,
        first_retry_seconds: float = 0.1,
        max_retry_seconds: float = 5.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1:
            raise ValueError("the outbox needs room for at least one record")
        self._audit = audit
        self._observer = observer
        self._capacity = capacity
        self._first_retry = first_retry_seconds
        self._max_retry = max_retry_seconds
        self._sleep = sleep
        self._clock = clock
        # Keyed by event id: a record delivered while it waited is removed in O(1), whatever was dropped meanwhile.
        self._kept: OrderedDict[str, AuditRecord] = OrderedDict()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def size(self) -> int:
        return len(self._kept)

    def put(self, record: AuditRecord) -> None:
        """Keep ``record`` until memory acknowledges it (dropping the oldest kept one when full)."""
        if record.event_id in self._kept:
            return
        if len(self._kept) >= self._capacity:
            _, oldest = self._kept.popitem(last=False)
            self._observer.dropped(1)
            log.error(
                "outbox full: oldest outcome dropped; memory's reconciler will close its decision as UNKNOWN",
                extra={"event_id": oldest.event_id, "decision_trace_id": oldest.trace_id, "capacity": self._capacity},
            )
        self._kept[record.event_id] = record
        self._wakeup.set()

    async def send(self) -> tuple[int, int]:
        """Send the oldest group once; (delivered, still kept). Records that fail stay, in their order."""
        group = list(itertools.islice(self._kept.values(), SEND_GROUP))
        if not group:
            return 0, 0
        results = await asyncio.gather(*(self._audit.record(record) for record in group), return_exceptions=True)
        delivered = 0
        for record, result in zip(group, results, strict=True):
            if not isinstance(result, BaseException) and self._kept.pop(record.event_id, None) is not None:
                delivered += 1
        if delivered:
            self._observer.delivered(delivered)
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            log.warning(
                "outbox: memory refused outcomes; retrying",
                extra={"failed": len(failures), "kept": len(self._kept), "error": type(failures[0]).__name__},
            )
        elif delivered:
            log.info("outbox: outcomes delivered late", extra={"delivered": delivered, "kept": len(self._kept)})
        return delivered, len(self._kept)

    async def start(self) -> None:
        # An empty context: the task outlives the request whose failed outcome woke it.
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="outcome-outbox", context=contextvars.Context()
        )

    async def _run(self) -> None:
        pause = self._first_retry
        while True:
            if not self._kept:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            try:
                delivered, _ = await self.send()
            except Exception as error:  # not memory's refusal (that is a result): log it, keep the records
                log.exception("outbox: sending failed", extra={"error": type(error).__name__})
                delivered = 0
            if delivered:  # progress: send the next group at once
                pause = self._first_retry
            else:  # memory refuses: wait before asking again, longer each time
                await self._sleep(pause)
                pause = min(pause * 2, self._max_retry)

    async def close(self, *, within_seconds: float) -> None:
        """Stop the background task, then send what is kept until it is empty or ``within_seconds`` have passed;
        what is left is counted as dropped (the reconciler closes those decisions)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        deadline = self._clock() + within_seconds
        pause = self._first_retry
        while self._kept and self._clock() < deadline:
            try:
                async with asyncio.timeout(max(0.0, deadline - self._clock())):
                    delivered, _ = await self.send()
            except TimeoutError:
                break
            if not delivered and self._kept:
                await self._sleep(min(pause, max(0.0, deadline - self._clock())))
                pause = min(pause * 2, self._max_retry)
        if self._kept:
            lost = len(self._kept)
            self._kept.clear()
            self._observer.dropped(lost)
            log.error(
                "outbox: outcomes not delivered before shutdown; memory's reconciler will close their decisions "
                "as UNKNOWN",
                extra={"dropped": lost},
            )
