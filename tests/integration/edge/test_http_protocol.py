"""A request uvicorn cannot parse is answered with the edge's JSON 400 and a trace id, not uvicorn's plain text.

The protocol runs here under a uvicorn server of its own on loopback, alone and as the base of the slow-client
guard (``guarded_protocol(guard, JsonErrorHttpToolsProtocol)``), as the edge's server is configured with it.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import pytest
import uvicorn
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from techno_core.identity import Identity
from techno_edge.adapters.shedding import ShedReport
from techno_edge.bootstrap import bootstrap
from techno_edge.entrypoints.asgi import Receive, Scope, Send
from techno_edge.entrypoints.http_protocol import MESSAGE, JsonErrorHttpToolsProtocol
from techno_edge.entrypoints.slow_clients import Bounds, ConnectionGuard, guarded_protocol
from techno_edge.settings import EdgeSettings
from tests.rest_errors import reasons_of, trace_id_of
from tests.tls import as_identity


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def _guarded() -> type[HttpToolsProtocol]:
    guard = ConnectionGuard(Bounds(5.0, 5.0, 100, 16_384, 100), ShedReport(CollectorRegistry()))
    return guarded_protocol(guard, JsonErrorHttpToolsProtocol)


@pytest.fixture(params=["alone", "guarded"])
async def port(request: pytest.FixtureRequest) -> AsyncIterator[int]:
    sock = socket.create_server(("127.0.0.1", 0))
    protocol = JsonErrorHttpToolsProtocol if request.param == "alone" else _guarded()
    config = uvicorn.Config(_ok, http=protocol, ws="none", lifespan="off", log_config=None, loop="none")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # uvicorn has no start-up event to await
        if task.done():
            task.result()
        await asyncio.sleep(0.005)
    yield sock.getsockname()[1]
    server.should_exit = True
    await task


async def _exchange(port: int, request: bytes) -> tuple[bytes, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), timeout=5)  # the server closes after a parse error
    writer.close()
    await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {k.decode().lower(): v.decode().strip() for k, _, v in (line.partition(b":") for line in lines)}
    return status, headers, body


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Name: 1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
async def test_unparsable_request_is_a_json_400_with_a_trace_id(port: int, request_bytes: bytes) -> None:
    status, headers, body = await _exchange(port, request_bytes)
    assert status.startswith(b"HTTP/1.1 400")
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    error = json.loads(body)["error"]
    assert (error["code"], error["status"], reasons_of(error)) == (400, "INVALID_ARGUMENT", ["INVALID_ARGUMENT"])
    assert error["message"] == MESSAGE
    assert trace_id_of(error) == headers["x-trace-id"]
    assert len(trace_id_of(error)) == 32


async def test_a_valid_request_is_served_as_usual(port: int) -> None:
    status, _, body = await _exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 200")
    assert body == b"ok"


async def test_the_edge_itself_answers_an_unparsable_request_with_json(tracer_provider: TracerProvider) -> None:
    # Through the real composition root: the edge's uvicorn is configured with this protocol (under the guard).
    settings = EdgeSettings(**as_identity(Identity.EDGE), edge_port=0, gate_target="127.0.0.1:9")
    edge = await bootstrap(settings, tracer_provider=tracer_provider)
    await edge.start()
    try:
        status, headers, body = await _exchange(edge.port, b"GARBAGE\r\n\r\n")
    finally:
        await edge.stop()
    assert status.startswith(b"HTTP/1.1 400")
    assert trace_id_of(json.loads(body)["error"]) == headers["x-trace-id"]
