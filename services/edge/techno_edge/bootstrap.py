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
from techno_edge.app import Edge, build_app
from techno_edge.settings import EdgeSettings

_STARTUP_POLL_SECONDS = 0.005


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the process runner owns SIGTERM/SIGINT and calls ``stop()``."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class EdgeServer:
    def __init__(self, edge: Edge, settings: EdgeSettings, tracer_provider: TracerProvider, *, owns_tracer: bool):
        self.edge = edge
        self._settings = settings
        self._tracer_provider = tracer_provider
        self._owns_tracer = owns_tracer
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        scheme = "https" if self._settings.edge_tls_cert_file else "http"
        return f"{scheme}://{self._settings.edge_host}:{self.port}"

    async def start(self) -> None:
        await self.edge.start()
        # Bound here, not by uvicorn: a taken port raises OSError to the caller instead of uvicorn's sys.exit()
        # inside a task, and the port is known (port 0 included) before start() returns.
        address = (self._settings.edge_host, self._settings.edge_port)
        try:
            sock = socket.create_server(address, reuse_port=False)
        except OSError as error:
            raise StartupError(f"cannot listen on {address[0]}:{address[1]}: {error.strerror}") from error
        config = uvicorn.Config(
            self.edge,
            http="httptools",
            ws="none",
            lifespan="off",  # the Edge object is started and closed here, explicitly
            loop="none",  # the loop is the running one; __main__ chose it (see there)
            log_config=None,  # logging is techno_core's JSON set-up
            access_log=False,  # metrics and traces cover requests; a log line each would cost throughput
            # X-Forwarded-* from a client is not to be trusted by default; a deployment behind a proxy that
            # sets them can add its own middleware. Also saves a layer on every request.
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=math.ceil(self._settings.shutdown_grace_seconds),
            ssl_certfile=self._settings.edge_tls_cert_file or None,
            ssl_keyfile=self._settings.edge_tls_key_file or None,
        )
        self._server = _Server(config)
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]), name="edge-http")
        while not self._server.started:  # uvicorn has no start-up event to await; wait on its flag
            if self._task.done():
                self._task.result()  # raises the start-up error
                raise RuntimeError("uvicorn stopped during start-up")
            await asyncio.sleep(_STARTUP_POLL_SECONDS)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (up to the grace period), then close the channels and,
        if it was created here, the tracer provider (which flushes its spans)."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
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
    edge = build_app(settings, tracer_provider=tracer, registry=registry or CollectorRegistry())
    return EdgeServer(edge, settings, tracer, owns_tracer=owns_tracer)
