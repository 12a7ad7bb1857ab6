"""Slow and abusive clients against the real edge (uvicorn on loopback), driven from raw sockets: a request that
never finishes its headers or its body, an idle keep-alive connection, more connections than the edge accepts,
headers too large or too many. Each is shed within its bound, answered where an answer makes sense, counted in
``edge_connections_shed_total`` and logged once per kind, not once per connection. Bounds here are small (half a
second, twenty connections) and every wait is capped, so a regression fails in seconds instead of hanging."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvloop
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from techno_core.identity import Identity
from techno_edge.bootstrap import EdgeServer, bootstrap
from techno_edge.settings import EdgeSettings
from tests.rest_errors import reasons_of
from tests.tls import as_identity
from tests.waiting import eventually

WAIT = 5.0  # generous: every bound under test is 0.5 s (or shedding is immediate)
HOST = "127.0.0.1"
SHED = "edge_connections_shed_total"

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@asynccontextmanager
async def running_edge(tracer_provider: TracerProvider, **overrides: Any) -> AsyncIterator[tuple[EdgeServer, Any]]:
    """The edge with small bounds. The gate is never called: every request here is shed, or /healthz."""
    values: dict[str, Any] = {
        **as_identity(Identity.EDGE),
        "edge_port": 0,
        "edge_health_port": 0,
        "gate_target": "127.0.0.1:9",
        "shutdown_grace_seconds": 1.0,
        "edge_header_timeout_seconds": 0.5,
        "edge_body_timeout_seconds": 0.5,
        "edge_keep_alive_timeout_seconds": 0.5,
        "edge_max_connections": 20,
        "edge_max_header_bytes": 4096,
        "edge_max_headers": 20,
        **overrides,
    }
    registry = CollectorRegistry()
    server = await bootstrap(EdgeSettings(**values), tracer_provider=tracer_provider, registry=registry)
    await server.start()
    try:
        yield server, lambda reason: registry.get_sample_value(SHED, {"reason": reason}) or 0.0
    finally:
        await server.stop()


async def connect(port: int) -> Connection:
    return await asyncio.open_connection(HOST, port)


async def read_until_closed(connection: Connection) -> bytes:
    """Everything the edge sends until it closes the connection; fails the test if it is still open after WAIT."""
    reader, _ = connection
    chunks: list[bytes] = []

    async def drain() -> None:
        while chunk := await reader.read(65536):
            chunks.append(chunk)

    try:
        await asyncio.wait_for(drain(), WAIT)
    except ConnectionResetError:
        pass  # closed with unread bytes of ours in its buffer: a reset is a close too
    except TimeoutError:
        pytest.fail(f"the edge kept the connection open for {WAIT} s; received {b''.join(chunks)[:200]!r}")
    return b"".join(chunks)


def close(connection: Connection) -> None:
    connection[1].close()


def status_and_json(response: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body else {}


async def request(port: int, raw: bytes) -> bytes:
    connection = await connect(port)
    connection[1].write(raw)
    try:
        return await read_until_closed(connection)
    finally:
        close(connection)


async def test_partial_headers_are_answered_408_and_closed_after_the_header_timeout(
    tracer_provider: TracerProvider,
) -> None:
    async with running_edge(tracer_provider) as (edge, shed):
        response = await request(edge.port, b"GET /healthz HTTP/1.1\r\nHost: edge\r\nX-Slow: ")

        status, body = status_and_json(response)
        assert status == 408
        assert reasons_of(body["error"]) == ["REQUEST_TIMEOUT"]
        assert shed("header_timeout") == 1


async def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(
    tracer_provider: TracerProvider,
) -> None:
    async with running_edge(tracer_provider) as (edge, shed):
        connection = await connect(edge.port)
        try:
            assert await read_until_closed(connection) == b""
        finally:
            close(connection)
        assert shed("header_timeout") == 1


async def test_dribbling_header_bytes_does_not_extend_the_header_timeout(tracer_provider: TracerProvider) -> None:
    """Slowloris: one byte every 50 ms keeps the connection busy but the deadline runs from the first byte."""
    async with running_edge(tracer_provider) as (edge, shed):
        reader, writer = connection = await connect(edge.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nX-Drip: ")

        async def drip() -> None:
            while not reader.at_eof():
                writer.write(b"a")
                await asyncio.sleep(0.05)

        dripping = asyncio.create_task(drip())
        try:
            status, _ = status_and_json(await read_until_closed(connection))
        finally:
            dripping.cancel()
            close(connection)
        assert status == 408
        assert shed("header_timeout") == 1


async def test_a_body_shorter_than_its_content_length_is_answered_408_within_the_body_timeout(
    tracer_provider: TracerProvider,
) -> None:
    async with running_edge(tracer_provider) as (edge, shed):
        response = await request(
            edge.port,
            b"POST /v1/process HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"action": "summ',
        )

        status, body = status_and_json(response)
        assert status == 408
        assert reasons_of(body["error"]) == ["REQUEST_TIMEOUT"]
        assert shed("body_timeout") == 1


async def test_an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout(
    tracer_provider: TracerProvider,
) -> None:
    async with running_edge(tracer_provider, edge_header_timeout_seconds=30.0) as (edge, shed):
        reader, writer = connection = await connect(edge.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: edge\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        assert head.startswith(b"HTTP/1.1 200")
        try:
            await read_until_closed(connection)  # the body, then the close: uvicorn's own default would be 5 s
        finally:
            close(connection)
        assert shed("header_timeout") == 0  # idle between requests is not a slow request


async def test_connections_over_the_limit_are_refused_at_once_and_counted(
    tracer_provider: TracerProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="techno_edge")
    # A long header timeout: the held connections stay, and a refusal cannot be mistaken for a timeout.
    async with running_edge(tracer_provider, edge_header_timeout_seconds=30.0) as (edge, shed):
        held = [await connect(edge.port) for _ in range(20)]
        try:
            excess = [await connect(edge.port) for _ in range(15)]
            for connection in excess:
                response = await read_until_closed(connection)
                close(connection)
                if response:  # the refusal, when the client reads it before the close
                    status, body = status_and_json(response)
                    assert (status, reasons_of(body["error"])) == (503, ["TOO_MANY_CONNECTIONS"])
            assert shed("too_many_connections") == 15
            for connection in held:
                assert not connection[0].at_eof()
        finally:
            for connection in held:
                close(connection)
        # The slots come back when the held connections go.
        await eventually(lambda: edge.open_connections() == 0, within=WAIT, every=0.01)
        status, _ = status_and_json(await request(edge.port, b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n"))
        assert status == 200
    lines = [r for r in caplog.records if getattr(r, "shed_reason", None) == "too_many_connections"]
    # One line at the first refusal, one for the rest of the window (flushed at stop): never one per connection.
    assert len(lines) == 2
    assert sum(getattr(r, "shed_count", 0) for r in lines) == 15


async def test_health_answers_on_its_own_port_while_the_main_port_is_full(tracer_provider: TracerProvider) -> None:
    async with running_edge(tracer_provider, edge_header_timeout_seconds=30.0) as (edge, _):
        held = [await connect(edge.port) for _ in range(20)]
        try:
            refused = await request(edge.port, b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
            assert not refused or status_and_json(refused)[0] == 503
            for path in (b"/healthz", b"/metrics"):
                response = await request(edge.health_port, b"GET " + path + b" HTTP/1.1\r\nConnection: close\r\n\r\n")
                assert response.startswith(b"HTTP/1.1 200"), response[:200]
            assert b'edge_connections_shed_total{reason="too_many_connections"} 1.0' in response
            # The health port serves only the operational paths.
            other = await request(edge.health_port, b"GET /v1/actions HTTP/1.1\r\nConnection: close\r\n\r\n")
            assert status_and_json(other)[0] == 404
        finally:
            for connection in held:
                close(connection)


async def test_headers_over_the_byte_limit_are_answered_431(tracer_provider: TracerProvider) -> None:
    async with running_edge(tracer_provider) as (edge, shed):
        response = await request(edge.port, b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 8192 + b"\r\n\r\n")

        status, body = status_and_json(response)
        assert status == 431
        assert reasons_of(body["error"]) == ["HEADERS_TOO_LARGE"]
        assert shed("headers_too_large") == 1


async def test_a_huge_unfinished_header_is_refused_before_it_ends(tracer_provider: TracerProvider) -> None:
    """4 MB of one header value with no end: refused while it streams, not buffered until the timeout."""
    async with running_edge(tracer_provider, edge_header_timeout_seconds=30.0) as (edge, shed):
        reader, writer = connection = await connect(edge.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nX-Big: ")
        try:
            for _ in range(64):
                if reader.at_eof():
                    break
                writer.write(b"a" * 65536)
                await writer.drain()
        except ConnectionError:
            pass  # refused mid-stream
        try:
            response = await read_until_closed(connection)
        finally:
            close(connection)
        # Closed while the client is still sending, the socket resets and the client may lose the 431 it was sent.
        assert not response or status_and_json(response)[0] == 431
        assert shed("headers_too_large") == 1


async def test_too_many_headers_are_answered_431(tracer_provider: TracerProvider) -> None:
    async with running_edge(tracer_provider) as (edge, shed):
        headers = b"".join(b"X-H%d: v\r\n" % i for i in range(25))
        response = await request(edge.port, b"GET /healthz HTTP/1.1\r\n" + headers + b"\r\n")

        status, body = status_and_json(response)
        assert status == 431
        assert reasons_of(body["error"]) == ["TOO_MANY_HEADERS"]
        assert shed("too_many_headers") == 1


async def test_requests_within_every_bound_are_served_on_one_connection(tracer_provider: TracerProvider) -> None:
    """The bounds do not touch ordinary traffic: keep-alive requests with headers near the limits all pass."""
    async with running_edge(tracer_provider) as (edge, shed):
        reader, writer = await connect(edge.port)
        headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(15))
        try:
            for _ in range(3):
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: edge\r\n" + headers + b"\r\n")
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
                assert head.startswith(b"HTTP/1.1 200")
                await asyncio.wait_for(reader.readexactly(15), WAIT)  # {"status":"ok"}
                await asyncio.sleep(0.3)  # idle below the keep-alive timeout
        finally:
            writer.close()
        assert all(shed(reason) == 0 for reason in ("header_timeout", "body_timeout", "headers_too_large"))


def test_a_connection_limit_above_the_descriptor_limit_is_refused_at_start(tracer_provider: TracerProvider) -> None:
    import resource

    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    hard = 2**30 if limits[1] == resource.RLIM_INFINITY else limits[1]
    settings = EdgeSettings(**as_identity(Identity.EDGE), edge_port=0, edge_max_connections=hard + 1)

    async def start() -> None:
        from techno_core.runner import StartupError

        server = await bootstrap(settings, tracer_provider=tracer_provider)
        with pytest.raises(StartupError, match="TECHNO_EDGE_MAX_CONNECTIONS"):
            await server.start()
        await server.stop()

    asyncio.run(start())
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == limits  # not raised for a setting that cannot fit


def test_the_bounds_hold_on_uvloop(tracer_provider: TracerProvider) -> None:
    """``python -m techno_edge`` runs on uvloop, whose transports and timers are its own: a slow header, a short
    body and a refused connection, there."""

    async def scenario() -> tuple[int, int, bytes, float]:
        async with running_edge(tracer_provider, edge_max_connections=2) as (edge, shed):
            slow_header = await request(edge.port, b"GET /healthz HTTP/1.1\r\nX-Slow: ")
            short_body = await request(edge.port, b"POST /v1/process HTTP/1.1\r\nContent-Length: 9\r\n\r\n{")
            held = [await connect(edge.port) for _ in range(2)]
            try:
                refused = await request(edge.port, b"GET /healthz HTTP/1.1\r\n\r\n")
            finally:
                for connection in held:
                    close(connection)
            return (
                status_and_json(slow_header)[0],
                status_and_json(short_body)[0],
                refused,
                shed("too_many_connections"),
            )

    header_status, body_status, refused, refusals = uvloop.run(scenario())
    assert (header_status, body_status) == (408, 408)
    assert not refused or status_and_json(refused)[0] == 503
    assert refusals == 1
