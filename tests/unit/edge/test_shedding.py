"""ShedReport: every shed is counted; the log has one line per kind and window, and its counts add up."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys

import pytest
from prometheus_client import CollectorRegistry

from techno_edge.adapters.shedding import REASONS, ShedReport

SHED = "edge_connections_shed_total"


class _Signal(logging.Handler):
    def __init__(self, event: asyncio.Event) -> None:
        super().__init__()
        self._event = event

    def emit(self, record: logging.LogRecord) -> None:
        self._event.set()


def lines(caplog: pytest.LogCaptureFixture, reason: str) -> list[int]:
    return [getattr(r, "shed_count", 0) for r in caplog.records if getattr(r, "shed_reason", None) == reason]


async def test_a_burst_is_logged_once_then_summed_per_window(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    registry = CollectorRegistry()
    report = ShedReport(registry, interval_seconds=0.05)
    assert all(registry.get_sample_value(SHED, {"reason": r}) == 0 for r in REASONS)  # exported before any shed

    for _ in range(1000):
        report.shed("header_timeout")
    report.shed("too_many_headers")
    assert lines(caplog, "header_timeout") == [1]  # the first at once, the rest wait for the window's end
    assert lines(caplog, "too_many_headers") == [1]  # kinds are reported apart

    logged = asyncio.Event()
    signal = _Signal(logged)
    logging.getLogger("techno_edge.adapters.shedding").addHandler(signal)
    try:
        await asyncio.wait_for(logged.wait(), 5)  # the window ends: the rest of the burst in one line
    finally:
        logging.getLogger("techno_edge.adapters.shedding").removeHandler(signal)
    assert lines(caplog, "header_timeout") == [1, 999]
    report.shed("header_timeout")
    report.close()  # what is pending at close is logged too
    assert lines(caplog, "header_timeout") == [1, 999, 1]
    assert registry.get_sample_value(SHED, {"reason": "header_timeout"}) == 1001


def test_the_descriptor_limit_is_raised_to_fit_the_connections() -> None:
    """In a child process, whose limit it changes: soft 256, hard kept, room for 1000 connections made."""
    code = (
        "import resource\n"
        "from techno_edge.entrypoints.slow_clients import RESERVED_DESCRIPTORS, fit_descriptor_limit\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "fit_descriptor_limit(1000)\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0] - RESERVED_DESCRIPTORS)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert int(result.stdout) == 1000
