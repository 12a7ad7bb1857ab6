"""Circuit-breaker transitions into the audit trail (memory's ``AppendAuditEvents``), fire-and-forget.

A transition is audited with the trace id of the request (or admin command) that caused it: the breaker calls
its listeners synchronously on that request's task, and the write task copies its context. Writes are grouped
by ``techno_core.batching.CoalescingBatcher`` (one RPC for the transitions that pile up while one is in flight).

From the breaker's point of view the write never fails and never waits: ``transition`` only schedules it. A
failed or timed-out write is logged and counted (``executor_audit_writes_total{result="failed"}``); when too
many writes are pending (memory down or slow) new ones are dropped and counted (``result="dropped"``).

Events are of kind ``AUDIT_EVENT_KIND_BREAKER`` with ``service="executor"``, ``action="circuit_breaker"``, the
provider as ``context_id`` and ``result`` one of CIRCUIT_OPENED / CIRCUIT_CLOSED / CIRCUIT_HALF_OPEN /
CIRCUIT_FORCED_OPEN / CIRCUIT_FORCED_CLOSED; ``attributes`` carry provider, from/to state and the executor id,
and ``requested_by`` (the admin principal, see ``REQUESTED_BY``) when an operator's command caused it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import secrets
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import grpc
from google.protobuf import struct_pb2, timestamp_pb2
from opentelemetry import trace
from prometheus_client import CollectorRegistry, Counter

from techno.memory.v1 import memory_pb2, memory_pb2_grpc
from techno_core.batching import CoalescingBatcher
from techno_executor.domain.breaker import CircuitState

log = logging.getLogger(__name__)

RESULTS = {
    CircuitState.OPEN: "CIRCUIT_OPENED",
    CircuitState.CLOSED: "CIRCUIT_CLOSED",
    CircuitState.HALF_OPEN: "CIRCUIT_HALF_OPEN",
    CircuitState.FORCED_OPEN: "CIRCUIT_FORCED_OPEN",
    CircuitState.FORCED_CLOSED: "CIRCUIT_FORCED_CLOSED",
}
SERVICE = "executor"
ACTION = "circuit_breaker"
# The principal of the operator command running on this task ("" for transitions caused by calls): set by the
# admin entry point around the command, read when the breaker reports the transition it made.
REQUESTED_BY: contextvars.ContextVar[str] = contextvars.ContextVar("requested_by", default="")


def _current_trace_id() -> tuple[str, bool]:
    """The current trace id, or a fresh one (memory requires a valid id) when there is no trace; the flag says
    whether it came from a real trace."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        return format(context.trace_id, "032x"), True
    return secrets.token_hex(16), False


class BreakerAuditWriter:
    """A ``StateListener`` (``transition``) writing each transition as an ``AuditEvent`` to memory."""

    def __init__(
        self,
        stub: memory_pb2_grpc.MemoryServiceStub,
        *,
        executor_id: str,
        registry: CollectorRegistry,
        timeout_seconds: float = 5.0,
        max_pending: int = 1000,
        kind: memory_pb2.AuditEventKind = memory_pb2.AUDIT_EVENT_KIND_BREAKER,
    ) -> None:
        self._stub = stub
        self._executor_id = executor_id
        self._timeout = timeout_seconds
        self._max_pending = max_pending
        self._kind = kind
        self._pending: set[asyncio.Task[None]] = set()
        self._batcher: CoalescingBatcher[memory_pb2.AuditEvent, None] = CoalescingBatcher(self._append)
        self._writes = Counter(
            "executor_audit_writes_total",
            "Circuit-breaker transitions sent to the audit trail, by result (written|failed|dropped).",
            ["result"],
            registry=registry,
        )

    def event(self, provider: str, old: CircuitState, new: CircuitState) -> memory_pb2.AuditEvent:
        trace_id, traced = _current_trace_id()
        occurred_at = timestamp_pb2.Timestamp()
        occurred_at.FromDatetime(datetime.now(UTC))
        attributes = struct_pb2.Struct()
        attributes.update(
            {
                "provider": provider,
                "from_state": old.value,
                "to_state": new.value,
                "executor_id": self._executor_id,
                "traced": traced,
            }
        )
        if requested_by := REQUESTED_BY.get():
            attributes.update({"requested_by": requested_by})
        return memory_pb2.AuditEvent(
            event_id=str(uuid.uuid4()),
            trace_id=trace_id,
            kind=self._kind,
            occurred_at=occurred_at,
            service=SERVICE,
            action=ACTION,
            context_id=provider,
            result=RESULTS[new],
            reason_codes=[f"FROM_{old.name}"],
            attributes=attributes,
        )

    def transition(self, provider: str, old: CircuitState, new: CircuitState) -> None:
        """Schedule the write and return at once (the listener of every breaker)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            log.warning("breaker transition not audited: no event loop", extra={"provider": provider})
            self._writes.labels(result="dropped").inc()
            return
        if len(self._pending) >= self._max_pending:
            log.warning("breaker transition not audited: too many writes pending", extra={"provider": provider})
            self._writes.labels(result="dropped").inc()
            return
        # The task copies the current context: the write (and its client span) belong to the causing trace.
        task = loop.create_task(self._write(self.event(provider, old, new)), name="breaker-audit")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _write(self, event: memory_pb2.AuditEvent) -> None:
        try:
            await asyncio.wait_for(self._batcher.submit(event), self._timeout)
        except Exception as error:
            self._writes.labels(result="failed").inc()
            code = error.code().name if isinstance(error, grpc.aio.AioRpcError) else type(error).__name__
            log.warning(
                "breaker transition not audited: %s",
                code,
                extra={"event": "audit_write_failed", "provider": event.context_id, "error": code},
            )
            return
        self._writes.labels(result="written").inc()

    async def _append(self, events: Sequence[memory_pb2.AuditEvent]) -> list[None]:
        request = memory_pb2.AppendAuditEventsRequest(events=events)
        await self._stub.AppendAuditEvents(request, timeout=self._timeout)
        return [None] * len(events)

    async def drain(self) -> None:
        """Wait for the writes scheduled so far (each is bounded by the timeout)."""
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def close(self) -> None:
        await self.drain()
        await self._batcher.close()
