"""The edge with no exporter configured records no spans, yet every request has a trace id: the caller's
``traceparent`` or a new one, returned in ``X-Trace-Id`` and carried to the gate; probes get none."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client import CollectorRegistry

from techno_core.settings import TechnoSettings
from techno_core.tracing import build_tracer_provider, records
from techno_edge.bootstrap import bootstrap

from .conftest import GrpcUpstream, edge_settings, start_upstream

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
async def untraced_edge() -> AsyncIterator[tuple[httpx.AsyncClient, GrpcUpstream]]:
    tracer = build_tracer_provider("edge", "edge-0", TechnoSettings())
    assert not records(tracer)  # as the edge starts with no exporter configured
    gate = await start_upstream(tracer)
    server = await bootstrap(edge_settings(gate.target), tracer_provider=tracer, registry=CollectorRegistry())
    await server.start()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        yield http, gate
    await server.stop()
    await gate.server.stop(None)


def trace_of(traceparent: str) -> str:
    return traceparent.split("-")[1]


async def test_the_callers_trace_id_is_answered_and_passed_on(
    untraced_edge: tuple[httpx.AsyncClient, GrpcUpstream],
) -> None:
    http, gate = untraced_edge
    traceparent = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
    response = await http.get("/v1/actions", headers={"X-API-Key": "k", "traceparent": traceparent})
    assert response.status_code == 200
    assert response.headers["x-trace-id"] == TRACE_ID
    assert trace_of(gate.seen.metadata[-1]["traceparent"]) == TRACE_ID


async def test_a_request_without_one_gets_a_new_trace_id_the_gate_shares(
    untraced_edge: tuple[httpx.AsyncClient, GrpcUpstream],
) -> None:
    http, gate = untraced_edge
    first = await http.get("/v1/actions", headers={"X-API-Key": "k"})
    second = await http.get("/v1/actions", headers={"X-API-Key": "k"})
    trace_id = first.headers["x-trace-id"]
    assert len(trace_id) == 32
    assert int(trace_id, 16) != 0
    assert trace_of(gate.seen.metadata[0]["traceparent"]) == trace_id
    assert second.headers["x-trace-id"] != trace_id


async def test_probes_are_not_traced(untraced_edge: tuple[httpx.AsyncClient, GrpcUpstream]) -> None:
    http, _ = untraced_edge
    assert (await http.get("/readyz")).status_code == 200
    assert "x-trace-id" not in (await http.get("/readyz")).headers
