"""Composition root of the executor: wires settings, providers, breakers, retry policy, fault switches and
telemetry into a gRPC app. Nothing here runs at import time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, Counter

from techno.executor.v1 import executor_pb2_grpc
from techno.memory.v1 import memory_pb2_grpc
from techno_core.identity import Identity
from techno_core.runner import StartupError
from techno_core.server import Endpoint, GrpcApp, ServiceDefinition, server_options
from techno_core.tracing import build_tracer_provider
from techno_core.transport import transport_from
from techno_executor.adapters.action_file import load_catalogue
from techno_executor.adapters.audit import BreakerAuditWriter
from techno_executor.adapters.cached_context import CachedPreferences
from techno_executor.adapters.fake_provider import FakeProvider
from techno_executor.adapters.memory_context import MemoryConversationContext
from techno_executor.adapters.providers import build_providers, close_providers
from techno_executor.adapters.telemetry import PrometheusExecutionObserver
from techno_executor.application.context import ContextLoader, ConversationContext
from techno_executor.application.execute import ExecuteAction
from techno_executor.application.stream import StreamAction
from techno_executor.domain.actions import ActionCatalogError
from techno_executor.domain.breaker import fan_out
from techno_executor.domain.faults import FaultSwitch
from techno_executor.domain.provider import Provider
from techno_executor.domain.retry import RetryPolicy
from techno_executor.entrypoints.admin_grpc import ExecutorAdminServicer
from techno_executor.entrypoints.authorization import CALLERS
from techno_executor.entrypoints.grpc import ExecutorServicer
from techno_executor.provider_settings import ProviderConfigError
from techno_executor.resilience_settings import provider_routes
from techno_executor.settings import ExecutorSettings

SERVICE_NAME = "techno.executor.v1.ExecutorService"
ADMIN_SERVICE_NAME = "techno.executor.v1.ExecutorAdminService"
# Ceiling of one call to memory for sessions and preferences (the request's remaining deadline lowers it).


def _providers(
    settings: ExecutorSettings, given: Sequence[Provider] | None
) -> tuple[dict[str, Provider], dict[str, FaultSwitch]]:
    """The providers in fallback order, and the fault switches of the fake ones. ``given`` (tests) replaces the
    configured set."""
    if given is not None:
        named = {provider.name: provider for provider in given}
        faults = {name: getattr(provider, "faults", None) for name, provider in named.items()}
        return named, {name: switch for name, switch in faults.items() if isinstance(switch, FaultSwitch)}
    switch = FaultSwitch(settings.initial_faults())
    fake = FakeProvider(faults=switch, seed=settings.fake_seed, stream_shape=settings.stream_shape())
    try:  # fail closed: an unknown or key-less provider on the allowlist refuses to start
        return build_providers(settings, fake=fake), {fake.name: switch}
    except ProviderConfigError as error:
        raise StartupError(str(error)) from error


async def bootstrap(
    settings: ExecutorSettings,
    *,
    tracer_provider: TracerProvider | None = None,
    registry: CollectorRegistry | None = None,
    providers: Sequence[Provider] | None = None,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
) -> GrpcApp:
    """``providers`` replace the configured ones (in fallback order); ``clock`` drives the breakers' cooldowns
    and the deadline arithmetic, and ``sleep`` the waits between retries, so tests can move time and see the
    waits asked for without sleeping."""
    try:  # an invalid catalogue refuses to start, before anything connects
        catalogue = load_catalogue(Path(settings.executor_actions_file))
    except ActionCatalogError as error:
        raise StartupError(str(error)) from error
    by_name, fault_switches = _providers(settings, providers)
    transport = transport_from(settings, listen_hosts=[settings.host], targets=[settings.memory_target])
    owns_tracer = tracer_provider is None
    tracer = tracer_provider or build_tracer_provider("executor", settings.executor_id, settings)
    registry = registry or CollectorRegistry()
    clock = clock or time.monotonic

    # One channel to memory (lazy: nothing connects until the first call) for breaker audit and context.
    memory_channel = transport.channel(settings.memory_target, tracer, Identity.MEMORY)
    memory = memory_pb2_grpc.MemoryServiceStub(memory_channel)
    observer = PrometheusExecutionObserver(registry, settings.executor_id)
    for name, provider in by_name.items():
        observer.provider_registered(name, provider.model)
    audit = (
        BreakerAuditWriter(
            memory,
            executor_id=settings.executor_id,
            registry=registry,
            timeout_seconds=settings.executor_audit_timeout_seconds,
        )
        if settings.executor_audit_breaker_transitions
        else None
    )
    routes = provider_routes(
        settings,
        by_name.values(),
        clock=clock,
        on_state_change=fan_out(observer.breaker_state_changed, audit.transition if audit else None),
    )
    retry = RetryPolicy(
        max_attempts=settings.executor_retry_max_attempts,
        initial_backoff_seconds=settings.executor_retry_initial_backoff_seconds,
        max_backoff_seconds=settings.executor_retry_max_backoff_seconds,
        clock=clock,
        sleep=sleep or asyncio.sleep,
    )
    memory_context = MemoryConversationContext(memory, timeout_seconds=settings.executor_memory_timeout_seconds)
    context: ConversationContext = memory_context
    if settings.executor_preferences_cache_seconds > 0:
        context = CachedPreferences(memory_context, ttl_seconds=settings.executor_preferences_cache_seconds)
    context_failures = Counter(
        "executor_context_failures_total",
        "Failed reads and writes of conversation context in memory, by what (history|preferences|remember).",
        ["what"],
        registry=registry,
    )
    use_case = ExecuteAction(
        catalogue=catalogue,
        routes=routes,
        retry=retry,
        observer=observer,
        provider_timeout_seconds=settings.executor_provider_timeout_seconds,
        clock=clock,
        context=ContextLoader(context, on_failure=lambda what: context_failures.labels(what=what).inc()),
    )
    servicer = ExecutorServicer(use_case, StreamAction(use_case), executor_id=settings.executor_id)
    admin = ExecutorAdminServicer({name: route.breaker for name, route in use_case.routes.items()}, fault_switches)

    async def close() -> None:
        if audit is not None:
            await audit.close()
        await memory_channel.close(None)
        await close_providers(by_name)
        if owns_tracer:
            tracer.shutdown()

    definition = ServiceDefinition(
        name="executor",
        registrations=[
            lambda server: executor_pb2_grpc.add_ExecutorServiceServicer_to_server(servicer, server),
            lambda server: executor_pb2_grpc.add_ExecutorAdminServiceServicer_to_server(admin, server),
        ],
        service_names=[SERVICE_NAME, ADMIN_SERVICE_NAME],
        callers=CALLERS,
        probes=[],  # no dependency of its own: provider trouble shows in the breakers, not as NOT_SERVING
        closers=[close],
    )
    return GrpcApp(
        definition,
        Endpoint(settings.host, settings.executor_port, settings.executor_metrics_port, settings.health_port),
        tracer,
        registry,
        server_options(settings, transport),
        health_interval_seconds=settings.health_check_interval_seconds,
        grace_seconds=settings.shutdown_grace_seconds,
    )
