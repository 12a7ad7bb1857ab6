"""Prometheus metrics: one registry per service instance, served on the service's own metrics port."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

# serve_forever checks for shutdown this often; prometheus_client's start_http_server uses 0.5 s, which made
# every graceful stop wait half a second.
_SHUTDOWN_POLL_SECONDS = 0.05


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
