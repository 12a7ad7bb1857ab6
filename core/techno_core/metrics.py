"""Prometheus metrics: one registry per service instance, served on the service's own metrics port.

Latency histograms carry exemplars: each bucket remembers the trace id of its latest sampled observation
(``trace_exemplar``), so a dashboard can jump from a slow bucket to a trace. Exemplars travel only in the
OpenMetrics format, which ``make_wsgi_app`` serves to scrapers that ask for it (``Accept:
application/openmetrics-text``, as Prometheus does); the classic text format leaves them out.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from opentelemetry import trace
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

# serve_forever checks for shutdown this often; prometheus_client's start_http_server uses 0.5 s, which made
# every graceful stop wait half a second.
_SHUTDOWN_POLL_SECONDS = 0.05


def trace_exemplar() -> dict[str, str] | None:
    """The exemplar linking an observation to the current span's trace, ``{"trace_id": <32 hex>}``, or None when
    there is no valid, sampled span (an unsampled trace id leads nowhere). Call it where the request's span is
    still current, i.e. where the duration is observed, and pass it as ``observe(..., exemplar=...)``."""
    context = trace.get_current_span().get_span_context()
    if not (context.is_valid and context.trace_flags.sampled):
        return None
    return {"trace_id": format(context.trace_id, "032x")}


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes are not worth a log line each
        return


@dataclass
class MetricsServer:
    """The HTTP server exposing ``/metrics``; ``port`` is the bound one (useful when asked for port 0)."""

    port: int
    _server: WSGIServer
    _thread: threading.Thread

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> MetricsServer:
    # A small thread of its own keeps scrapes off the event loop.
    server = make_server(host, port, make_wsgi_app(registry), ThreadingWSGIServer, handler_class=_QuietHandler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": _SHUTDOWN_POLL_SECONDS}, daemon=True, name="metrics"
    )
    thread.start()
    return MetricsServer(port=server.server_port, _server=server, _thread=thread)
