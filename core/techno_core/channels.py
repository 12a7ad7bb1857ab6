"""Client channels to other services, and deadline propagation."""

from __future__ import annotations

import grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors
from opentelemetry.sdk.trace import TracerProvider

_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.enable_retries", 0),  # retries are a policy decision of the caller, never the transport's
]


def open_channel(target: str, tracer_provider: TracerProvider) -> grpc.aio.Channel:
    """A channel whose calls carry the current trace context (W3C traceparent in metadata)."""
    return grpc.aio.insecure_channel(
        target,
        options=_OPTIONS,
        interceptors=aio_client_interceptors(tracer_provider=tracer_provider),  # type: ignore[no-untyped-call]
    )


def downstream_timeout(context: grpc.aio.ServicerContext[object, object], ceiling: float) -> float:
    """Timeout for a call made while serving ``context``: never past the caller's deadline, never above
    ``ceiling``. gRPC Python does not propagate deadlines by itself, so every hop passes this on."""
    remaining = context.time_remaining()
    if remaining is None:
        return ceiling
    return max(0.0, min(ceiling, remaining))
