"""The edges of HTTP at the real edge in front of a scripted gate: HEAD, OPTIONS and CORS, Content-Type, query
parameters on a whole-body method, repeated JSON keys and headers, numbers JSON cannot answer with."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from techno_edge.bootstrap import bootstrap
from tests.rest_errors import field_violations_of, reasons_of, trace_id_of

from .conftest import GrpcUpstream, edge_settings

PROCESS = b'{"action": "summarize", "contextId": "tenant-a", "payload": {"text": "hello"}}'
JSON = {"Content-Type": "application/json"}
ORIGIN = "https://app.example.com"


def assert_refused(response: httpx.Response, status: int, reason: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    error: dict[str, object] = response.json()["error"]
    assert reasons_of(error) == [reason]
    assert trace_id_of(error) == response.headers["x-trace-id"]
    return error


# HEAD is GET without a body.


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/openapi.json", "/metrics", "/v1/actions"])
async def test_head_is_served_like_get_without_a_body(client: httpx.AsyncClient, path: str) -> None:
    got = await client.get(path)
    head = await client.head(path)
    assert head.status_code == got.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]
    if path != "/metrics":  # the metrics text changes between the two requests
        assert head.headers["content-length"] == got.headers["content-length"]


async def test_allow_lists_head_with_get(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/actions")).headers["allow"] == "GET, HEAD"
    assert (await client.post("/healthz")).headers["allow"] == "GET, HEAD"
    assert (await client.head("/v1/process")).headers["allow"] == "POST"


# OPTIONS and CORS.


async def test_without_cors_options_is_a_json_405(client: httpx.AsyncClient) -> None:
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    response = await client.options("/v1/process", headers=preflight)
    assert_refused(response, 405, "METHOD_NOT_ALLOWED")
    assert response.headers["allow"] == "POST"
    assert "access-control-allow-origin" not in response.headers
    probe = await client.options("/healthz", headers=preflight)  # untraced, like every probe: no trace id
    assert (probe.status_code, reasons_of(probe.json()["error"])) == (405, ["METHOD_NOT_ALLOWED"])
    assert "access-control-allow-origin" not in (await client.get("/v1/actions", headers={"Origin": ORIGIN})).headers


@pytest.fixture
async def cors_client(gate: GrpcUpstream, tracer_provider: TracerProvider) -> AsyncIterator[httpx.AsyncClient]:
    settings = edge_settings(gate.target, edge_cors_allowed_origins=f"{ORIGIN},https://other.example.com")
    server = await bootstrap(settings, tracer_provider=tracer_provider, registry=CollectorRegistry())
    await server.start()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        yield http
    await server.stop()


async def test_cors_preflight_from_an_allowed_origin(cors_client: httpx.AsyncClient) -> None:
    response = await cors_client.options(
        "/v1/process",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-api-key",
        },
    )
    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert response.headers["access-control-allow-methods"] == "POST"
    assert "X-API-Key" in response.headers["access-control-allow-headers"]
    assert "Idempotency-Key" in response.headers["access-control-allow-headers"]
    assert response.headers["vary"] == "Origin"
    actions = await cors_client.options(
        "/v1/actions", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}
    )
    assert actions.headers["access-control-allow-methods"] == "GET, HEAD"


async def test_cors_responses_name_the_allowed_origin(cors_client: httpx.AsyncClient) -> None:
    ok = await cors_client.post("/v1/process", content=PROCESS, headers={**JSON, "Origin": ORIGIN})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == ORIGIN
    assert "X-Trace-Id" in ok.headers["access-control-expose-headers"]
    refused = await cors_client.get("/v1/nothing", headers={"Origin": ORIGIN})
    assert refused.headers["access-control-allow-origin"] == ORIGIN  # a browser may read the error too
    stranger = await cors_client.get("/v1/actions", headers={"Origin": "https://evil.example.com"})
    assert "access-control-allow-origin" not in stranger.headers
    assert stranger.headers["vary"] == "Origin"


async def test_cors_preflight_from_another_origin_is_405(cors_client: httpx.AsyncClient) -> None:
    response = await cors_client.options(
        "/v1/process", headers={"Origin": "https://evil.example.com", "Access-Control-Request-Method": "POST"}
    )
    assert_refused(response, 405, "METHOD_NOT_ALLOWED")
    assert "access-control-allow-origin" not in response.headers
    unknown = await cors_client.options("/v1/nope", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"})
    assert_refused(unknown, 404, "ROUTE_NOT_FOUND")


async def test_the_openai_compatible_routes_follow_the_same_cors_setting(
    client: httpx.AsyncClient, cors_client: httpx.AsyncClient
) -> None:
    """They are served in front of the edge's own routes (entrypoints.openai_routes), by the same setting."""
    preflight = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, x-stainless-lang",
    }
    response = await cors_client.options("/v1/chat/completions", headers=preflight)
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert response.headers["access-control-allow-methods"] == "POST"
    assert "Authorization" in response.headers["access-control-allow-headers"]
    models = await cors_client.options("/v1/models/fake", headers={**preflight, "Access-Control-Request-Method": "GET"})
    assert models.headers["access-control-allow-methods"] == "GET, HEAD"
    refused = await cors_client.post("/v1/chat/completions", content=b"{", headers={**JSON, "Origin": ORIGIN})
    assert refused.status_code == 400
    assert refused.headers["access-control-allow-origin"] == ORIGIN  # a browser may read the error too
    assert refused.json()["error"]["param"] == "body"  # OpenAI's shape
    off = await client.options("/v1/chat/completions", headers=preflight)
    assert off.status_code == 405
    assert "access-control-allow-origin" not in off.headers


# Content-Type.


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1", "application/jsonx"],
)
async def test_a_body_that_is_not_declared_json_is_415(client: httpx.AsyncClient, content_type: str) -> None:
    response = await client.post("/v1/process", content=PROCESS, headers={"Content-Type": content_type})
    assert_refused(response, 415, "UNSUPPORTED_MEDIA_TYPE")


async def test_a_body_without_content_type_is_415(client: httpx.AsyncClient, gate: GrpcUpstream) -> None:
    response = await client.post("/v1/process", content=PROCESS)
    assert_refused(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert gate.seen.requests == []


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "Application/JSON", "application/json; charset=utf-8", 'application/json;charset="UTF-8"'],
)
async def test_json_content_types_are_accepted(client: httpx.AsyncClient, content_type: str) -> None:
    response = await client.post("/v1/process", content=PROCESS, headers={"Content-Type": content_type})
    assert response.status_code == 200, response.text


# Query parameters, repeated keys and headers, numbers JSON cannot answer with.


async def test_query_parameters_on_a_whole_body_method_are_400(client: httpx.AsyncClient, gate: GrpcUpstream) -> None:
    response = await client.post("/v1/process?dryRun=true", content=PROCESS, headers=JSON)
    error = assert_refused(response, 400, "INVALID_ARGUMENT")
    assert field_violations_of(error) == [{"field": "dryRun", "description": "unknown query parameter"}]
    assert gate.seen.requests == []


async def test_a_repeated_json_key_is_400(client: httpx.AsyncClient, gate: GrpcUpstream) -> None:
    body = b'{"action": "summarize", "action": "hang", "payload": {}}'
    response = await client.post("/v1/process", content=body, headers=JSON)
    error = assert_refused(response, 400, "INVALID_ARGUMENT")
    assert "action" in str(error["message"])
    assert gate.seen.requests == []


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
async def test_numbers_json_cannot_carry_are_400_not_500(client: httpx.AsyncClient, number: bytes) -> None:
    body = b'{"action": "summarize", "payload": {"n": ' + number + b"}}"
    response = await client.post("/v1/process", content=body, headers=JSON)
    assert_refused(response, 400, "INVALID_ARGUMENT")


async def test_a_repeated_credential_header_is_400(client: httpx.AsyncClient, gate: GrpcUpstream) -> None:
    headers = [("X-API-Key", "tk_1"), ("X-API-Key", "tk_2"), ("Content-Type", "application/json")]
    response = await client.post("/v1/process", content=PROCESS, headers=headers)
    error = assert_refused(response, 400, "INVALID_ARGUMENT")
    assert "x-api-key" in str(error["message"]).lower()
    assert gate.seen.requests == []


async def test_a_deadline_that_runs_out_is_504_with_its_reason(client: httpx.AsyncClient) -> None:
    body = b'{"action": "hang", "payload": {}}'
    response = await client.post("/v1/process", content=body, headers={**JSON, "X-Request-Timeout": "1"})
    assert_refused(response, 504, "DEADLINE_EXCEEDED")
