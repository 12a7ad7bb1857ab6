"""The real edge over real HTTP in front of a real gRPC server implementing techno.gate.v1.GateService."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2
from openapi_spec_validator import validate
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from techno.gate.v1 import gate_pb2
from techno_edge.bootstrap import EdgeServer
from tests.rest_errors import field_violations_of, reasons_of, trace_id_of

from .conftest import GrpcUpstream

# gRPC sends the deadline as a grpc-timeout header rounded up to its coarser units, so the servicer may see a
# few milliseconds more than was set.
WIRE_ROUNDING = 0.05
PROCESS = {"action": "summarize", "context_id": "tenant-a", "payload": {"text": "hello"}}


async def test_process_maps_json_both_ways(client: httpx.AsyncClient, gate: GrpcUpstream) -> None:
    response = await client.post("/v1/process", json=PROCESS)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["status"] == "EXECUTION_STATUS_SUCCEEDED"  # enum as its name
    assert body["result"] == {"echo": {"text": "hello"}, "context": "tenant-a"}  # Struct as an object
    assert body["usage"] == {"inputTokens": 3, "outputTokens": 4, "totalTokens": 7}
    assert body["executionTimeMs"] == 12
    request = gate.seen.requests[-1]
    assert isinstance(request, gate_pb2.ProcessRequest)
    assert (request.action, request.context_id, request.payload["text"]) == ("summarize", "tenant-a", "hello")


async def test_list_actions_is_a_get(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/actions")
    assert response.status_code == 200
    assert response.json() == {
        "actions": [{"name": "summarize", "description": "Summarize text"}],
        "policyVersion": "v1",
        "traceId": "",
    }


async def test_api_key_and_bearer_are_forwarded_and_nothing_else(client: httpx.AsyncClient, gate: GrpcUpstream) -> None:
    await client.get("/v1/actions", headers={"X-API-Key": "tk_123", "Cookie": "secret=1", "X-Other": "no"})
    await client.get("/v1/actions", headers={"Authorization": "Bearer tk_456"})
    first, second = gate.seen.metadata[-2:]
    assert first["x-api-key"] == "tk_123"
    assert "cookie" not in first
    assert "x-other" not in first
    assert "authorization" not in first
    assert second["authorization"] == "Bearer tk_456"


async def test_traceparent_is_continued_to_the_upstream(
    client: httpx.AsyncClient, gate: GrpcUpstream, span_exporter: InMemorySpanExporter
) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    response = await client.get("/v1/actions", headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
    assert response.headers["x-trace-id"] == trace_id
    assert gate.seen.metadata[-1]["traceparent"].split("-")[1] == trace_id
    spans = [s for s in span_exporter.get_finished_spans() if s.context.trace_id == int(trace_id, 16)]
    server_spans = {s.name: s for s in spans if s.kind == SpanKind.SERVER}
    assert "GET /v1/actions" in server_spans  # the edge's HTTP span, named after the template
    assert "/techno.gate.v1.GateService/ListActions" in server_spans  # the upstream's gRPC span
    assert any(s.kind == SpanKind.CLIENT for s in spans)


async def test_every_response_has_a_trace_id(client: httpx.AsyncClient) -> None:
    for response in (await client.get("/v1/actions"), await client.get("/nope"), await client.put("/v1/actions")):
        assert len(response.headers["x-trace-id"]) == 32
        assert response.headers["x-trace-id"] != "0" * 32


async def test_deadline_is_the_configured_ceiling(client: httpx.AsyncClient, gate: GrpcUpstream) -> None:
    await client.get("/v1/actions")
    remaining = gate.seen.time_remaining[-1]
    assert remaining is not None
    assert 4.0 < remaining <= 5.0 + WIRE_ROUNDING


async def test_client_may_lower_but_not_raise_the_deadline(client: httpx.AsyncClient, gate: GrpcUpstream) -> None:
    await client.get("/v1/actions", headers={"X-Request-Timeout": "1.5"})
    lowered = gate.seen.time_remaining[-1]
    assert lowered is not None
    assert 0 < lowered <= 1.5 + WIRE_ROUNDING
    await client.get("/v1/actions", headers={"X-Request-Timeout": "600"})
    capped = gate.seen.time_remaining[-1]
    assert capped is not None
    assert 4.0 < capped <= 5.0 + WIRE_ROUNDING


async def test_deadline_exceeded_is_504(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/process", json={**PROCESS, "action": "hang"}, headers={"X-Request-Timeout": "1"})
    assert response.status_code == 504
    assert response.json()["error"]["status"] == "DEADLINE_EXCEEDED"


@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan", "inf", "0.5", "1e-9"])
async def test_invalid_timeout_header_is_400(client: httpx.AsyncClient, value: str) -> None:
    response = await client.get("/v1/actions", headers={"X-Request-Timeout": value})
    assert response.status_code == 400


async def test_oversize_body_is_413_by_content_length(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/process", content=b"{" + b" " * 2000 + b"}")
    assert response.status_code == 413
    assert reasons_of(response.json()["error"]) == ["BODY_TOO_LARGE"]


async def test_oversize_body_is_413_when_streamed_without_length(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 200

    response = await client.post("/v1/process", content=chunks())
    assert "content-length" not in response.request.headers
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{broken", "not valid JSON"),
        (b'"text"', "JSON object"),
        (b'{"action": "a", "unknown_field": 1}', "unknown_field"),
    ],
)
async def test_bad_json_is_400(client: httpx.AsyncClient, body: bytes, fragment: str) -> None:
    response = await client.post("/v1/process", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    assert fragment in error["message"]
    assert trace_id_of(error) == response.headers["x-trace-id"]


async def test_unknown_route_is_404_and_wrong_method_405(client: httpx.AsyncClient) -> None:
    missing = await client.get("/v1/nothing")
    assert missing.status_code == 404
    assert reasons_of(missing.json()["error"]) == ["ROUTE_NOT_FOUND"]
    wrong = await client.delete("/v1/process")
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "POST"


@pytest.mark.parametrize(
    ("code", "http"),
    [
        ("CANCELLED", 499),
        ("UNKNOWN", 500),
        ("INVALID_ARGUMENT", 400),
        ("DEADLINE_EXCEEDED", 504),
        ("NOT_FOUND", 404),
        ("ALREADY_EXISTS", 409),
        ("PERMISSION_DENIED", 403),
        ("UNAUTHENTICATED", 401),
        ("RESOURCE_EXHAUSTED", 429),
        ("FAILED_PRECONDITION", 400),
        ("ABORTED", 409),
        ("OUT_OF_RANGE", 400),
        ("UNIMPLEMENTED", 501),
        ("INTERNAL", 500),
        ("UNAVAILABLE", 503),
        ("DATA_LOSS", 500),
    ],
)
async def test_upstream_status_maps_to_http(client: httpx.AsyncClient, code: str, http: int) -> None:
    response = await client.post("/v1/process", json={**PROCESS, "action": f"error:{code}"})
    assert response.status_code == http
    error = response.json()["error"]
    assert error["code"] == http
    assert error["status"] == code
    assert reasons_of(error) == ["TEST_REASON"]
    assert error["message"] == f"scripted {code}"
    assert trace_id_of(error) == response.headers["x-trace-id"]
    if code == "INVALID_ARGUMENT":
        assert field_violations_of(error) == [{"field": "payload.text", "description": "is required"}]
    else:
        assert field_violations_of(error) == []
    assert response.headers.get("retry-after") == ("2" if code == "RESOURCE_EXHAUSTED" else None)


async def test_healthz_and_readyz_follow_the_gate(client: httpx.AsyncClient, gate: GrpcUpstream) -> None:
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/readyz")).status_code == 200
    await gate.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert (await client.get("/readyz")).status_code == 503
    await gate.health.set("", health_pb2.HealthCheckResponse.SERVING)
    assert (await client.get("/readyz")).status_code == 200


async def test_metrics_use_the_route_template(client: httpx.AsyncClient) -> None:
    await client.get("/v1/actions")
    await client.get("/v1/unknown/path/123")
    text = (await client.get("/metrics")).text
    assert 'http_requests_total{method="GET",route="/v1/actions",status="200"} 1.0' in text
    assert 'http_requests_total{method="GET",route="unmatched",status="404"} 1.0' in text
    assert "/v1/unknown" not in text
    assert 'http_request_duration_seconds_count{method="GET",route="/v1/actions"} 1.0' in text
    assert "http_requests_in_flight" in text


async def test_openapi_validates_and_lists_the_gate(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    validate(document)
    assert document["openapi"].startswith("3.1")
    assert "post" in document["paths"]["/v1/process"]
    assert "get" in document["paths"]["/v1/actions"]
    schemas = document["components"]["schemas"]
    request = schemas["techno.gate.v1.ProcessRequest"]
    payload = {"type": "object", "additionalProperties": True, "description": "The action's input, as a JSON object."}
    assert request["properties"]["payload"] == payload  # described by its proto comment
    assert set(request["required"]) == {"action", "contextId", "payload"}
    assert schemas["techno.gate.v1.ExecutionStatus"]["enum"][1] == "EXECUTION_STATUS_SUCCEEDED"
    assert set(document["components"]["securitySchemes"]) == {"ApiKeyAuth", "BearerAuth"}


async def test_upstream_down_is_503_json(client: httpx.AsyncClient, gate: GrpcUpstream) -> None:
    await gate.server.stop(None)
    response = await client.post("/v1/process", json=PROCESS)
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["status"] == "UNAVAILABLE"
    assert "127.0.0.1" not in error["message"]
    assert (await client.get("/readyz")).status_code == 503


async def test_stop_closes_cleanly_and_refuses_new_connections(edge: EdgeServer) -> None:
    url = edge.url
    await edge.stop()
    edge.stop = _noop  # type: ignore[method-assign]  # the fixture's stop has nothing left to do
    async with httpx.AsyncClient(base_url=url) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get("/healthz")


async def _noop() -> None:
    return None


def test_grpc_status_names_are_what_the_edge_reports() -> None:
    assert json.dumps(grpc.StatusCode.DATA_LOSS.name) == '"DATA_LOSS"'
