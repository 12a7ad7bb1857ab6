"""HTTP server metrics on the app's own ``CollectorRegistry``. Labels stay bounded: the route is the template
(never the raw path), unknown methods collapse into ``OTHER``.

Request durations carry a trace id exemplar (``techno_core.metrics.trace_exemplar``); ``render`` negotiates the
format like prometheus_client's own exporters, so a scraper asking for OpenMetrics gets the exemplars and anyone
else gets the classic text format."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from techno_core.metrics import trace_exemplar

UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._requests = Counter(
            "http_requests_total",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "status"],
            registry=registry,
        )
        self._duration = Histogram(
            "http_request_duration_seconds",
            "Time from receiving an HTTP request to sending its response.",
            ["method", "route"],
            registry=registry,
        )
        self.in_flight = Gauge("http_requests_in_flight", "HTTP requests being served.", registry=registry)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Call it inside the request's span (the tracing middleware wraps the app), so the exemplar is its trace."""
        method = method if method in _METHODS else "OTHER"
        self._requests.labels(method, route, str(status)).inc()
        self._duration.labels(method, route).observe(seconds, exemplar=trace_exemplar())

    def render(self, accept: str) -> tuple[bytes, str]:
        """The exposition in the format the ``Accept`` header asks for, and its content type."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self._registry), content_type
