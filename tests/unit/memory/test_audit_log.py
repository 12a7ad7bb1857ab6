"""Group commit of audit appends, over a fake store."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from techno_core.errors import InvalidArgument, Unavailable
from techno_memory.application.audit_log import AuditLog
from techno_memory.domain.audit_query import AuditFilter
from techno_memory.domain.records import AuditEvent, AuditEventKind

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def event(event_id: str) -> AuditEvent:
    return AuditEvent(event_id, TRACE_ID, AuditEventKind.DECISION, datetime(2025, 1, 1, tzinfo=UTC), "gate")


class FakeStore:
    """Records each transaction; the first one waits for ``release`` so later appends pile up behind it."""

    def __init__(self) -> None:
        self.transactions: list[list[str]] = []
        self.stored: set[str] = set()
        self.first_started = asyncio.Event()
        self.release = asyncio.Event()
        self.failure: Exception | None = None

    async def store_events(self, events: Sequence[AuditEvent]) -> list[bool]:
        self.transactions.append([e.event_id for e in events])
        self.first_started.set()
        await self.release.wait()
        if self.failure is not None:
            raise self.failure
        flags = []
        for e in events:
            flags.append(e.event_id not in self.stored)
            self.stored.add(e.event_id)
        return flags

    async def audit_trail(self, trace_id: str) -> list[AuditEvent]:
        return []

    async def list_events(
        self, filters: AuditFilter, *, after_id: int | None, limit: int
    ) -> list[tuple[int, AuditEvent]]:
        return []


class Observer:
    def __init__(self) -> None:
        self.committed_batches: list[tuple[int, int]] = []
        self.failed_batches: list[int] = []

    def committed(self, batch_size: int, appended: int) -> None:
        self.committed_batches.append((batch_size, appended))

    def failed(self, batch_size: int) -> None:
        self.failed_batches.append(batch_size)


async def test_appends_arriving_during_a_commit_share_the_next_transaction() -> None:
    store, observer = FakeStore(), Observer()
    log = AuditLog(store, observer, max_batch=512)
    first = asyncio.create_task(log.append([event("a")]))
    await store.first_started.wait()
    rest = [asyncio.create_task(log.append([event(f"b{n}"), event(f"c{n}")])) for n in range(50)]
    store.release.set()
    assert await first == 1
    assert await asyncio.gather(*rest) == [2] * 50
    # Without group commit: one transaction per event (101). The 100 queued behind the first share few.
    assert len(store.transactions) < 10
    assert sum(size for size, _ in observer.committed_batches) == 101
    assert sum(appended for _, appended in observer.committed_batches) == 101
    await log.close()


async def test_max_batch_bounds_the_events_per_transaction() -> None:
    store = FakeStore()
    store.release.set()
    log = AuditLog(store, Observer(), max_batch=3)
    assert await log.append([event(str(n)) for n in range(7)]) == 7
    assert all(len(transaction) <= 3 for transaction in store.transactions)
    assert [e for t in store.transactions for e in t] == [str(n) for n in range(7)]  # order is kept
    await log.close()


async def test_repeats_are_acknowledged_but_not_counted() -> None:
    store = FakeStore()
    store.release.set()
    log = AuditLog(store, Observer(), max_batch=512)
    assert await log.append([event("a")]) == 1
    assert await log.append([event("a"), event("b")]) == 1
    await log.close()


async def test_a_failed_transaction_fails_every_append_in_it() -> None:
    store, observer = FakeStore(), Observer()
    store.failure = Unavailable(reason="DATABASE_UNAVAILABLE", message="down")
    store.release.set()
    log = AuditLog(store, observer, max_batch=512)
    with pytest.raises(Unavailable):
        await log.append([event("a"), event("b")])
    assert observer.failed_batches
    assert not observer.committed_batches
    await log.close()


async def test_invalid_events_never_reach_the_store() -> None:
    store = FakeStore()
    log = AuditLog(store, Observer(), max_batch=512)
    with pytest.raises(InvalidArgument):
        await log.append([event("")])
    with pytest.raises(InvalidArgument):
        await log.trail("not-a-trace-id")
    assert not store.transactions
    await log.close()
