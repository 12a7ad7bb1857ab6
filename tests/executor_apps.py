"""A real gRPC app, built as the services build theirs, serving a test's stand-in for the executor: mutual TLS with
the executor's development certificate, no exporter configured, and the gate alone allowed to call ``methods``."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry

from techno.executor.v1 import executor_pb2_grpc
from techno_core.authorization import callers
from techno_core.identity import Identity
from techno_core.server import Endpoint, GrpcApp, ServerOptions, ServiceDefinition
from techno_core.settings import TechnoSettings
from techno_core.tracing import build_tracer_provider
from techno_core.transport import Transport
from tests.tls import certificate_files

SERVICE = "techno.executor.v1.ExecutorService"


def executor_app(
    servicer: executor_pb2_grpc.ExecutorServiceServicer, name: str, methods: Iterable[str] = ("Execute",)
) -> GrpcApp:
    """The app, not started, on a free loopback port (``address`` once started)."""
    definition = ServiceDefinition(
        name=name,
        registrations=[lambda server: executor_pb2_grpc.add_ExecutorServiceServicer_to_server(servicer, server)],
        service_names=[SERVICE],
        callers=callers({method: frozenset({Identity.GATE}) for method in methods}, SERVICE),
    )
    tracer = build_tracer_provider(name, f"{name}-0", TechnoSettings())
    options = ServerOptions(Transport(certificate_files(Identity.EXECUTOR)))
    return GrpcApp(definition, Endpoint("127.0.0.1", 0, 0), tracer, CollectorRegistry(), options)
