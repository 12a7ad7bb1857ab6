"""Latency histograms link to traces: real servers on loopback, scraped over HTTP the way Prometheus does.

A scrape asking for OpenMetrics gets, on the bucket of each observation, an exemplar with the trace id of the
call observed last (when that call was sampled); a classic text scrape stays as it was, without exemplars.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from google.protobuf import json_format
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry, Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from techno.executor.v1 import executor_pb2, executor_pb2_grpc
from techno_core.identity import Identity
from techno_core.server import GrpcApp
from techno_edge.bootstrap import EdgeServer
from techno_edge.bootstrap import bootstrap as edge_bootstrap
from techno_executor.bootstrap import bootstrap as executor_bootstrap
from techno_executor.settings import ExecutorSettings
from tests.integration.edge.conftest import GrpcUpstream, edge_settings, start_upstream
from tests.tls import as_identity, connect

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
EXECUTE = {"grpc_service": "techno.executor.v1.ExecutorService", "grpc_method": "Execute"}
DEADLINE_SECONDS = 5.0


@pytest.fixture
async def executor(tracer_provider: TracerProvider) -> AsyncIterator[GrpcApp]:
    settings = ExecutorSettings(
        **as_identity(Identity.EXECUTOR),
        host="127.0.0.1",
        executor_port=0,
        executor_metrics_port=0,
        executor_id="exemplars",
    )
    app = await executor_bootstrap(settings, tracer_provider=tracer_provider, registry=CollectorRegistry())
    await app.start()
    yield app
    await app.stop()


@pytest.fixture
async def gate(tracer_provider: TracerProvider) -> AsyncIterator[GrpcUpstream]:
    upstream = await start_upstream(tracer_provider)
    yield upstream
    await upstream.server.stop(None)


@pytest.fixture
async def edge(gate: GrpcUpstream, tracer_provider: TracerProvider) -> AsyncIterator[EdgeServer]:
    server = await edge_bootstrap(
        edge_settings(gate.target), tracer_provider=tracer_provider, registry=CollectorRegistry()
    )
    await server.start()
    yield server
    await server.stop()


def traceparent(trace_id: str, *, sampled: bool) -> str:
    return f"00-{trace_id}-{secrets.token_hex(8)}-{'01' if sampled else '00'}"


async def summarize(app: GrpcApp, metadata: tuple[tuple[str, str], ...]) -> None:
    request = executor_pb2.ExecuteRequest(action="summarize", context_id="ctx", profile="default")
    json_format.ParseDict({"text": "The cat sat on the mat."}, request.payload)
    async with connect(app.address, identity=Identity.GATE, server=Identity.EXECUTOR) as channel:
        await executor_pb2_grpc.ExecutorServiceStub(channel).Execute(request, metadata=metadata, timeout=5)


def openmetrics_families(text: str) -> list[Metric]:
    """Parsed strictly: the OpenMetrics parser rejects a malformed exposition."""
    return list(parse_openmetrics(text))  # type: ignore[no-untyped-call]


def exemplar_trace_ids(openmetrics: str, histogram: str, labels: dict[str, str]) -> set[str]:
    """Trace ids of the exemplars on the buckets of one series of ``histogram``."""
    found: set[str] = set()
    for family in openmetrics_families(openmetrics):
        for sample in family.samples:
            if sample.name != f"{histogram}_bucket" or any(sample.labels.get(k) != v for k, v in labels.items()):
                continue
            if sample.exemplar is not None:
                found.add(sample.exemplar.labels["trace_id"])
    return found


async def scrape_until(url: str, accept: str, done: Callable[[str], bool]) -> str:
    """Scrapes until ``done`` holds: the edge observes a request just after sending its answer."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            response = await client.get(url, headers={"Accept": accept})
            response.raise_for_status()
            if done(response.text):
                return response.text
            assert time.monotonic() < deadline, f"not seen in time; last scrape:\n{response.text}"
            await asyncio.sleep(0.01)


def metrics_url(app: GrpcApp) -> str:
    return f"http://127.0.0.1:{app.metrics_port}/metrics"


async def test_grpc_and_llm_latency_carry_the_trace_id_of_the_call(
    executor: GrpcApp, span_exporter: InMemorySpanExporter
) -> None:
    trace_id = secrets.token_hex(16)
    await summarize(executor, (("traceparent", traceparent(trace_id, sampled=True)),))

    def linked(text: str) -> bool:
        return trace_id in exemplar_trace_ids(text, "grpc_server_handling_seconds", EXECUTE)

    text = await scrape_until(metrics_url(executor), OPENMETRICS, linked)

    # The server span of the call is the trace the exemplars name.
    servers = [s for s in span_exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert [format(s.context.trace_id, "032x") for s in servers] == [trace_id]
    assert exemplar_trace_ids(text, "grpc_server_handling_seconds", EXECUTE) == {trace_id}
    assert exemplar_trace_ids(text, "llm_request_latency_seconds", {"provider": "fake"}) == {trace_id}
    # As Prometheus reads it: on the bucket line, after the value.
    bucket_lines = [line for line in text.splitlines() if line.startswith("grpc_server_handling_seconds_bucket{")]
    assert any(f' # {{trace_id="{trace_id}"}} ' in line for line in bucket_lines)


async def test_an_unsampled_call_leaves_no_exemplar(executor: GrpcApp) -> None:
    await summarize(executor, (("traceparent", traceparent(secrets.token_hex(16), sampled=False)),))
    text = await scrape_until(metrics_url(executor), OPENMETRICS, lambda text: "grpc_server_handling_seconds" in text)
    assert executor.registry.get_sample_value("grpc_server_handling_seconds_count", EXECUTE) == 1
    assert exemplar_trace_ids(text, "grpc_server_handling_seconds", EXECUTE) == set()
    assert exemplar_trace_ids(text, "llm_request_latency_seconds", {"provider": "fake"}) == set()


async def test_a_classic_text_scrape_stays_valid_without_exemplars(executor: GrpcApp) -> None:
    await summarize(executor, ())
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(metrics_url(executor))  # no Accept header, like curl
    assert response.headers["content-type"].startswith("text/plain")
    assert " # {" not in response.text
    families = {family.name: family for family in parse_text(response.text)}
    assert families["grpc_server_handling_seconds"].type == "histogram"


async def test_edge_request_duration_carries_the_trace_id_of_the_request(edge: EdgeServer) -> None:
    async with httpx.AsyncClient(base_url=edge.url, timeout=5) as client:
        response = await client.get("/v1/actions")
    assert response.status_code == 200
    trace_id = response.headers["x-trace-id"]
    route = {"method": "GET", "route": "/v1/actions"}

    def linked(text: str) -> bool:
        return trace_id in exemplar_trace_ids(text, "http_request_duration_seconds", route)

    text = await scrape_until(f"{edge.url}/metrics", OPENMETRICS, linked)
    bucket_lines = [line for line in text.splitlines() if line.startswith("http_request_duration_seconds_bucket{")]
    assert any(f' # {{trace_id="{trace_id}"}} ' in line for line in bucket_lines)
    assert text.endswith("# EOF\n")


async def test_edge_metrics_negotiate_the_format(edge: EdgeServer) -> None:
    async with httpx.AsyncClient(base_url=edge.url, timeout=5) as client:
        assert (await client.get("/v1/actions")).status_code == 200
        plain = await client.get("/metrics")
        # Prometheus's own Accept header: OpenMetrics preferred over text.
        prometheus_accept = (
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
            "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )
        negotiated = await client.get("/metrics", headers={"Accept": prometheus_accept})
    assert plain.headers["content-type"].startswith("text/plain")
    assert " # {" not in plain.text
    assert {family.name for family in parse_text(plain.text)} >= {"http_request_duration_seconds"}
    assert negotiated.headers["content-type"].startswith("application/openmetrics-text")
    assert "http_request_duration_seconds" in {family.name for family in openmetrics_families(negotiated.text)}
