"""A server-streaming method over REST: the real edge serving the gate's StreamProcess (``POST /v1/process:stream``,
from its google.api.http annotation) as Server-Sent Events, in front of a scripted gRPC gate over mTLS.

The scripted gate holds a stream where the test says, so "several chunks arrive before the last" and "the client
left, so the call was cancelled" are shown by events, never by timing."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from techno_core.settings import TechnoSettings
from techno_core.tracing import build_tracer_provider, records
from techno_edge.bootstrap import EdgeServer, bootstrap
from tests.rest_errors import reasons_of, trace_id_of
from tests.sse_events import WAIT, EventReader
from tests.waiting import eventually

from .conftest import GrpcUpstream, edge_settings

STREAM = "/v1/process:stream"
# Keep-alives more often than the slow-client bounds, so a test can count a stream's life past those bounds.
KEEPALIVE = 0.1
SLOW_CLIENT_BOUND = 0.3


def process(action: str) -> dict[str, Any]:
    return {"action": action, "contextId": "tenant-a", "payload": {"text": "hello"}}


async def counted_once(client: httpx.AsyncClient, status: int) -> bool:
    """Whether the edge's metrics count one stream under its route with this status."""
    metrics = (await client.get("/metrics")).text
    return f'http_requests_total{{method="POST",route="{STREAM}",status="{status}"}} 1.0' in metrics


@pytest.fixture
async def edge(gate: GrpcUpstream, tracer_provider: TracerProvider) -> AsyncIterator[EdgeServer]:
    settings = edge_settings(
        gate.target,
        edge_stream_keepalive_seconds=KEEPALIVE,
        edge_header_timeout_seconds=SLOW_CLIENT_BOUND,
        edge_body_timeout_seconds=SLOW_CLIENT_BOUND,
    )
    server = await bootstrap(settings, tracer_provider=tracer_provider, registry=CollectorRegistry())
    await server.start()
    yield server
    await server.stop()


async def test_chunks_arrive_one_by_one_before_the_done_event(client: httpx.AsyncClient, gate: GrpcUpstream) -> None:
    async with client.stream("POST", STREAM, json=process("chunks:3")) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        trace_id = response.headers["x-trace-id"]
        reader = EventReader(response.aiter_lines())
        # The gate holds its done message until released: these three chunks were streamed, not buffered.
        chunks = [await asyncio.wait_for(reader.next(), WAIT) for _ in range(3)]
        gate.seen.release.set()
        rest = await reader.rest()
    assert [(e.name if e else None) for e in chunks] == ["chunk"] * 3
    assert [e.json() for e in chunks if e] == [
        {"traceId": "from-gate", "chunk": {"text": f"part {n} "}} for n in range(3)
    ]
    assert [e.name for e in rest] == ["done"]
    done = rest[0].json()["done"]
    assert (done["status"], done["result"]) == ("EXECUTION_STATUS_SUCCEEDED", {"text": "whole answer"})
    assert len(trace_id) == 32
    # The REST body is the ProcessRequest itself (body: "request"), as for POST /v1/process.
    request = gate.seen.requests[-1].request
    assert (request.action, request.context_id, request.payload["text"]) == ("chunks:3", "tenant-a", "hello")


async def test_a_refusal_before_the_first_chunk_is_a_plain_http_error(client: httpx.AsyncClient) -> None:
    response = await client.post(STREAM, json=process("error:PERMISSION_DENIED"))
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert (error["code"], error["status"], reasons_of(error)) == (403, "PERMISSION_DENIED", ["TEST_REASON"])
    assert trace_id_of(error) == response.headers["x-trace-id"]


async def test_a_failure_after_the_first_chunk_ends_the_stream_with_an_error_event(client: httpx.AsyncClient) -> None:
    async with client.stream("POST", STREAM, json=process("fail:UNAVAILABLE")) as response:
        assert response.status_code == 200
        events = await EventReader(response.aiter_lines()).rest()
    assert [e.name for e in events] == ["chunk", "error"]
    error = events[-1].json()["error"]
    assert (error["code"], error["status"], reasons_of(error)) == (503, "UNAVAILABLE", ["TEST_REASON"])
    assert trace_id_of(error) == response.headers["x-trace-id"]
    await eventually(lambda: counted_once(client, 503))  # with the error's status, not the 200 its status line said


async def test_the_client_leaving_cancels_the_upstream_call(
    client: httpx.AsyncClient, gate: GrpcUpstream, edge: EdgeServer
) -> None:
    async with client.stream("POST", STREAM, json=process("hold")) as response:
        first = await asyncio.wait_for(EventReader(response.aiter_lines()).next(), WAIT)
        assert first is not None
        assert first.name == "chunk"
    # Leaving the block closed the connection mid-stream; the gate's handler is cancelled, not left running.
    await asyncio.wait_for(gate.seen.stream_cancelled.wait(), WAIT)
    assert not gate.seen.release.is_set()
    await eventually(lambda: counted_once(client, 499))  # the client closed it


async def test_the_client_leaving_before_the_first_chunk_cancels_the_call_too(
    client: httpx.AsyncClient, gate: GrpcUpstream
) -> None:
    waiting = asyncio.ensure_future(client.post(STREAM, json=process("chunks:0")))  # no chunk until released
    await eventually(lambda: len(gate.seen.requests) == 1)
    waiting.cancel()  # httpx closes the connection while the edge still awaits the first message
    await asyncio.gather(waiting, return_exceptions=True)
    await asyncio.wait_for(gate.seen.stream_cancelled.wait(), WAIT)
    await eventually(lambda: counted_once(client, 499))  # the client closed it


async def test_keep_alive_comments_while_the_upstream_is_quiet_and_the_slow_client_guard_lets_it_be(
    client: httpx.AsyncClient, gate: GrpcUpstream
) -> None:
    async with client.stream("POST", STREAM, json=process("hold")) as response:
        reader = EventReader(response.aiter_lines())
        assert (await asyncio.wait_for(reader.next(), WAIT)) is not None
        # Keep-alives come at most every KEEPALIVE seconds: seeing several means the stream has been open for
        # longer than the header and body bounds, which must not cut a stream that is being answered.
        await asyncio.wait_for(reader.wait_for_comments(round(2 * SLOW_CLIENT_BOUND / KEEPALIVE)), WAIT)
        gate.seen.release.set()
        rest = await reader.rest()
    assert set(reader.comments) == {"keep-alive"}
    assert [e.name for e in rest] == ["done"]


async def test_the_deadline_bounds_the_whole_stream(client: httpx.AsyncClient, gate: GrpcUpstream) -> None:
    headers = {"X-Request-Timeout": "1"}
    async with client.stream("POST", STREAM, json=process("hold"), headers=headers) as response:
        events = await EventReader(response.aiter_lines()).rest()
    assert [e.name for e in events] == ["chunk", "error"]
    error = events[-1].json()["error"]
    assert (error["code"], reasons_of(error)) == (504, ["DEADLINE_EXCEEDED"])
    assert gate.seen.time_remaining[-1] is not None
    assert gate.seen.time_remaining[-1] <= 1.05


async def test_a_client_that_stops_reading_does_not_hold_the_stream_past_its_deadline(
    client: httpx.AsyncClient, edge: EdgeServer
) -> None:
    """The stream outgrows every buffer between the edge and a client that reads nothing, so the edge waits in
    send(); the deadline still ends its part (the request is counted, as 504, once the edge let it go)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    url = httpx.URL(edge.url)
    await asyncio.get_running_loop().sock_connect(sock, (url.host, url.port))
    _, writer = await asyncio.open_connection(sock=sock)
    body = json.dumps(process("flood:2000")).encode()
    head = f"POST {STREAM} HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\nX-Request-Timeout: 1\r\n"
    writer.write(head.encode() + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    await writer.drain()
    try:

        async def let_go() -> bool:
            metrics = (await client.get("/metrics")).text
            return 'http_requests_total{method="POST",route="/v1/process:stream",status="504"} 1.0' in metrics

        await eventually(let_go)
    finally:
        writer.close()


async def test_a_bad_body_is_refused_with_paths_relative_to_the_body(client: httpx.AsyncClient) -> None:
    response = await client.post(STREAM, json={**process("hold"), "payload": "not an object"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["details"][1]["fieldViolations"] == [{"field": "payload", "description": "must be an object"}]


async def test_a_stream_joins_the_edges_trace_when_no_span_is_recorded(gate: GrpcUpstream) -> None:
    """Without an exporter the edge's channel carries the trace context by the lean interceptors, which must
    cover a server-streaming call as well as a unary one: the gate's audit trail is filed under the trace id the
    client reads in X-Trace-Id."""
    lean = build_tracer_provider("edge", "edge-0", TechnoSettings())
    assert not records(lean)
    server = await bootstrap(edge_settings(gate.target), tracer_provider=lean, registry=CollectorRegistry())
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as client:
            unary = await client.post("/v1/process", json=process("summarize"))
            gate.seen.release.set()
            stream = await client.post(STREAM, json=process("chunks:1"))
    finally:
        await server.stop()
    assert (unary.status_code, stream.status_code) == (200, 200)
    sent = [metadata["traceparent"].split("-")[1] for metadata in gate.seen.metadata]
    assert sent == [unary.headers["x-trace-id"], stream.headers["x-trace-id"]]
