"""The outcome outbox: an outcome memory could not commit is answered anyway, kept, and sent again (in order,
with capped back-off) until memory acknowledges it; bounded, with what it gives up counted."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from techno_gate.application.outbox import OutcomeOutbox
from techno_gate.domain.audit import AuditKind, AuditRecord

from .fakes import FakeAudit, stored_key
from .test_process import command, gatekeeper


@dataclass
class FakeOutboxObserver:
    delivered_total: int = 0
    dropped_total: int = 0
    delivery: asyncio.Event = field(default_factory=asyncio.Event)

    def delivered(self, count: int) -> None:
        self.delivered_total += count
        self.delivery.set()

    def dropped(self, count: int) -> None:
        self.dropped_total += count


@dataclass
class OutcomesFail(FakeAudit):
    """Memory that commits decisions but refuses outcomes while ``refusing``."""

    refusing: bool = True
    refused: list[str] = field(default_factory=list)

    async def record(self, record: AuditRecord) -> None:
        if self.refusing and record.kind is AuditKind.OUTCOME:
            self.refused.append(record.event_id)
            raise ConnectionError("memory unavailable")
        await super().record(record)


def outcome(n: int) -> AuditRecord:
    return AuditRecord(
        trace_id=f"{n:032x}", kind=AuditKind.OUTCOME, principal_id="key_1", action="summarize",
        context_id="ctx", result="SUCCEEDED", reason_codes=(), attributes={}, event_id=f"outcome-{n}",
    )  # fmt: skip


async def test_an_outcome_memory_refuses_is_answered_and_kept_naming_its_decision() -> None:
    key, record = stored_key()
    audit = OutcomesFail()
    subject, observer, _, executor = gatekeeper(record, audit=audit)
    subject.outbox = outbox = OutcomeOutbox(audit, FakeOutboxObserver())
    execution = await subject.process(command(key.secret), timeout=5)
    assert execution.provider == "fake"  # the caller gets its answer
    assert len(executor.commands) == 1
    assert observer.audit_failures == ["OUTCOME"]
    assert outbox.size == 1
    (decision,) = audit.records
    audit.refusing = False
    assert await outbox.send() == (1, 0)
    assert [r.kind for r in audit.records] == [AuditKind.DECISION, AuditKind.OUTCOME]
    assert audit.records[1].attributes["decision_event_id"] == decision.event_id
    assert audit.records[1].event_id == audit.refused[0]  # the same event: memory stores it once


async def test_every_outcome_names_its_decision() -> None:
    key, record = stored_key()
    subject, _, audit, _ = gatekeeper(record)
    await subject.process(command(key.secret), timeout=5)
    decision, outcome_ = audit.records
    assert outcome_.attributes["decision_event_id"] == decision.event_id


async def test_kept_outcomes_are_sent_oldest_first_and_counted_once_delivered() -> None:
    audit, observer = OutcomesFail(), FakeOutboxObserver()
    outbox = OutcomeOutbox(audit, observer)
    for n in range(3):
        outbox.put(outcome(n))
    outbox.put(outcome(1))  # the same event again: kept once
    assert await outbox.send() == (0, 3)
    audit.refusing = False
    assert await outbox.send() == (3, 0)
    assert [r.event_id for r in audit.records] == ["outcome-0", "outcome-1", "outcome-2"]
    assert (observer.delivered_total, observer.dropped_total) == (3, 0)


async def test_when_full_the_oldest_is_dropped_and_counted() -> None:
    audit, observer = OutcomesFail(), FakeOutboxObserver()
    outbox = OutcomeOutbox(audit, observer, capacity=2)
    for n in range(5):
        outbox.put(outcome(n))
    assert outbox.size == 2
    assert observer.dropped_total == 3
    audit.refusing = False
    await outbox.send()
    assert [r.event_id for r in audit.records] == ["outcome-3", "outcome-4"]


async def test_the_background_task_retries_with_capped_back_off_until_memory_acknowledges() -> None:
    audit, observer = OutcomesFail(), FakeOutboxObserver()
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:  # no real waiting: memory comes back after six refusals
        pauses.append(seconds)
        if len(pauses) == 6:
            audit.refusing = False
        await asyncio.sleep(0)

    outbox = OutcomeOutbox(audit, observer, first_retry_seconds=0.1, max_retry_seconds=0.5, sleep=sleep)
    await outbox.start()
    try:
        outbox.put(outcome(1))
        outbox.put(outcome(2))

        async with asyncio.timeout(5):
            await observer.delivery.wait()
    finally:
        await outbox.close(within_seconds=1)
    assert pauses == [0.1, 0.2, 0.4, 0.5, 0.5, 0.5]
    assert [r.event_id for r in audit.records] == ["outcome-1", "outcome-2"]
    assert (outbox.size, observer.dropped_total) == (0, 0)


async def test_close_delivers_what_is_kept_when_memory_answers() -> None:
    audit, observer = OutcomesFail(refusing=False), FakeOutboxObserver()
    outbox = OutcomeOutbox(audit, observer)
    await outbox.start()
    outbox.put(outcome(1))
    await outbox.close(within_seconds=5)
    assert [r.event_id for r in audit.records] == ["outcome-1"]
    assert (observer.delivered_total, observer.dropped_total) == (1, 0)


async def test_close_gives_up_after_its_grace_and_counts_the_rest_as_dropped() -> None:
    audit, observer = OutcomesFail(), FakeOutboxObserver()
    now = [0.0]

    async def sleep(seconds: float) -> None:  # time passes only when the outbox waits
        now[0] += seconds
        await asyncio.sleep(0)

    outbox = OutcomeOutbox(audit, observer, sleep=sleep, clock=lambda: now[0])
    for n in range(3):
        outbox.put(outcome(n))
    await outbox.close(within_seconds=2)
    assert len(audit.refused) > 3  # it kept trying within the grace
    assert now[0] <= 2
    assert (outbox.size, observer.delivered_total, observer.dropped_total) == (0, 0, 3)
