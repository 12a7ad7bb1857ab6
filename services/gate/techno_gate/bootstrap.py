"""Composition root of the gate: wires settings, adapters and the use cases into a gRPC app."""

from __future__ import annotations

from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, Gauge

from techno.executor.v1 import executor_pb2_grpc
from techno.gate.v1 import admin_pb2_grpc, gate_pb2_grpc
from techno.memory.v1 import memory_pb2_grpc
from techno_core.health import grpc_health_probe
from techno_core.identity import Identity
from techno_core.runner import StartupError
from techno_core.server import Endpoint, GrpcApp, ServiceDefinition, server_options
from techno_core.tracing import build_tracer_provider, current_trace_id
from techno_core.transport import transport_from
from techno_gate.adapters.executor import GrpcExecutor
from techno_gate.adapters.memory import (
    KeyCache,
    MemoryAuditLog,
    MemoryAuditReader,
    MemoryIdempotencyStore,
    MemoryKeyStore,
    MemoryPersonalData,
)
from techno_gate.adapters.observer import PrometheusDecisionObserver
from techno_gate.adapters.outbox_metrics import OutboxMetrics
from techno_gate.adapters.policy_file import PolicyError, PolicyFileWatcher, ReloadablePolicySource
from techno_gate.adapters.tokens import TokenConfigError, TokenVerifier
from techno_gate.application.admin import KeyAdmin
from techno_gate.application.admin_audit import AdminAudit
from techno_gate.application.audit_query import AuditTrail
from techno_gate.application.authenticate import Authenticator
from techno_gate.application.idempotency import Idempotency
from techno_gate.application.limits import LimitGate, RouteLimits
from techno_gate.application.models import Models
from techno_gate.application.outbox import OutcomeOutbox
from techno_gate.application.personal import PersonalData
from techno_gate.application.policy_reload import PolicyReloads
from techno_gate.application.process import Gatekeeper
from techno_gate.application.providers import ProviderCatalogue
from techno_gate.entrypoints.admin_grpc import GateAdminServicer
from techno_gate.entrypoints.authorization import CALLERS
from techno_gate.entrypoints.grpc import GateServicer
from techno_gate.limit_settings import build_limiters
from techno_gate.settings import GateSettings

SERVICE_NAMES = ["techno.gate.v1.GateService", "techno.gate.v1.GateAdminService"]


async def bootstrap(
    settings: GateSettings,
    *,
    tracer_provider: TracerProvider | None = None,
    registry: CollectorRegistry | None = None,
) -> GrpcApp:
    registry = registry or CollectorRegistry()
    observer = PrometheusDecisionObserver(registry, settings.gate_id)
    try:  # an invalid policy or token configuration refuses to start, with the reason
        policies = ReloadablePolicySource(Path(settings.gate_policy_file), on_reload=observer.policy_reloaded)
        tokens = TokenVerifier(settings)
    except (PolicyError, TokenConfigError) as error:
        raise StartupError(str(error)) from error
    transport = transport_from(
        settings, listen_hosts=[settings.host], targets=[settings.memory_target, settings.executor_target]
    )
    owns_tracer = tracer_provider is None
    tracer = tracer_provider or build_tracer_provider("gate", settings.gate_id, settings)

    memory_channel = transport.channel(settings.memory_target, tracer, Identity.MEMORY)
    executor_channel = transport.channel(settings.executor_target, tracer, Identity.EXECUTOR)
    memory = memory_pb2_grpc.MemoryServiceStub(memory_channel)
    keys = KeyCache(
        memory,
        refresh_seconds=settings.gate_key_refresh_seconds,
        max_age_seconds=settings.gate_key_cache_max_age_seconds,
    )
    audit = MemoryAuditLog(memory, timeout_seconds=settings.gate_audit_timeout_seconds)
    outbox = OutcomeOutbox(audit, OutboxMetrics(registry, lambda: outbox.size), capacity=settings.gate_outbox_capacity)
    rates, concurrency, close_limits = build_limiters(settings)
    executor = GrpcExecutor(executor_pb2_grpc.ExecutorServiceStub(executor_channel))
    providers = ProviderCatalogue(executor.providers)
    gatekeeper = Gatekeeper(
        authenticator=Authenticator(keys, tokens),
        policies=policies,
        audit=audit,
        executor=executor,
        observer=observer,
        limits=LimitGate(rates, concurrency, observer, fail_open=settings.gate_limits_on_store_unavailable == "allow"),
        max_payload_bytes=settings.gate_max_payload_bytes,
        outbox=outbox,
        providers=providers,
    )
    admin_audit = AdminAudit(audit, observer, trace_id=current_trace_id)
    key_admin = KeyAdmin(MemoryKeyStore(memory), keys, lambda: set(policies.current.document.profiles), admin_audit)
    reloads = PolicyReloads(policies, admin_audit)
    policy_watch = PolicyFileWatcher(reloads.on_file_change, interval_seconds=settings.gate_policy_watch_seconds)
    personal = PersonalData(MemoryPersonalData(memory))
    idempotency = Idempotency(MemoryIdempotencyStore(memory), observer)
    route_limits = RouteLimits(gatekeeper.limits, policies)
    servicer = GateServicer(
        gatekeeper,
        personal,
        idempotency,
        Models(policies, providers),
        limits=route_limits,
        executor_timeout_seconds=settings.gate_executor_timeout_seconds,
    )
    audit_trail = AuditTrail(MemoryAuditReader(memory))
    admin = GateAdminServicer(
        gatekeeper,
        key_admin,
        audit_trail,
        executor_pb2_grpc.ExecutorAdminServiceStub(executor_channel),
        admin_audit,
        route_limits,
    )
    Gauge("gate_api_keys_cached", "API keys held by the authentication cache.", registry=registry).set_function(
        lambda: keys.size
    )

    async def close_channels() -> None:
        await memory_channel.close(None)
        await executor_channel.close(None)

    async def close_tracer() -> None:
        if owns_tracer:
            tracer.shutdown()

    async def flush_outbox() -> None:  # after the calls drained, before the audit log and channels close
        await outbox.close(within_seconds=settings.shutdown_grace_seconds)

    definition = ServiceDefinition(
        name="gate",
        registrations=[
            lambda server: gate_pb2_grpc.add_GateServiceServicer_to_server(servicer, server),
            lambda server: admin_pb2_grpc.add_GateAdminServiceServicer_to_server(admin, server),
        ],
        service_names=SERVICE_NAMES,
        callers=CALLERS,
        probes=[
            ("memory", grpc_health_probe(memory_channel)),
            ("executor", grpc_health_probe(executor_channel)),
            ("api_keys", keys.check_fresh),
        ],
        starters=[keys.start, policy_watch.start, outbox.start],
        closers=[policy_watch.close, keys.close, flush_outbox, audit.close, close_limits, close_channels, close_tracer],
        reloaders=[reloads.on_signal],
    )
    return GrpcApp(
        definition,
        Endpoint(settings.host, settings.gate_port, settings.gate_metrics_port, settings.health_port),
        tracer,
        registry,
        server_options(settings, transport),
        health_interval_seconds=settings.health_check_interval_seconds,
        grace_seconds=settings.shutdown_grace_seconds,
    )
