"""A real executor on loopback (gRPC with mutual TLS, port 0) for the executor's integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from techno_core.identity import Identity
from techno_core.server import GrpcApp
from techno_executor.bootstrap import bootstrap
from techno_executor.domain.provider import Provider
from techno_executor.settings import ExecutorSettings
from tests.tls import as_identity

AppFactory = Callable[..., Awaitable[GrpcApp]]


def settings(**overrides: Any) -> ExecutorSettings:
    values: dict[str, Any] = {
        **as_identity(Identity.EXECUTOR),
        "host": "127.0.0.1",
        "executor_port": 0,
        "executor_metrics_port": 0,
        "executor_id": "executor-test",
        # Retries back off for real here: keep the waits tiny (their bounds are unit-tested).
        "executor_retry_initial_backoff_seconds": 0.001,
        "executor_retry_max_backoff_seconds": 0.01,
        **overrides,
    }
    return ExecutorSettings(**values)


@pytest.fixture
async def start_app(tracer_provider: TracerProvider) -> AsyncIterator[AppFactory]:
    apps: list[GrpcApp] = []

    async def start(*, providers: list[Provider] | None = None, **overrides: Any) -> GrpcApp:
        app = await bootstrap(
            settings(**overrides), tracer_provider=tracer_provider, registry=CollectorRegistry(), providers=providers
        )
        await app.start()
        apps.append(app)
        return app

    yield start
    for app in apps:
        await app.stop()
