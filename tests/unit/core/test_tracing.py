"""Tracing follows the standard OTEL_* variables; with nothing to export, spans are not recorded but every request
still gets a trace id, which is propagated and returned."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import version

import pytest
from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from techno_core.runner import StartupError
from techno_core.settings import TechnoSettings
from techno_core.tracing import build_tracer_provider, current_trace_id, exporter_names, records, with_trace_context

PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SAMPLED_PARENT = {"traceparent": f"00-{PARENT_TRACE}-00f067aa0ba902b7-01"}
UNSAMPLED_PARENT = {"traceparent": f"00-{PARENT_TRACE}-00f067aa0ba902b7-00"}
_OTEL = [
    "OTEL_TRACES_EXPORTER",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_SERVICE_NAME",
    "OTEL_SDK_DISABLED",
    "TECHNO_TRACE_EXPORTER",
    "TECHNO_OTLP_ENDPOINT",
]


_built: list[TracerProvider] = []


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in _OTEL:
        monkeypatch.delenv(name, raising=False)
    yield
    while _built:  # export what a console exporter holds while the captured output is still open
        _built.pop().shutdown()


def provider() -> TracerProvider:
    built = build_tracer_provider("gate", "gate-0", TechnoSettings())
    _built.append(built)
    return built


def sampled(traceparent: str) -> bool:
    return bool(int(traceparent.rsplit("-", 1)[1], 16) & 0x01)  # the W3C flags' sampled bit


def in_span(tracer_provider: TracerProvider, carrier: dict[str, str] | None = None) -> tuple[bool, str, str]:
    """Starts a server-like span (child of ``carrier``'s traceparent, if any): whether it records, the trace id
    ``current_trace_id`` gives inside it, and the traceparent a downstream call would carry."""
    parent = TraceContextTextMapPropagator().extract(carrier or {})
    token = context_api.attach(parent)
    try:
        with tracer_provider.get_tracer("test").start_as_current_span("Process") as span:
            outgoing: dict[str, str] = {}
            TraceContextTextMapPropagator().inject(outgoing)
            return span.is_recording(), current_trace_id(), outgoing["traceparent"]
    finally:
        context_api.detach(token)


def test_without_an_exporter_spans_are_not_recorded_but_trace_ids_exist_and_propagate() -> None:
    recording, trace_id, traceparent = in_span(provider())
    assert not recording
    assert len(trace_id) == 32
    assert int(trace_id, 16) != 0
    assert traceparent.startswith(f"00-{trace_id}-")
    assert not sampled(traceparent)


def test_without_an_exporter_a_callers_trace_id_is_kept() -> None:
    recording, trace_id, traceparent = in_span(provider(), UNSAMPLED_PARENT)
    assert (recording, trace_id) == (False, PARENT_TRACE)
    assert traceparent.startswith(f"00-{PARENT_TRACE}-")


def test_a_sampled_caller_is_followed_so_the_trace_still_joins_downstream() -> None:
    recording, trace_id, traceparent = in_span(provider(), SAMPLED_PARENT)
    assert (recording, trace_id) == (True, PARENT_TRACE)
    assert sampled(traceparent)


def test_outside_any_span_there_is_no_trace_id() -> None:
    assert trace.get_current_span().get_span_context().is_valid is False
    assert current_trace_id() == ""


def test_an_exporter_records_with_the_sampler_the_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    assert in_span(provider())[0]  # the SDK's default sampler: parentbased_always_on
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
    recording, trace_id, _ = in_span(provider())
    assert not recording
    assert trace_id


def test_a_test_processor_records_spans(span_exporter: InMemorySpanExporter) -> None:
    tracer_provider = build_tracer_provider(
        "gate", "gate-0", TechnoSettings(), processor=SimpleSpanProcessor(span_exporter)
    )
    _, trace_id, _ = in_span(tracer_provider)
    assert [format(span.context.trace_id, "032x") for span in span_exporter.get_finished_spans()] == [trace_id]


def test_the_resource_names_service_namespace_and_version(monkeypatch: pytest.MonkeyPatch) -> None:
    attributes = provider().resource.attributes
    assert attributes["service.name"] == "gate"
    assert attributes["service.namespace"] == "techno"
    assert attributes["service.version"] == version("techno")
    assert attributes["service.instance.id"] == "gate-0"


def test_the_operators_resource_attributes_are_added_and_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging,service.namespace=techno-eu")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "gate-eu")
    attributes = provider().resource.attributes
    assert attributes["deployment.environment"] == "staging"
    assert (attributes["service.namespace"], attributes["service.name"]) == ("techno-eu", "gate-eu")
    assert attributes["service.version"] == version("techno")


@pytest.mark.parametrize(
    ("variable", "deprecated", "expected"),
    [
        ("", "", []),
        ("none", "", []),
        ("otlp", "", ["otlp"]),
        ("otlp, console", "", ["otlp", "console"]),
        ("", "console", ["console"]),  # the deprecated TECHNO_ spelling still works
        ("none", "otlp", []),  # the standard variable wins
    ],
)
def test_exporters_come_from_otel_traces_exporter(
    monkeypatch: pytest.MonkeyPatch, variable: str, deprecated: str, expected: list[str]
) -> None:
    if variable:
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", variable)
    if deprecated:
        monkeypatch.setenv("TECHNO_TRACE_EXPORTER", deprecated)
    assert exporter_names(TechnoSettings()) == expected


def test_an_unknown_exporter_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp,zipkin")
    with pytest.raises(StartupError, match="OTEL_TRACES_EXPORTER: unsupported zipkin"):
        provider()


def test_otlp_over_grpc_refuses_to_start_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with pytest.raises(StartupError, match="OTEL_EXPORTER_OTLP_PROTOCOL: grpc is not supported, only http/protobuf"):
        provider()


def test_disabling_the_sdk_refuses_to_start_since_trace_ids_are_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    with pytest.raises(StartupError, match=r"OTEL_SDK_DISABLED: not supported .* set OTEL_TRACES_EXPORTER=none"):
        provider()


def test_only_a_provider_whose_spans_go_somewhere_records(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not records(provider())
    assert records(TracerProvider())  # a test's own provider
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    assert records(provider())


def test_an_outgoing_calls_metadata_gains_the_current_trace_context_and_keeps_its_own() -> None:
    with provider().get_tracer("test").start_as_current_span("Process"):
        trace_id = current_trace_id()
        metadata = dict(with_trace_context((("idempotency-key", "k1"),)))
    assert metadata["idempotency-key"] == "k1"
    assert metadata["traceparent"].startswith(f"00-{trace_id}-")
    assert dict(with_trace_context(None)) == {}  # outside any span there is nothing to carry
