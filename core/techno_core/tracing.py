"""OpenTelemetry set-up: one tracer provider per service, gRPC spans from the official instrumentation.

Context crosses every hop through the instrumentation's interceptors (W3C ``traceparent`` in gRPC metadata);
service code only adds domain attributes to the current span.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from techno_core.settings import TechnoSettings


def _exporter(settings: TechnoSettings) -> SpanExporter | None:
    if settings.trace_exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=settings.otlp_endpoint)
    if settings.trace_exporter == "console":
        return ConsoleSpanExporter()
    return None


def build_tracer_provider(
    service: str, instance_id: str, settings: TechnoSettings, *, processor: SpanProcessor | None = None
) -> TracerProvider:
    """A provider for one service. ``processor`` lets tests collect spans in memory instead of exporting."""
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service, SERVICE_INSTANCE_ID: instance_id}))
    exporter = _exporter(settings)
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    if processor is not None:
        provider.add_span_processor(processor)
    return provider


def current_trace_id() -> str:
    """Hex W3C trace id of the current span, or "" outside a sampled trace."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else ""
