"""Prometheus metrics: one registry per service instance, served on the service's own metrics port."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server


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
    # prometheus_client's own server: a small thread that keeps scrapes off the event loop.
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(port=server.server_port, _server=server, _thread=thread)
