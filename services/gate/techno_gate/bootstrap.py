"""Composition root of the gate: wires settings, adapters and the use case into a gRPC app."""

from __future__ import annotations

from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, Gauge

from techno.executor.v1 import executor_pb2_grpc
from techno.gate.v1 import gate_pb2_grpc
from techno.memory.v1 import memory_pb2_grpc
from techno_core.channels import open_channel
from techno_core.health import grpc_health_probe
from techno_core.server import Endpoint, GrpcApp, ServiceDefinition
from techno_core.tracing import build_tracer_provider
from techno_gate.adapters.executor import GrpcExecutor
from techno_gate.adapters.memory import KeyCache, MemoryAuditLog
from techno_gate.adapters.observer import PrometheusDecisionObserver
from techno_gate.adapters.policy_file import StaticPolicySource, load_policy
from techno_gate.application.process import Gatekeeper
from techno_gate.entrypoints.grpc import GateServicer
from techno_gate.settings import GateSettings

SERVICE_NAME = "techno.gate.v1.GateService"


async def bootstrap(
    settings: GateSettings,
    *,
    tracer_provider: TracerProvider | None = None,
    registry: CollectorRegistry | None = None,
) -> GrpcApp:
    policy = load_policy(Path(settings.gate_policy_file))  # an invalid policy refuses to start
    owns_tracer = tracer_provider is None
    tracer = tracer_provider or build_tracer_provider("gate", settings.gate_id, settings)
    registry = registry or CollectorRegistry()

    memory_channel = open_channel(settings.memory_target, tracer)
    executor_channel = open_channel(settings.executor_target, tracer)
    memory = memory_pb2_grpc.MemoryServiceStub(memory_channel)
    keys = KeyCache(
        memory,
        refresh_seconds=settings.gate_key_refresh_seconds,
        max_age_seconds=settings.gate_key_cache_max_age_seconds,
    )
    audit = MemoryAuditLog(memory, timeout_seconds=settings.gate_audit_timeout_seconds)
    gatekeeper = Gatekeeper(
        keys=keys,
        policies=StaticPolicySource(policy),
        audit=audit,
        executor=GrpcExecutor(executor_pb2_grpc.ExecutorServiceStub(executor_channel)),
        observer=PrometheusDecisionObserver(registry, settings.gate_id),
        max_payload_bytes=settings.gate_max_payload_bytes,
    )
    servicer = GateServicer(gatekeeper, executor_timeout_seconds=settings.gate_executor_timeout_seconds)
    Gauge("gate_api_keys_cached", "API keys held by the authentication cache.", registry=registry).set_function(
        lambda: keys.size
    )

    async def close_channels() -> None:
        await memory_channel.close(None)
        await executor_channel.close(None)

    async def close_tracer() -> None:
        if owns_tracer:
            tracer.shutdown()

    definition = ServiceDefinition(
        name="gate",
        registrations=[lambda server: gate_pb2_grpc.add_GateServiceServicer_to_server(servicer, server)],
        service_names=[SERVICE_NAME],
        probes=[
            ("memory", grpc_health_probe(memory_channel)),
            ("executor", grpc_health_probe(executor_channel)),
            ("api_keys", keys.check_fresh),
        ],
        starters=[keys.start],
        closers=[keys.close, audit.close, close_channels, close_tracer],
    )
    return GrpcApp(
        definition,
        Endpoint(settings.host, settings.gate_port, settings.gate_metrics_port),
        tracer,
        registry,
        health_interval_seconds=settings.health_check_interval_seconds,
        grace_seconds=settings.shutdown_grace_seconds,
    )
