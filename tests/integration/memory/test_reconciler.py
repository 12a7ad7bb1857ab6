"""The outcome reconciler on SQLite and PostgreSQL: an allowed decision left without an outcome past the grace
gets exactly one UNKNOWN outcome (OUTCOME_LOST), even with two memory replicas reconciling at once; a decision
with an outcome, a denied one and a young one are left alone; the hash chain verifies afterwards. The clock is
injected: nothing sleeps."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from techno_memory.adapters.chain import verify_chain
from techno_memory.adapters.database import create_database_engine
from techno_memory.adapters.decision_repository import SqlDecisionLedger
from techno_memory.adapters.metrics import AppendMetrics
from techno_memory.adapters.repository import SqlRepository
from techno_memory.application.audit_log import AuditLog
from techno_memory.application.reconciler import OutcomeReconciler
from techno_memory.domain.reconcile import OUTCOME_LOST, UNKNOWN, reconciled_event_id
from techno_memory.domain.records import AuditEvent, AuditEventKind

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
GRACE = 300.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class FakeReconcileObserver:
    reconciled_total: int = 0
    failures: int = 0

    def reconciled(self, count: int) -> None:
        self.reconciled_total += count

    def failed(self) -> None:
        self.failures += 1


@dataclass
class Replica:
    """One memory replica's writer and reconciler, on its own connection pool."""

    engine: AsyncEngine
    repository: SqlRepository
    audit_log: AuditLog
    reconciler: OutcomeReconciler
    observer: FakeReconcileObserver


@pytest.fixture
async def clock() -> Clock:
    return Clock()


@pytest.fixture
async def replicas(migrated_url: str, clock: Clock) -> AsyncIterator[list[Replica]]:
    made = []
    for _ in range(2):
        engine = create_database_engine(migrated_url, pool_size=2, tracer_provider=None)
        repository = SqlRepository(engine, clock=clock)
        audit_log = AuditLog(repository, AppendMetrics(CollectorRegistry(), max_batch=64), max_batch=64)
        observer = FakeReconcileObserver()
        reconciler = OutcomeReconciler(
            SqlDecisionLedger(engine), audit_log, observer,
            after_seconds=GRACE, interval_seconds=30, lookback_seconds=86_400, batch=3, max_batches=100, clock=clock,
        )  # fmt: skip
        made.append(Replica(engine, repository, audit_log, reconciler, observer))
    yield made
    for replica in made:
        await replica.audit_log.close()
        await replica.repository.close()
        await replica.engine.dispose()


def event(kind: AuditEventKind, trace_id: str, result: str, **attributes: Any) -> AuditEvent:
    return AuditEvent(
        event_id=str(uuid.uuid4()), trace_id=trace_id, kind=kind, occurred_at=T0, service="gate",
        principal_id="key_1", action="summarize", context_id="ctx-1", result=result,
        reason_codes=("ALLOWED",) if kind is AuditEventKind.DECISION else (), attributes=attributes,
    )  # fmt: skip


def decision(result: str = "ALLOW", trace_id: str | None = None) -> AuditEvent:
    return event(AuditEventKind.DECISION, trace_id or uuid.uuid4().hex, result)


def outcome_of(decision_: AuditEvent, *, named: bool = True) -> AuditEvent:
    attributes = {"decision_event_id": decision_.event_id} if named else {}
    return event(AuditEventKind.OUTCOME, decision_.trace_id, "SUCCEEDED", **attributes)


async def outcomes(engine: AsyncEngine, trace_id: str) -> list[AuditEvent]:
    return await SqlDecisionLedger(engine).outcomes_of([trace_id])


async def test_an_open_decision_gets_exactly_one_unknown_outcome_and_nothing_else_is_touched(
    replicas: list[Replica], clock: Clock
) -> None:
    first, second = replicas
    lost, closed, legacy, denied = decision(), decision(), decision(), decision("DENY")
    await first.audit_log.append([lost, closed, outcome_of(closed), legacy, outcome_of(legacy, named=False), denied])
    # A second request under the same trace id (a reused traceparent): its own decision stays open.
    reused = decision(trace_id=closed.trace_id)
    await first.audit_log.append([reused])
    clock.advance(GRACE / 2)
    young = decision()
    await first.audit_log.append([young])
    assert [await r.reconciler.reconcile() for r in replicas] == [0, 0]  # nothing is old enough yet

    clock.advance(GRACE / 2 + 1)
    stored = await asyncio.gather(first.reconciler.reconcile(), second.reconciler.reconcile())
    assert sum(stored) == 2  # lost and reused, once each, whichever replica stored them
    assert first.observer.reconciled_total + second.observer.reconciled_total == 2
    (unknown,) = await outcomes(first.engine, lost.trace_id)
    assert unknown.event_id == reconciled_event_id(lost.event_id)
    assert (unknown.kind, unknown.result, unknown.reason_codes) == (AuditEventKind.OUTCOME, UNKNOWN, (OUTCOME_LOST,))
    assert (unknown.service, unknown.principal_id, unknown.action, unknown.context_id) == (
        "memory", "key_1", "summarize", "ctx-1",
    )  # fmt: skip
    assert unknown.attributes["decision_event_id"] == lost.event_id
    shared = await outcomes(first.engine, closed.trace_id)
    assert sorted(o.attributes["decision_event_id"] for o in shared) == sorted([closed.event_id, reused.event_id])
    assert [o.result for o in await outcomes(first.engine, legacy.trace_id)] == ["SUCCEEDED"]
    assert await outcomes(first.engine, denied.trace_id) == []
    assert await outcomes(first.engine, young.trace_id) == []

    assert [await r.reconciler.reconcile() for r in replicas] == [0, 0]  # closed once and for all
    clock.advance(GRACE)
    assert await second.reconciler.reconcile() == 1  # the young one, now old
    assert [o.result for o in await outcomes(first.engine, young.trace_id)] == [UNKNOWN]
    report = await verify_chain(first.engine)
    assert report.intact, report.summary()
    assert report.verified == 11


async def test_a_decision_recorded_late_in_the_order_is_never_skipped(replicas: list[Replica], clock: Clock) -> None:
    """``recorded_at`` is stamped before the chain lock, so a later id can carry an earlier time: the reconciler
    stops at the first decision too young to judge instead of jumping over it."""
    replica = replicas[0]
    early_id_late_time, late_id_early_time = decision(), decision()
    clock.advance(10)
    await replica.audit_log.append([early_id_late_time])
    clock.advance(-10)
    await replica.audit_log.append([late_id_early_time])
    clock.advance(GRACE + 5)  # only the second one is past the grace
    assert await replica.reconciler.reconcile() == 0
    clock.advance(10)
    assert await replica.reconciler.reconcile() == 2


async def test_a_backlog_is_closed_in_bounded_batches(replicas: list[Replica], clock: Clock) -> None:
    replica = replicas[0]
    reconciler = OutcomeReconciler(
        SqlDecisionLedger(replica.engine), replica.audit_log, replica.observer,
        after_seconds=GRACE, interval_seconds=30, lookback_seconds=86_400, batch=2, max_batches=2, clock=clock,
    )  # fmt: skip
    await replica.audit_log.append([decision() for _ in range(5)])
    clock.advance(GRACE + 1)
    assert [await reconciler.reconcile() for _ in range(3)] == [4, 1, 0]


async def test_a_replica_that_starts_looks_back_only_so_far(replicas: list[Replica], clock: Clock) -> None:
    replica = replicas[0]
    forgotten = decision()
    await replica.audit_log.append([forgotten])  # occurred at T0
    clock.advance(2 * 86_400)
    recent = dataclasses.replace(decision(), occurred_at=clock.now)
    await replica.audit_log.append([recent])
    clock.advance(GRACE + 1)
    assert await replica.reconciler.reconcile() == 1
    assert [o.result for o in await outcomes(replica.engine, recent.trace_id)] == [UNKNOWN]
    assert await outcomes(replica.engine, forgotten.trace_id) == []  # older than the look-back: left alone
