"""Appending to the audit trail with group commit.

Each event is one item of a ``CoalescingBatcher``: events that arrive while a transaction is being committed
(from any number of concurrent RPCs) are written together by the next one, so under load the database sees few
large transactions instead of one per call, and an idle service still commits at once. An append returns only
after every one of its events is committed.

Events are batched one by one (not one RPC's list as a unit) so ``max_batch`` bounds the events per
transaction exactly. A large request may therefore be split over two transactions; if the second fails the
call fails and the writer retries it whole, which is safe because a stored event_id is never stored again.
"""

from __future__ import annotations

from collections.abc import Sequence

from techno_core.batching import CoalescingBatcher
from techno_memory.application.ports import AppendObserver, AuditStore
from techno_memory.domain.audit_query import AuditPage, AuditQuery, encode_page_token, page_request
from techno_memory.domain.records import AuditEvent
from techno_memory.domain.validation import validate_events, validate_trace_id


class AuditLog:
    def __init__(self, store: AuditStore, observer: AppendObserver, *, max_batch: int) -> None:
        self._store = store
        self._observer = observer
        self._batcher: CoalescingBatcher[AuditEvent, bool] = CoalescingBatcher(self._commit, max_batch=max_batch)

    async def append(self, events: Sequence[AuditEvent]) -> int:
        """Durably append ``events``; returns how many were newly stored (repeats of a stored id are not)."""
        validate_events(events)  # the use case does not rely on its entry point having checked
        if len(events) == 1:  # the common call from a caller that is not busy: no gather
            return int(await self._batcher.submit(events[0]))
        return sum(await self._batcher.submit_many(events))

    async def trail(self, trace_id: str) -> list[AuditEvent]:
        validate_trace_id(trace_id)
        return await self._store.audit_trail(trace_id)

    async def query(self, query: AuditQuery) -> AuditPage:
        """One page of the events matching ``query``'s filters, in append order (see ``domain.audit_query``)."""
        page = page_request(query)
        # One more than the page: whether it comes back says whether there is a next page.
        rows = await self._store.list_events(page.filters, after_id=page.after_id, limit=page.limit + 1)
        if len(rows) <= page.limit:
            return AuditPage(tuple(event for _, event in rows))
        kept = rows[: page.limit]
        return AuditPage(tuple(event for _, event in kept), encode_page_token(kept[-1][0], page.filters))

    async def close(self) -> None:
        """Commit what is pending, then refuse further appends (called after the server has drained)."""
        await self._batcher.close()

    async def _commit(self, events: Sequence[AuditEvent]) -> list[bool]:
        try:
            stored = await self._store.store_events(events)
        except Exception:
            self._observer.failed(len(events))
            raise
        self._observer.committed(len(events), sum(stored))
        return stored
