"""Which allowed decisions were never closed by an outcome, and the outcome that closes one as ``UNKNOWN``.

The gate writes a request's OUTCOME after its DECISION (``ALLOW``); the outcome names its decision
(``attributes.decision_event_id``). When that write is lost (the gate died between executing and recording, or with
outcomes still in its outbox) the decision stays open, and nobody can say whether the action ran: the reconciler
closes it with ``result`` ``UNKNOWN`` and reason ``OUTCOME_LOST``, so every allowed decision has an outcome.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime

from techno_memory.domain.records import AuditEvent, AuditEventKind

UNKNOWN = "UNKNOWN"
OUTCOME_LOST = "OUTCOME_LOST"
DECISION_EVENT_ID = "decision_event_id"
# Fixed for ever: a reconciled outcome's event id derives from its decision's, the same in every replica, so two
# replicas closing one decision store one event (memory stores an event id once).
_NAMESPACE = uuid.UUID("6f0a6f4e-3c1d-5b7e-9a51-0c7e5d1f2a90")


def open_decisions(decisions: Sequence[AuditEvent], outcomes: Iterable[AuditEvent]) -> list[AuditEvent]:
    """The ``decisions`` no outcome closes. An outcome closes the decision it names; one naming none (written
    before outcomes named their decision) closes every decision of its trace."""
    named: set[str] = set()
    anonymous_traces: set[str] = set()
    for outcome in outcomes:
        decision_id = outcome.attributes.get(DECISION_EVENT_ID)
        if isinstance(decision_id, str) and decision_id:
            named.add(decision_id)
        else:
            anonymous_traces.add(outcome.trace_id)
    return [d for d in decisions if d.event_id not in named and d.trace_id not in anonymous_traces]


def reconciled_event_id(decision_event_id: str) -> str:
    return f"reconcile:{uuid.uuid5(_NAMESPACE, decision_event_id)}"


def unknown_outcome(decision: AuditEvent, *, now: datetime, after_seconds: float) -> AuditEvent:
    """The OUTCOME that closes ``decision``: whether its action ran is not known."""
    if decision.kind is not AuditEventKind.DECISION:
        raise ValueError("only a decision is closed by an outcome")
    return AuditEvent(
        event_id=reconciled_event_id(decision.event_id),
        trace_id=decision.trace_id,
        kind=AuditEventKind.OUTCOME,
        occurred_at=now,
        service="memory",
        principal_id=decision.principal_id,
        action=decision.action,
        context_id=decision.context_id,
        result=UNKNOWN,
        reason_codes=(OUTCOME_LOST,),
        attributes={
            DECISION_EVENT_ID: decision.event_id,
            "message": f"no outcome was recorded within {after_seconds:g} s of the decision; whether the action "
            "ran is not known",
        },
    )
