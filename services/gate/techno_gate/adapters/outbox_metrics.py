"""Prometheus metrics of the outcome outbox (``techno_gate.application.outbox``)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge


class OutboxMetrics:
    """Implements ``OutboxObserver``; ``gate_outbox_events`` reads the outbox's size when scraped."""

    def __init__(self, registry: CollectorRegistry, size: Callable[[], int]) -> None:
        Gauge(
            "gate_outbox_events",
            "Outcomes kept by the gate because memory could not commit them yet; sent again until it does.",
            registry=registry,
        ).set_function(size)
        self._delivered = Counter(
            "gate_outbox_delivered_total",
            "Outcomes the outbox delivered to memory after their first write failed.",
            registry=registry,
        )
        self._dropped = Counter(
            "gate_outbox_dropped_total",
            "Outcomes the outbox gave up (full, or not delivered within the shutdown grace); memory's reconciler "
            "closes their decisions as UNKNOWN.",
            registry=registry,
        )

    def delivered(self, count: int) -> None:
        self._delivered.inc(count)

    def dropped(self, count: int) -> None:
        self._dropped.inc(count)
