"""Composition root of the edge: the ASGI app behind uvicorn, with an explicit start and a graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
from collections.abc import Iterator

import uvicorn
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from techno_core.runner import StartupError
from techno_core.tracing import build_tracer_provider
from techno_edge.adapters.shedding import ShedReport
from techno_edge.app import Edge, build_app
from techno_edge.entrypoints.http_protocol import JsonErrorHttpToolsProtocol
from techno_edge.entrypoints.slow_clients import (
    HEALTH_MAX_CONNECTIONS,
    Bounds,
    ConnectionGuard,
    fit_descriptor_limit,
    guarded_protocol,
)
from techno_edge.settings import EdgeSettings

_STARTUP_POLL_SECONDS = 0.005


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the process runner owns SIGTERM/SIGINT and calls ``stop()``."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _listen(host: str, port: int) -> socket.socket:
    # Bound here, not by uvicorn: a taken port raises OSError to the caller instead of uvicorn's sys.exit()
    # inside a task, and the port is known (port 0 included) before start() returns.
    try:
        return socket.create_server((host, port), reuse_port=False)
    except OSError as error:
        raise StartupError(f"cannot listen on {host}:{port}: {error.strerror}") from error


class EdgeServer:
    def __init__(
        self,
        edge: Edge,
        settings: EdgeSettings,
        tracer_provider: TracerProvider,
        shed: ShedReport,
        *,
        owns_tracer: bool,
    ):
        self.edge = edge
        self._settings = settings
        self._tracer_provider = tracer_provider
        self._owns_tracer = owns_tracer
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._guard = ConnectionGuard(
            Bounds(
                header_timeout_seconds=settings.edge_header_timeout_seconds,
                body_timeout_seconds=settings.edge_body_timeout_seconds,
                max_connections=settings.edge_max_connections,
                max_header_bytes=settings.edge_max_header_bytes,
                max_headers=settings.edge_max_headers,
            ),
            shed,
        )
        self.port = 0
        self.health_port = 0

    @property
    def url(self) -> str:
        scheme = "https" if self._settings.edge_tls_cert_file else "http"
        return f"{scheme}://{self._settings.edge_host}:{self.port}"

    def open_connections(self) -> int:
        """Client connections open on both listeners."""
        return self._guard.open_connections()

    async def start(self) -> None:
        fit_descriptor_limit(self._settings.edge_max_connections + HEALTH_MAX_CONNECTIONS)
        await self.edge.start()
        sock = _listen(self._settings.edge_host, self._settings.edge_port)
        try:
            health_sock = _listen(self._settings.edge_host, self._settings.health_port)
        except StartupError:
            sock.close()
            raise
        self._guard.health_port = health_sock.getsockname()[1]
        config = uvicorn.Config(
            self.edge,
            # httptools, with header/body deadlines, header limits and connection budgets (see slow_clients).
            # The slow-client bounds on top of the JSON answer to requests uvicorn cannot parse.
            http=guarded_protocol(self._guard, JsonErrorHttpToolsProtocol),
            ws="none",
            lifespan="off",  # the Edge object is started and closed here, explicitly
            loop="none",  # the loop is the running one: uvloop, which techno_core.runner runs every service on
            log_config=None,  # logging is techno_core's JSON set-up
            access_log=False,  # metrics and traces cover requests; a log line each would cost throughput
            # X-Forwarded-* from a client is not to be trusted by default; a deployment behind a proxy that
            # sets them can add its own middleware. Also saves a layer on every request.
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=math.ceil(self._settings.shutdown_grace_seconds),
            # Annotated int in uvicorn, used as a float (loop.call_later).
            timeout_keep_alive=self._settings.edge_keep_alive_timeout_seconds,  # type: ignore[arg-type]
            ssl_certfile=self._settings.edge_tls_cert_file or None,
            ssl_keyfile=self._settings.edge_tls_key_file or None,
        )
        self._server = _Server(config)
        self._task = asyncio.get_running_loop().create_task(
            self._server.serve(sockets=[sock, health_sock]), name="edge-http"
        )
        while not self._server.started:  # uvicorn has no start-up event to await; wait on its flag
            if self._task.done():
                self._task.result()  # raises the start-up error
                raise RuntimeError("uvicorn stopped during start-up")
            await asyncio.sleep(_STARTUP_POLL_SECONDS)
        self.port = sock.getsockname()[1]
        self.health_port = self._guard.health_port

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (up to the grace period), then close the channels and,
        if it was created here, the tracer provider (which flushes its spans)."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        self._guard.report.close()  # logs what was shed since its last line
        await self.edge.close()
        if self._owns_tracer:
            self._tracer_provider.shutdown()


async def bootstrap(
    settings: EdgeSettings,
    *,
    tracer_provider: TracerProvider | None = None,
    registry: CollectorRegistry | None = None,
) -> EdgeServer:
    owns_tracer = tracer_provider is None
    tracer = tracer_provider or build_tracer_provider("edge", f"{socket.gethostname()}-{os.getpid()}", settings)
    registry = registry or CollectorRegistry()
    edge = build_app(settings, tracer_provider=tracer, registry=registry)
    return EdgeServer(edge, settings, tracer, ShedReport(registry), owns_tracer=owns_tracer)
