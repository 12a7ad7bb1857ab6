"""The background task that closes allowed decisions left without an outcome, as ``UNKNOWN`` (``OUTCOME_LOST``).

A decision is open when no outcome of its trace names it (``domain.reconcile``). It is only judged once it was
recorded more than ``after_seconds`` ago: longer than the longest execution plus the time a gate's outbox keeps
retrying an outcome, so a late outcome is not pre-empted. Its closing outcome goes through the normal chained
append (group commit, hash chain), with an event id derived from the decision's: several replicas closing the
same decision store one event.

Efficient on a large trail: a cursor (the id up to which every allowed decision is judged) moves forward through
the primary key, and a run reads at most ``batch`` decisions per query and ``max_batches`` queries; the outcomes
are looked up by trace id (indexed). The cursor lives in the process: a replica that starts begins with the
events of the last ``lookback_seconds``. It stops at the first decision too young to judge, so one recorded a
little out of order (``recorded_at`` is taken before the chain lock) is never skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from techno_core.periodic import Periodic
from techno_memory.application.audit_log import AuditLog
from techno_memory.application.ports import DecisionLedger, ReconcileObserver
from techno_memory.domain.reconcile import open_decisions, unknown_outcome
from techno_memory.domain.records import utc_now

log = logging.getLogger(__name__)

RECONCILE_BATCH = 500
MAX_BATCHES_PER_RUN = 20


class OutcomeReconciler:
    def __init__(
        self,
        ledger: DecisionLedger,
        audit_log: AuditLog,
        observer: ReconcileObserver,
        *,
        after_seconds: float,
        interval_seconds: float,
        lookback_seconds: float,
        batch: int = RECONCILE_BATCH,
        max_batches: int = MAX_BATCHES_PER_RUN,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._ledger = ledger
        self._audit_log = audit_log
        self._observer = observer
        self._after = timedelta(seconds=after_seconds)
        self._lookback = timedelta(seconds=lookback_seconds)
        self._batch = batch
        self._max_batches = max_batches
        self._clock = clock
        self._cursor: int | None = None
        self._periodic = Periodic(self._reconcile_logged, interval_seconds=interval_seconds, name="outcome-reconciler")

    async def reconcile(self) -> int:
        """One run: close the open decisions recorded before ``now - after_seconds``; how many outcomes this
        replica stored (a decision another replica closed first is not counted)."""
        now = self._clock()
        cutoff = now - self._after
        if self._cursor is None:
            self._cursor = await self._ledger.last_id_before(now - self._lookback)
        stored = 0
        for _ in range(self._max_batches):
            page = await self._ledger.allowed_decisions(after_id=self._cursor, limit=self._batch)
            judged = []
            for row_id, decision in page:
                if decision.recorded_at is None or decision.recorded_at >= cutoff:
                    break
                judged.append((row_id, decision))
            if judged:
                decisions = [decision for _, decision in judged]
                outcomes = await self._ledger.outcomes_of([decision.trace_id for decision in decisions])
                closing = [
                    unknown_outcome(decision, now=now, after_seconds=self._after.total_seconds())
                    for decision in open_decisions(decisions, outcomes)
                ]
                if closing:
                    newly = await self._audit_log.append(closing)
                    stored += newly
                    self._observer.reconciled(newly)
                    log.warning(
                        "decisions closed with an UNKNOWN outcome (OUTCOME_LOST)",
                        extra={"closed": newly, "trace_ids": [event.trace_id for event in closing[:10]]},
                    )
                self._cursor = judged[-1][0]
            if len(judged) < self._batch:  # caught up, or stopped at a decision too young to judge
                break
        return stored

    async def start(self) -> None:
        await self._periodic.start()

    async def _reconcile_logged(self) -> None:
        try:
            await self.reconcile()
        except Exception as error:  # the database may be down for a while: try again next interval
            self._observer.failed()
            log.warning("outcome reconciliation failed", extra={"error": type(error).__name__})

    async def close(self) -> None:
        await self._periodic.close()
