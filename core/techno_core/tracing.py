"""OpenTelemetry set-up: one tracer provider per service, gRPC spans from the official instrumentation.

Context crosses every hop through the instrumentation's interceptors (W3C ``traceparent`` in gRPC metadata);
service code only adds domain attributes to the current span.

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

from opentelemetry import trace
from opentelemetry.environment_variables import OTEL_TRACES_EXPORTER
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
        resource=service_resource(service, instance_id), sampler=None if recording else ParentBased(ALWAYS_OFF)
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
