"""Composition root of the executor: wires settings, provider, breaker, retry policy and telemetry into a gRPC
app. Nothing here runs at import time."""

from __future__ import annotations

import time
from collections.abc import Callable

from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from techno.executor.v1 import executor_pb2_grpc
from techno_core.server import Endpoint, GrpcApp, ServiceDefinition
from techno_core.tracing import build_tracer_provider
from techno_executor.adapters.fake_provider import FakeProvider
from techno_executor.adapters.telemetry import PrometheusExecutionObserver
from techno_executor.application.execute import ExecuteAction, ProviderRoute
from techno_executor.domain.actions import default_catalogue
from techno_executor.domain.breaker import CircuitBreaker
from techno_executor.domain.provider import Provider
from techno_executor.domain.retry import RetryPolicy
from techno_executor.entrypoints.grpc import ExecutorServicer
from techno_executor.settings import ExecutorSettings

SERVICE_NAME = "techno.executor.v1.ExecutorService"


def fake_provider(settings: ExecutorSettings) -> FakeProvider:
    return FakeProvider(
        latency_ms=settings.fake_latency_ms, error_rate=settings.fake_error_rate, seed=settings.fake_seed
    )


async def bootstrap(
    settings: ExecutorSettings,
    *,
    tracer_provider: TracerProvider | None = None,
    registry: CollectorRegistry | None = None,
    provider: Provider | None = None,
    clock: Callable[[], float] | None = None,
) -> GrpcApp:
    """``provider`` replaces the configured one (the fake, until vendor adapters exist); ``clock`` drives the
    breaker's cooldown and the deadline arithmetic, so tests can move time without sleeping."""
    owns_tracer = tracer_provider is None
    tracer = tracer_provider or build_tracer_provider("executor", settings.executor_id, settings)
    registry = registry or CollectorRegistry()
    clock = clock or time.monotonic
    provider = provider or fake_provider(settings)

    observer = PrometheusExecutionObserver(registry, settings.executor_id)
    observer.provider_registered(provider.name)
    breaker = CircuitBreaker(
        provider.name,
        failure_threshold=settings.cb_threshold,
        open_seconds=settings.cb_timeout,
        clock=clock,
        on_state_change=observer.breaker_state_changed,
    )
    retry = RetryPolicy(
        max_attempts=settings.executor_retry_max_attempts,
        initial_backoff_seconds=settings.executor_retry_initial_backoff_seconds,
        max_backoff_seconds=settings.executor_retry_max_backoff_seconds,
        clock=clock,
    )
    use_case = ExecuteAction(
        catalogue=default_catalogue(),
        route=ProviderRoute(provider, breaker),
        retry=retry,
        observer=observer,
        provider_timeout_seconds=settings.executor_provider_timeout_seconds,
        clock=clock,
    )
    servicer = ExecutorServicer(use_case, executor_id=settings.executor_id)

    async def close_tracer() -> None:
        if owns_tracer:
            tracer.shutdown()

    definition = ServiceDefinition(
        name="executor",
        registrations=[lambda server: executor_pb2_grpc.add_ExecutorServiceServicer_to_server(servicer, server)],
        service_names=[SERVICE_NAME],
        probes=[],  # no dependency of its own: provider trouble shows in the breaker, not as NOT_SERVING
        closers=[close_tracer],
    )
    return GrpcApp(
        definition,
        Endpoint(settings.host, settings.executor_port, settings.executor_metrics_port),
        tracer,
        registry,
        health_interval_seconds=settings.health_check_interval_seconds,
        grace_seconds=settings.shutdown_grace_seconds,
    )
