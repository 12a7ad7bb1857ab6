"""OpenTelemetry set-up: one tracer provider per service, gRPC spans from the official instrumentation.

Context crosses every hop as W3C ``traceparent`` in gRPC metadata (put there by the instrumentation's interceptors
when spans are recorded, by ``with_trace_context`` when not); service code only adds domain attributes to the
current span.

Configured by the standard ``OTEL_*`` variables, read by the SDK where it reads them itself:
``OTEL_TRACES_EXPORTER`` (``otlp``, ``console`` or ``none``; comma-separated for several),
``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (OTLP over HTTP/protobuf),
``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``, ``OTEL_RESOURCE_ATTRIBUTES`` and ``OTEL_SERVICE_NAME``.

Trace ids always exist, exported or not: the audit trail, the logs and every error answer carry them. With no
exporter, spans are not recorded (building, timing and dropping them was a fifth of each service's CPU), but a
trace id is still made for each request and passed on in ``traceparent``: the sampler decides "not sampled",
and the SDK then hands out a valid, non-recording span. A sampled ``traceparent`` from a caller is still
honoured, so a trace started by a process that does export keeps its spans in this one.
"""

from __future__ import annotations

import logging
import os
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.environment_variables import OTEL_TRACES_EXPORTER
from opentelemetry.instrumentation.grpc import aio_client_interceptors
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
    OTEL_SDK_DISABLED,
)
from opentelemetry.sdk.resources import (
    SERVICE_INSTANCE_ID,
    SERVICE_NAME,
    SERVICE_NAMESPACE,
    SERVICE_VERSION,
    OTELResourceDetector,
    Resource,
)
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

from techno_core.runner import StartupError
from techno_core.settings import TechnoSettings

log = logging.getLogger(__name__)

# The sampler of a provider whose spans go nowhere; ``records`` recognises it.
NOT_RECORDING = ParentBased(ALWAYS_OFF)

NAMESPACE = "techno"
EXPORTERS = ("otlp", "console", "none")
# The only OTLP exporter installed is the HTTP/protobuf one (the gRPC one would pull a second gRPC stack in).
_OTLP_PROTOCOL = "http/protobuf"


def _package_version() -> str:
    try:
        return version("techno")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def exporter_names(settings: TechnoSettings) -> list[str]:
    """The exporters asked for: ``OTEL_TRACES_EXPORTER``, else the deprecated ``TECHNO_TRACE_EXPORTER``, else
    none. Unlike the specification's default (``otlp``), nothing is exported unless asked: a service with no
    collector beside it would otherwise log a failed export every few seconds."""
    configured = os.environ.get(OTEL_TRACES_EXPORTER, "").strip().lower()
    if not configured and settings.trace_exporter is not None:
        log.warning("TECHNO_TRACE_EXPORTER is deprecated: set OTEL_TRACES_EXPORTER instead")
        configured = settings.trace_exporter
    names = [name.strip() for name in configured.split(",") if name.strip()]
    unknown = [name for name in names if name not in EXPORTERS]
    if unknown:
        raise StartupError(f"{OTEL_TRACES_EXPORTER}: unsupported {', '.join(unknown)} (one of {', '.join(EXPORTERS)})")
    return [name for name in names if name != "none"]


def _otlp_exporter(settings: TechnoSettings) -> SpanExporter:
    for variable in (OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, OTEL_EXPORTER_OTLP_PROTOCOL):
        protocol = os.environ.get(variable, "").strip()
        if protocol and protocol != _OTLP_PROTOCOL:
            raise StartupError(f"{variable}: {protocol} is not supported, only {_OTLP_PROTOCOL} (port 4318)")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    standard = any(os.environ.get(name) for name in (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT))
    if not standard and settings.otlp_endpoint:
        log.warning("TECHNO_OTLP_ENDPOINT is deprecated: set OTEL_EXPORTER_OTLP_TRACES_ENDPOINT instead")
        return OTLPSpanExporter(endpoint=settings.otlp_endpoint)
    return OTLPSpanExporter()  # the SDK reads the OTEL_EXPORTER_OTLP_* endpoint, headers and timeout itself


def _exporters(settings: TechnoSettings) -> list[SpanExporter]:
    return [_otlp_exporter(settings) if name == "otlp" else ConsoleSpanExporter() for name in exporter_names(settings)]


def service_resource(service: str, instance_id: str) -> Resource:
    """Who emits the spans. ``OTEL_RESOURCE_ATTRIBUTES`` and ``OTEL_SERVICE_NAME`` add to these and, where they
    name the same attribute, win: the operator's word is the last."""
    ours = Resource.create(
        {
            SERVICE_NAME: service,
            SERVICE_NAMESPACE: NAMESPACE,
            SERVICE_VERSION: _package_version(),
            SERVICE_INSTANCE_ID: instance_id,
        }
    )
    return ours.merge(OTELResourceDetector().detect())


def build_tracer_provider(
    service: str, instance_id: str, settings: TechnoSettings, *, processor: SpanProcessor | None = None
) -> TracerProvider:
    """A provider for one service. ``processor`` lets tests collect spans in memory instead of exporting.

    Spans are recorded only when they go somewhere (an exporter or ``processor``); the sampler is then the one
    ``OTEL_TRACES_SAMPLER`` names (the SDK's default: follow the parent, sample new traces)."""
    if os.environ.get(OTEL_SDK_DISABLED, "").strip().lower() == "true":
        # The SDK would hand out spans without ids, and the audit trail, logs and error answers need them.
        raise StartupError(
            f"{OTEL_SDK_DISABLED}: not supported (trace ids are part of the audit trail); "
            f"set {OTEL_TRACES_EXPORTER}=none to export nothing"
        )
    exporters = _exporters(settings)
    recording = bool(exporters) or processor is not None
    provider = TracerProvider(
        resource=service_resource(service, instance_id), sampler=None if recording else NOT_RECORDING
    )
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    if processor is not None:
        provider.add_span_processor(processor)
    return provider


def current_trace_id() -> str:
    """Hex W3C trace id of the current span, sampled or not, or "" outside any trace (no span is current)."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else ""


def records(tracer_provider: TracerProvider) -> bool:
    """Whether the provider's spans go anywhere: built with an exporter or a test's processor, or not built here
    (a test's own provider). When not, the lean trace-context interceptors stand in for the instrumentation."""
    return tracer_provider.sampler is not NOT_RECORDING


def start_span(tracer: trace.Tracer, name: str, parent: Context, kind: trace.SpanKind) -> tuple[trace.Span, object]:
    """Start ``name`` as a child of ``parent`` and make it current; returns the span and the token to ``detach``
    (``techno_core.tracing.end_span``). For the lean interceptors: no attributes, no context manager."""
    span = tracer.start_span(name, context=parent, kind=kind)
    return span, context_api.attach(trace.set_span_in_context(span, parent))


def end_span(span: trace.Span, token: object) -> None:
    context_api.detach(token)  # type: ignore[arg-type]
    span.end()


def with_trace_context(metadata: Any) -> tuple[tuple[str, str], ...]:
    """``metadata`` of an outgoing call plus the current trace context (W3C ``traceparent``), so the callee joins
    the caller's trace. What the gRPC client instrumentation does when nothing is recorded, and no more: no client
    span, no attributes, no wrapped call (a grpc.aio client interceptor cost ~30 µs per call for this)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return (*tuple(metadata or ()), *carrier.items())


def client_interceptors(tracer_provider: TracerProvider) -> list[Any]:
    """The official instrumentation's channel interceptors (a client span per call) when spans are recorded;
    none when they are not, and the channel adds ``with_trace_context`` to each call's metadata instead."""
    if records(tracer_provider):
        return list(aio_client_interceptors(tracer_provider=tracer_provider))  # type: ignore[no-untyped-call]
    return []
