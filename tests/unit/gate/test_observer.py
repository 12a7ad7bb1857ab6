"""The gate's decision log: a denial is an INFO line with what explains it, an allowed request only a DEBUG one
(the audit trail and the counters hold every decision); both are counted."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry

from techno_gate.adapters.observer import PrometheusDecisionObserver

FIELDS = {"principal_id": "p-1", "action": "summarize", "context_id": "c-1", "rule": "default", "profile": "basic"}


def decide(
    caplog: pytest.LogCaptureFixture, level: int, result: str, reason: str
) -> tuple[list[logging.LogRecord], float | None]:
    registry = CollectorRegistry()
    observer = PrometheusDecisionObserver(registry, "gate-0")
    with caplog.at_level(level, logger="techno_gate.decisions"):
        observer.decided(result=result, reason=reason, fields=FIELDS)
    count = registry.get_sample_value("gate_decisions_total", {"gate": "gate-0", "decision": result, "reason": reason})
    return [record for record in caplog.records if record.name == "techno_gate.decisions"], count


def test_a_denial_is_logged_at_info_with_its_reason_and_who(caplog: pytest.LogCaptureFixture) -> None:
    records, count = decide(caplog, logging.INFO, "DENY", "ACTION_NOT_ALLOWED")
    assert count == 1
    [record] = records
    assert (record.levelno, record.getMessage()) == (logging.INFO, "decision")
    assert (record.__dict__["decision"], record.__dict__["reason"]) == ("DENY", "ACTION_NOT_ALLOWED")
    assert (record.__dict__["principal_id"], record.__dict__["rule"]) == ("p-1", "default")


def test_an_allowed_request_is_counted_but_logged_only_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    records, count = decide(caplog, logging.INFO, "ALLOW", "ALLOWED")
    assert (records, count) == ([], 1)
    records, _ = decide(caplog, logging.DEBUG, "ALLOW", "ALLOWED")
    assert [(record.levelno, record.__dict__["decision"]) for record in records] == [(logging.DEBUG, "ALLOW")]


def test_a_reason_outside_the_known_ones_is_still_counted(caplog: pytest.LogCaptureFixture) -> None:
    assert decide(caplog, logging.INFO, "DENY", "SOMETHING_NEW")[1] == 1
