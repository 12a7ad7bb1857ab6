"""gRPC server bootstrap shared by every service: interceptors, health, reflection, metrics, shutdown.

A service's composition root builds a ``ServiceDefinition`` (what it serves and what it depends on) and hands it
to ``GrpcApp``. ``create_server`` style: nothing binds until ``start()``, and port 0 gives a free port, so
tests run real servers on loopback.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from techno_core.health import DependencyMonitor, Probe
from techno_core.interceptors import server_interceptors
from techno_core.metrics import MetricsServer, serve_metrics
from techno_core.runner import StartupError

log = logging.getLogger(__name__)

Registration = Callable[[grpc.aio.Server], None]
Closer = Callable[[], Awaitable[None]]


@dataclass
class ServiceDefinition:
    """What one service plugs into the shared server.

    ``registrations`` add servicers to the server; ``service_names`` are their full names (for health and
    reflection); ``probes`` check the service's own dependencies; ``closers`` release its resources (channels,
    pools, the tracer provider it created) after the server has drained; ``starters`` run before the server
    accepts calls; ``reloaders`` re-read configuration on SIGHUP."""

    name: str
    registrations: Sequence[Registration]
    service_names: Sequence[str]
    probes: Sequence[tuple[str, Probe]] = ()
    starters: Sequence[Closer] = ()
    closers: Sequence[Closer] = ()
    reloaders: Sequence[Closer] = ()


@dataclass
class Endpoint:
    host: str
    port: int
    metrics_port: int


@dataclass
class GrpcApp:
    definition: ServiceDefinition
    endpoint: Endpoint
    tracer_provider: TracerProvider
    registry: CollectorRegistry
    health_interval_seconds: float = 2.0
    grace_seconds: float = 5.0
    port: int = 0
    metrics_port: int = 0
    _server: grpc.aio.Server | None = field(default=None, init=False)
    _health: HealthServicer | None = field(default=None, init=False)
    _monitor: DependencyMonitor | None = field(default=None, init=False)
    _metrics: MetricsServer | None = field(default=None, init=False)
    _stopped: bool = field(default=False, init=False)

    @property
    def address(self) -> str:
        return f"{self.endpoint.host}:{self.port}"

    async def start(self) -> None:
        for starter in self.definition.starters:
            await starter()
        try:
            self._metrics = serve_metrics(self.registry, self.endpoint.host, self.endpoint.metrics_port)
        except OSError as error:
            raise StartupError(
                f"cannot serve metrics on {self.endpoint.host}:{self.endpoint.metrics_port}: {error.strerror}"
            ) from error
        self.metrics_port = self._metrics.port
        server = grpc.aio.server(interceptors=server_interceptors(self.tracer_provider, self.registry))
        for register in self.definition.registrations:
            register(server)
        self._health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        names = list(self.definition.service_names)
        reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
        try:
            self.port = server.add_insecure_port(f"{self.endpoint.host}:{self.endpoint.port}")
        except RuntimeError as error:  # grpc reports a failed bind (port in use, bad host) this way
            raise StartupError(f"cannot listen on {self.endpoint.host}:{self.endpoint.port}: {error}") from error
        self._monitor = DependencyMonitor(
            self._health, names, self.definition.probes, interval_seconds=self.health_interval_seconds
        )
        await self._monitor.check_once()
        await server.start()
        self._server = server
        self._monitor.start()
        log.info("%s serving", self.definition.name, extra={"grpc_port": self.port, "metrics_port": self.metrics_port})

    async def stop(self) -> None:
        """Graceful shutdown: report NOT_SERVING so balancers stop sending, drain in-flight calls for up to the
        grace period, then release resources."""
        if self._stopped:
            return
        self._stopped = True
        log.info("%s stopping", self.definition.name)
        if self._monitor is not None:
            await self._monitor.stop()
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(self.grace_seconds)
            self._server = None
        for close in self.definition.closers:
            try:
                await close()
            except Exception:  # keep releasing the rest; a failed close must not hide the others
                log.exception("error while closing %s", self.definition.name)
        if self._metrics is not None:
            self._metrics.close()
        log.info("%s stopped", self.definition.name)

    async def reload(self) -> None:
        """Re-read what the service can change without a restart (SIGHUP)."""
        for reload in self.definition.reloaders:
            await reload()

    def health_status(self) -> int:
        """Current overall status (a ``HealthCheckResponse.ServingStatus`` value); for tests and diagnostics."""
        serving = self._monitor is not None and self._monitor.serving
        status: int = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        return status
