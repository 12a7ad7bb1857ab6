"""Hostile input through the real stack (edge, gate, executor, memory on loopback): nothing a client sends makes
a 5xx, every refusal carries a reason code, and no answer names an internal address, type or Python detail."""

from __future__ import annotations

import json
import logging
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import json_format

from techno.gate.v1 import gate_pb2, gate_pb2_grpc
from techno_core.grpc_errors import details_of, rpc_status_of
from techno_core.identity import Identity
from tests.integration.test_rest_denials import (  # noqa: F401  (make_stack is a fixture)
    SUMMARIZE,
    Stack,
    StackFactory,
    assert_error,
    make_stack,
)
from tests.rest_errors import field_violations_of
from tests.tls import connect


def nested(depth: int) -> dict[str, Any]:
    """A JSON object ``depth`` objects deep: ``nested(2) == {"a": {"a": {}}}`` minus one level."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


async def send(stack: Stack, content: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.edge.port}", timeout=10) as client:
        return await client.post(
            "/v1/process", content=content, headers={"Content-Type": "application/json", **(headers or {})}
        )


def summarize_with(payload: Any) -> bytes:
    return json.dumps({**SUMMARIZE, "payload": payload}).encode()


@pytest.fixture
async def stack(make_stack: StackFactory) -> Stack:  # noqa: F811
    return await make_stack()


def assert_no_internals(response: httpx.Response) -> None:
    # The ErrorInfo domain is the one "techno." an answer may name; a proto package (techno.gate.v1…) is a leak.
    text = response.text.replace('"domain":"techno.dev"', "")
    for leak in ("127.0.0.1", "ipv4:", "ipv6:", "google.protobuf", "set_int_max_str_digits", "Traceback", "techno."):
        assert leak not in text, f"{leak!r} in {text}"


# 1. Nested JSON: bounded at the edge, and refused by the gate for a gRPC caller.


@pytest.mark.parametrize("depth", [33, 40, 100, 450, 600, 5000])
async def test_deeply_nested_payload_is_400_at_the_edge(stack: Stack, depth: int) -> None:
    key = await stack.key("default")
    deep = b'{"a":' * (depth - 1) + b"{}" + b"}" * (depth - 1)  # json.dumps would exhaust its own recursion
    body = b'{"action": "summarize", "contextId": "public-1", "payload": {"text": "x", "deep": ' + deep + b"}}"
    response = await send(stack, body, {"X-API-Key": key})
    error = assert_error(response, 400, "INVALID_ARGUMENT")
    assert field_violations_of(error)[0]["field"] == "body"
    assert "nested" in field_violations_of(error)[0]["description"]
    assert_no_internals(response)


async def test_very_deep_input_is_refused_before_parsing(stack: Stack) -> None:
    key = await stack.key("default")
    for content in (b"[" * 200_000, b'{"a":' * 100_000):
        response = await send(stack, content, {"X-API-Key": key})
        assert_error(response, 400, "INVALID_ARGUMENT")


async def test_nesting_within_the_bound_reaches_the_gate(stack: Stack) -> None:
    key = await stack.key("default")
    response = await send(stack, summarize_with({"text": "x", "deep": nested(20)}), {"X-API-Key": key})
    # The gate answers (its payload check refuses the unknown field): the body was not refused for its depth.
    assert_error(response, 400, "PAYLOAD_INVALID")


@pytest.mark.parametrize("depth", [40, 200])
async def test_deeply_nested_payload_is_invalid_argument_over_grpc(
    stack: Stack, depth: int, caplog: pytest.LogCaptureFixture
) -> None:
    request = gate_pb2.ProcessRequest(action="summarize", context_id="public-1")
    json_format.ParseDict({"text": "x", "deep": nested(depth)}, request.payload, max_recursion_depth=10_000)
    async with connect(stack.gate.address, identity=Identity.EDGE, server=Identity.GATE) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await gate_pb2_grpc.GateServiceStub(channel).Process(request, metadata=(("x-api-key", "tk_nobody"),))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    details = details_of(rpc_status_of(raised.value))
    assert details.reasons in (["PAYLOAD_INVALID"], ["INVALID_ARGUMENT"])
    assert "Traceback" not in caplog.text


# 2. X-Request-Timeout: a client cannot ask for a 5xx.


@pytest.mark.parametrize(
    "value",
    ["1e-9", "5e-324", "0.0001", "0.999", "0", "1e400", "0x10", "1_0", "+1", ".5e-3", "1e3", "1.", "", "9" * 20],
)
async def test_unusable_request_timeout_is_400_naming_the_header(stack: Stack, value: str) -> None:
    response = await send(stack, json.dumps(SUMMARIZE).encode(), {"X-Request-Timeout": value})
    error = assert_error(response, 400, "INVALID_ARGUMENT")
    assert field_violations_of(error)[0]["field"] == "X-Request-Timeout"


@pytest.mark.parametrize("value", ["1", "01.5", "2.5", "600"])
async def test_usable_request_timeouts_reach_the_gate(stack: Stack, value: str) -> None:
    response = await send(stack, json.dumps(SUMMARIZE).encode(), {"X-Request-Timeout": value})
    assert_error(response, 401, "CREDENTIALS_MISSING")  # no key: the gate itself refused, so the header passed


# 8. Oversized credentials: refused by the edge as bad credentials, never a rate limit.


@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": "tk_" + "a" * 20_000},
        {"Authorization": "Bearer " + "a" * 20_000},
        {"X-API-Key": "tk_" + "a" * 300},
    ],
)
async def test_oversized_credentials_are_401(stack: Stack, headers: dict[str, str]) -> None:
    response = await send(stack, json.dumps(SUMMARIZE).encode(), headers)
    error = assert_error(response, 401, "API_KEY_INVALID" if "X-API-Key" in headers else "TOKEN_INVALID")
    assert error["status"] == "UNAUTHENTICATED"


@pytest.mark.parametrize(
    ("header", "reason", "status"),
    [("X-API-Key", "API_KEY_INVALID", 401), ("Authorization", "TOKEN_INVALID", 401)],
)
async def test_credentials_that_are_not_printable_ascii_are_401(
    stack: Stack, header: str, reason: str, status: int
) -> None:
    # No credential has such bytes: refused like any invalid credential, not as a malformed request (400).
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.edge.port}", timeout=10) as client:
        response = await client.post(
            "/v1/process",
            content=json.dumps(SUMMARIZE).encode(),
            headers=[
                (b"Content-Type", b"application/json"),
                (header.encode(), "Bearer tk_\u00e9t\u00e9".encode("latin-1")),
            ],
        )
    assert assert_error(response, status, reason)["status"] == "UNAUTHENTICATED"


async def test_oversized_idempotency_key_is_400(stack: Stack) -> None:
    key = await stack.key("default")
    response = await send(stack, json.dumps(SUMMARIZE).encode(), {"X-API-Key": key, "Idempotency-Key": "k" * 20_000})
    assert_error(response, 400, "IDEMPOTENCY_KEY_INVALID")


async def test_credentials_at_the_bounds_reach_the_gate_without_a_metadata_refusal(stack: Stack) -> None:
    # All three forwarded headers at the longest the edge forwards: under gRPC's 8 KiB soft metadata limit
    # (past it the gate's transport refuses some calls at random, as RESOURCE_EXHAUSTED), so every call is
    # answered by the gate itself.
    headers = {"X-API-Key": "tk_" + "a" * 253, "Authorization": "Bearer " + "b" * 6137, "Idempotency-Key": "k" * 255}
    for _ in range(20):
        response = await send(stack, json.dumps(SUMMARIZE).encode(), headers)
        assert_error(response, 401, "API_KEY_INVALID")


# 9. Client messages in the client's terms: no addresses, Python hints or protobuf type names.


async def test_a_huge_number_is_400_without_python_hints(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    key = await stack.key("default")
    with caplog.at_level(logging.INFO):
        response = await send(
            stack, b'{"action": "summarize", "payload": {"n": ' + b"9" * 5000 + b"}}", {"X-API-Key": key}
        )
    error = assert_error(response, 400, "INVALID_ARGUMENT")
    assert "number" in error["message"]
    assert_no_internals(response)


@pytest.mark.parametrize(
    "body",
    [
        {**SUMMARIZE, "payload": "not an object"},
        {**SUMMARIZE, "payload": [1, 2]},
        {**SUMMARIZE, "action": 5},
        {**SUMMARIZE, "action": {"a": 1}},
        {**SUMMARIZE, "sessionId": ["a"]},
    ],
)
async def test_wrong_types_name_the_field_not_the_proto_type(stack: Stack, body: dict[str, Any]) -> None:
    key = await stack.key("default")
    response = await send(stack, json.dumps(body).encode(), {"X-API-Key": key})
    error = assert_error(response, 400, "INVALID_ARGUMENT")
    assert field_violations_of(error), error
    assert_no_internals(response)


async def test_gate_down_names_no_address(stack: Stack) -> None:
    await stack.gate.stop()
    response = await send(stack, json.dumps(SUMMARIZE).encode())
    assert_error(response, 503, "UPSTREAM_UNAVAILABLE")
    assert_no_internals(response)


async def test_executor_down_names_no_address(stack: Stack) -> None:
    key = await stack.key("default")
    await stack.executor.stop()
    response = await send(stack, json.dumps(SUMMARIZE).encode(), {"X-API-Key": key})
    assert response.status_code == 503, response.text
    assert_no_internals(response)
