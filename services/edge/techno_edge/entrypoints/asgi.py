"""The raw ASGI application: route, read, transcode, call, answer.

Raw ASGI rather than a framework because this is the hot path of every request and it needs almost nothing a
framework offers: routes come from the descriptors, bodies are small JSON documents read whole, and every answer
is one buffered JSON response. Every response, success or failure, is built as a ``Response`` first and sent in
one place, which is where the trace id header and the metrics are added; an unexpected exception becomes a JSON
500 there, never the server's own error page.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace

from techno_core.tracing import current_trace_id
from techno_edge.adapters import transcoding
from techno_edge.adapters.bindings import Binding
from techno_edge.adapters.metrics import UNMATCHED, HttpMetrics
from techno_edge.adapters.upstream import Readiness, Upstreams, call
from techno_edge.domain import errors
from techno_edge.domain.errors import HttpError
from techno_edge.domain.routing import MethodNotAllowed, Router

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

log = logging.getLogger(__name__)

HEALTHZ, READYZ, METRICS, OPENAPI = "/healthz", "/readyz", "/metrics", "/openapi.json"
_JSON = b"application/json"
# The only request headers that reach the upstream, under their gRPC metadata names. Everything else stays here.
_FORWARDED = {b"x-api-key": "x-api-key", b"authorization": "authorization", b"idempotency-key": "idempotency-key"}
_CLIENT_CLOSED = 499  # nginx's convention, recorded in metrics when the client leaves before the answer


@dataclass(frozen=True)
class Limits:
    timeout_seconds: float
    max_body_bytes: int


@dataclass
class Response:
    status: int
    body: bytes
    content_type: bytes = _JSON
    headers: tuple[tuple[str, str], ...] = ()


class _ClientGone(Exception):
    """The client disconnected while its body was being read; nobody is left to answer."""


@dataclass
class _Request:
    """The few request headers the edge reads, collected in one pass over the header list."""

    content_length: bytes | None = None
    timeout: bytes | None = None
    metadata: tuple[tuple[str, str], ...] = ()


def _parse_headers(scope: Scope) -> _Request:
    request = _Request()
    metadata: list[tuple[str, str]] = []
    for name, value in scope["headers"]:
        if name == b"content-length":
            request.content_length = value
        elif name == b"x-request-timeout":
            request.timeout = value
        elif name in _FORWARDED:
            # gRPC metadata values must be printable ASCII; refusing here beats a failed call later.
            if not all(0x20 <= byte <= 0x7E for byte in value):
                raise errors.invalid_argument(f"header {name.decode()} is not printable ASCII")
            metadata.append((_FORWARDED[name], value.decode("ascii")))
    request.metadata = tuple(metadata)
    return request


def _timeout(header: bytes | None, ceiling: float) -> float:
    """A client may shorten the deadline (it will stop waiting anyway) but never extend it past the ceiling."""
    if header is None:
        return ceiling
    try:
        requested = float(header)
    except ValueError:
        requested = math.nan
    if not math.isfinite(requested) or requested <= 0:
        raise errors.invalid_argument(
            "X-Request-Timeout must be a positive number of seconds",
            errors.Violation("X-Request-Timeout", "must be a positive number of seconds"),
        )
    return min(requested, ceiling)


async def _read_body(receive: Receive, content_length: bytes | None, limit: int) -> bytes:
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise errors.invalid_argument("Content-Length is not a number") from None
        if declared > limit:  # refused before reading a byte of it
            raise errors.body_too_large(limit)
    # Also counted as it streams: a chunked body has no Content-Length, and a declared one may lie.
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise errors.body_too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _name_span(method: str, route: str) -> None:
    # The middleware named the span after the raw path before routing; the template keeps span names bounded.
    span = trace.get_current_span()
    if span.is_recording():
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)


class EdgeApp:
    def __init__(
        self,
        router: Router[Binding],
        upstreams: Upstreams,
        readiness: Readiness,
        metrics: HttpMetrics,
        openapi_document: dict[str, Any],
        limits: Limits,
    ) -> None:
        self._router = router
        self._upstreams = upstreams
        self._readiness = readiness
        self._metrics = metrics
        self._openapi = transcoding.dumps(openapi_document)  # rendered once: it never changes while running
        self._limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # no websockets (uvicorn runs with ws="none") and no lifespan (the Edge object starts itself)
        started = time.perf_counter()
        method: str = scope["method"]
        route = UNMATCHED
        trace_id = current_trace_id()
        self._metrics.in_flight.inc()
        status = _CLIENT_CLOSED
        try:
            try:
                route, response = await self._dispatch(scope, receive, method)
            except HttpError as error:
                response = _error_response(error, trace_id)
            except _ClientGone:
                return
            except Exception:  # the last line of defence: log it all, answer a JSON 500 with the trace id
                log.exception("unhandled error serving %s %s", method, route)
                response = _error_response(errors.internal(), trace_id)
            status = response.status
            await _send(send, response, trace_id)
        finally:
            self._metrics.in_flight.dec()
            self._metrics.observe(method, route, status, time.perf_counter() - started)

    async def _dispatch(self, scope: Scope, receive: Receive, method: str) -> tuple[str, Response]:
        path: str = scope["path"]
        if path in (HEALTHZ, READYZ, METRICS, OPENAPI):
            if method != "GET":
                raise errors.method_not_allowed(("GET",))
            return path, await self._operational(path, scope)
        # The raw path: matching must see %2F as it was sent (see domain.templates).
        raw_path = scope.get("raw_path")
        found = self._router.match(method, raw_path.decode("latin-1") if raw_path else path)
        if found is None:
            raise errors.not_found()
        if isinstance(found, MethodNotAllowed):
            _name_span(method, found.template)
            return found.template, _error_response(errors.method_not_allowed(found.allowed), current_trace_id())
        binding = found.route.target
        route = binding.template.source
        _name_span(method, route)
        try:
            return route, await self._forward(scope, receive, binding, found.values)
        except HttpError as error:
            return route, _error_response(error, current_trace_id())

    async def _forward(self, scope: Scope, receive: Receive, binding: Binding, values: dict[str, str]) -> Response:
        headers = _parse_headers(scope)
        timeout = _timeout(headers.timeout, self._limits.timeout_seconds)
        body = b""
        if binding.body:
            body = await _read_body(receive, headers.content_length, self._limits.max_body_bytes)
        request = transcoding.build_request(binding, values, scope.get("query_string", b""), body)
        upstream = self._upstreams.call_for(binding)
        if upstream is None:
            raise HttpError(503, "UNAVAILABLE", "the edge is not started", (errors.UPSTREAM_NOT_STARTED,))
        response = await call(upstream, request, timeout=timeout, metadata=headers.metadata)
        return Response(200, transcoding.render_response(binding, response))

    async def _operational(self, path: str, scope: Scope) -> Response:
        if path == HEALTHZ:
            return Response(200, b'{"status":"ok"}')
        if path == READYZ:
            ready = await self._readiness.ready()
            return Response(200, b'{"status":"ready"}') if ready else Response(503, b'{"status":"not ready"}')
        if path == METRICS:  # OpenMetrics (with exemplars) to whoever asks for it, as prometheus_client does
            body, content_type = self._metrics.render(_accept(scope))
            return Response(200, body, content_type.encode())
        return Response(200, self._openapi)


def _accept(scope: Scope) -> str:
    # Several Accept headers make one comma-separated list (RFC 9110, section 5.3).
    return ",".join(value.decode("latin-1") for name, value in scope["headers"] if name == b"accept")


def _error_response(error: HttpError, trace_id: str) -> Response:
    headers = error.headers
    if error.retry_after_seconds is not None:
        headers = (*headers, ("retry-after", str(error.retry_after_seconds)))
    return Response(error.status, transcoding.dumps(error.body(trace_id)), headers=headers)


async def _send(send: Send, response: Response, trace_id: str) -> None:
    headers = [
        (b"content-type", response.content_type),
        (b"content-length", str(len(response.body)).encode()),
    ]
    if trace_id:
        headers.append((b"x-trace-id", trace_id.encode()))
    headers.extend((name.encode(), value.encode("latin-1")) for name, value in response.headers)
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})
