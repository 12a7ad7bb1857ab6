"""Decision metrics and the canonical decision log line."""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from techno_gate.domain.reasons import Reason

log = logging.getLogger("techno_gate.decisions")


class PrometheusDecisionObserver:
    def __init__(self, registry: CollectorRegistry, gate_id: str) -> None:
        self._gate_id = gate_id
        # reason is bounded: it is always a Reason member.
        self._decisions = Counter(
            "gate_decisions_total",
            "Gate decisions, by outcome and reason.",
            ["gate", "decision", "reason"],
            registry=registry,
        )
        self._audit_failures = Counter(
            "gate_audit_write_failures_total",
            "Audit records the gate could not commit, by kind.",
            ["kind"],
            registry=registry,
        )
        for reason in Reason:  # expose zeros, so rate() and absent() behave from the first scrape
            self._decisions.labels(gate_id, "DENY" if reason != Reason.ALLOWED else "ALLOW", reason.value)

    def decided(self, *, result: str, reason: str, fields: dict[str, Any]) -> None:
        self._decisions.labels(self._gate_id, result, reason).inc()
        log.info("decision", extra={"decision": result, "reason": reason, **fields})

    def audit_failed(self, kind: str) -> None:
        self._audit_failures.labels(kind).inc()
