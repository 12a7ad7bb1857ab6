"""Decision metrics and the canonical decision log line.

A denial is logged at INFO: it is what an operator looks for (who was refused, by which rule, why). An allowed
request is logged at DEBUG: at INFO its ~650-byte line per request cost a few per cent of the gate's CPU under
load and repeated what the audit trail (the record of every decision) and ``gate_decisions_total`` hold.
``TECHNO_LOG_LEVEL=DEBUG`` brings the allowed ones back."""

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
        self._limit_rejections = Counter(
            "gate_rate_limit_rejections_total",
            "Requests refused by a limit, by which one.",
            ["limit"],
            registry=registry,
        )
        self._limit_store_failures = Counter(
            "gate_limit_store_failures_total",
            "Limit checks that could not reach the limit store, by what was done.",
            ["action"],
            registry=registry,
        )
        self._reloads = Counter(
            "gate_policy_reloads_total",
            "Policy reloads, by result (an invalid file keeps the last good policy).",
            ["result"],
            registry=registry,
        )
        self._idempotent = Counter(
            "gate_idempotent_requests_total",
            "Requests sent with an Idempotency-Key, by outcome (executed|replayed|conflict|mismatch|unknown).",
            ["outcome"],
            registry=registry,
        )
        for outcome in ("executed", "replayed", "conflict", "mismatch"):
            self._idempotent.labels(outcome)
        for name in ("key", "profile", "concurrency"):
            self._limit_rejections.labels(name)
        for result in ("success", "failure"):
            self._reloads.labels(result)
        # Exposed as zeros, so rate() and absent() behave from the first scrape, and kept: one labels() lookup
        # less per request.
        self._decision_children: dict[tuple[str, str], Any] = {}
        for reason in Reason:
            result = "ALLOW" if reason == Reason.ALLOWED else "DENY"
            self._decision_children[(result, reason.value)] = self._decisions.labels(gate_id, result, reason.value)

    def decided(self, *, result: str, reason: str, fields: dict[str, Any]) -> None:
        child = self._decision_children.get((result, reason))
        (child or self._decisions.labels(self._gate_id, result, reason)).inc()
        level = logging.DEBUG if result == "ALLOW" else logging.INFO
        if log.isEnabledFor(level):  # skip building the record's fields when the line is not written
            log.log(level, "decision", extra={"decision": result, "reason": reason, **fields})

    def audit_failed(self, kind: str) -> None:
        self._audit_failures.labels(kind).inc()

    def rejected(self, scope: str) -> None:
        self._limit_rejections.labels(scope).inc()

    def store_unavailable(self, allowed: bool) -> None:
        self._limit_store_failures.labels("allowed" if allowed else "denied").inc()

    def idempotent(self, outcome: str) -> None:
        self._idempotent.labels(outcome).inc()

    def policy_reloaded(self, ok: bool) -> None:
        self._reloads.labels("success" if ok else "failure").inc()
