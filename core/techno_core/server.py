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

from techno_core.authorization import Authorization, CallerTable
from techno_core.channels import MAX_MESSAGE_BYTES
from techno_core.health import LIVENESS, READINESS, DependencyMonitor, Probe
from techno_core.interceptors import server_interceptors
from techno_core.metrics import MetricsServer, serve_metrics
from techno_core.runner import StartupError
from techno_core.settings import GrpcServerSettings
from techno_core.transport import Transport

log = logging.getLogger(__name__)

# How many calls may wait in grpc-core for the application to pick them up (grpc.aio takes them one at a time on
# its event loop, so a burst on a busy loop waits there). By default grpc-core cancels new calls at random once
# 1,000 wait and all of them past 3,000: the caller sees CANCELLED that neither side asked for (10 % of 2,000
# concurrent calls, issue #12). Shedding load is the edge's decision, answered with a reason (its connection
# budget, 1,000 per replica by default; the gate's limits); these bounds stay far above what it lets in, and
# calls still wait no longer than their deadline.
MAX_PENDING_CALLS = 10_000
PENDING_CALL_BOUNDS: list[tuple[str, int]] = [
    ("grpc.server.max_pending_requests", MAX_PENDING_CALLS),
    ("grpc.server.max_pending_requests_hard_limit", 2 * MAX_PENDING_CALLS),
]

Registration = Callable[[grpc.aio.Server], None]
Closer = Callable[[], Awaitable[None]]


@dataclass
class ServiceDefinition:
    """What one service plugs into the shared server.

    ``registrations`` add servicers to the server; ``service_names`` are their full names (for health and
    reflection); ``probes`` check the service's own dependencies; ``closers`` release its resources (channels,
    pools, the tracer provider it created) after the server has drained; ``starters`` run before the server
    accepts calls; ``reloaders`` re-read configuration on SIGHUP; ``callers`` is the authorization table (which
    peer identity may call which method), enforced whenever the transport is mutual TLS."""

    name: str
    registrations: Sequence[Registration]
    service_names: Sequence[str]
    callers: CallerTable
    probes: Sequence[tuple[str, Probe]] = ()
    starters: Sequence[Closer] = ()
    closers: Sequence[Closer] = ()
    reloaders: Sequence[Closer] = ()


@dataclass
class Endpoint:
    """Where a service listens: its gRPC port (mutual TLS), its Prometheus port, and a plaintext port that serves
    only gRPC health, for Kubernetes' native gRPC probes (which cannot present a certificate) and container
    healthchecks. Health says nothing secret: `liveness`, `readiness` and the service names' status."""

    host: str
    port: int
    metrics_port: int
    health_port: int = 0


@dataclass(frozen=True)
class ServerOptions:
    """Transport and connection management shared by every gRPC server."""

    transport: Transport
    reflection: bool = False
    max_connection_age_seconds: float = 30.0
    # Calls still running when a connection reaches its age may finish within this, past it they are cancelled;
    # above the longest call (the gate's executor ceiling is 60 s).
    max_connection_age_grace_seconds: float = 90.0

    def grpc_options(self) -> list[tuple[str, int]]:
        return [
            ("grpc.max_connection_age_ms", int(self.max_connection_age_seconds * 1000)),
            ("grpc.max_connection_age_grace_ms", int(self.max_connection_age_grace_seconds * 1000)),
            # Clients ping every 30 s while calls are open (channels.py); accept that without a GOAWAY.
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            *PENDING_CALL_BOUNDS,
        ]


def server_options(settings: GrpcServerSettings, transport: Transport) -> ServerOptions:
    return ServerOptions(
        transport,
        reflection=settings.grpc_reflection,
        max_connection_age_seconds=settings.grpc_max_connection_age_seconds,
    )


@dataclass
class GrpcApp:
    definition: ServiceDefinition
    endpoint: Endpoint
    tracer_provider: TracerProvider
    registry: CollectorRegistry
    options: ServerOptions
    health_interval_seconds: float = 2.0
    grace_seconds: float = 5.0
    port: int = 0
    metrics_port: int = 0
    health_port: int = 0
    _server: grpc.aio.Server | None = field(default=None, init=False)
    _health_server: grpc.aio.Server | None = field(default=None, init=False)
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
        server = self._grpc_server()
        for register in self.definition.registrations:
            register(server)
        self._health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        names = list(self.definition.service_names)
        if self.options.reflection:
            reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
        credentials = self.options.transport.server_credentials()
        self.port = self._bind(server, self.endpoint.port, credentials)
        self._health_server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._health_server)
        self.health_port = self._bind(self._health_server, self.endpoint.health_port, None)
        await self._health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        self._monitor = DependencyMonitor(
            self._health, [READINESS, *names], self.definition.probes, interval_seconds=self.health_interval_seconds
        )
        await self._monitor.check_once()
        await self._health_server.start()
        await server.start()
        self._server = server
        await self._monitor.start()
        log.info(
            "%s serving",
            self.definition.name,
            extra={
                "grpc_port": self.port,
                "metrics_port": self.metrics_port,
                "health_port": self.health_port,
                "mutual_tls": self.options.transport.secure,
            },
        )

    def _grpc_server(self) -> grpc.aio.Server:
        authorization = Authorization(self.definition.callers, self.registry) if self.options.transport.secure else None
        return grpc.aio.server(
            interceptors=server_interceptors(self.tracer_provider, self.registry, authorization),
            options=self.options.grpc_options(),
        )

    def _bind(self, server: grpc.aio.Server, port: int, credentials: grpc.ServerCredentials | None) -> int:
        address = f"{self.endpoint.host}:{port}"
        try:
            if credentials is None:
                return server.add_insecure_port(address)
            return server.add_secure_port(address, credentials)
        except RuntimeError as error:  # grpc reports a failed bind (port in use, bad host) this way
            raise StartupError(f"cannot listen on {address}: {error}") from error

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
        if self._health_server is not None:
            await self._health_server.stop(None)
            self._health_server = None
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
