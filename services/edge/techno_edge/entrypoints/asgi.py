"""The raw ASGI application: route, read, transcode, call, answer.

Raw ASGI rather than a framework because this is the hot path of every request and it needs almost nothing a
framework offers: routes come from the descriptors, bodies are small JSON documents read whole, and every answer
is one buffered JSON response, but for a server-streaming method's Server-Sent Events (``event_stream``). Every
response, success or failure, is built as a ``Response`` (or an ``EventStream``) first and sent in one place,
which is where the trace id header, the CORS headers and the metrics are added; an unexpected exception becomes a
JSON 500 there, never the server's own error page. ``HEAD`` is served wherever ``GET`` is, with the same headers
and no body.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message
from opentelemetry import trace

from techno_core.contract import MIN_REQUEST_TIMEOUT_SECONDS, REQUEST_TIMEOUT
from techno_core.tracing import current_trace_id
from techno_edge.adapters import transcoding
from techno_edge.adapters.bindings import Binding
from techno_edge.adapters.metrics import UNMATCHED, HttpMetrics
from techno_edge.adapters.sse import EventRenderer
from techno_edge.adapters.upstream import Readiness, Upstreams, call, open_stream
from techno_edge.domain import errors
from techno_edge.domain.errors import HttpError
from techno_edge.domain.routing import MethodNotAllowed, Router
from techno_edge.entrypoints.cors import Cors
from techno_edge.entrypoints.event_stream import CLIENT_CLOSED, EventStream, event_stream_headers

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

log = logging.getLogger(__name__)

HEALTHZ, READYZ, METRICS, OPENAPI = "/healthz", "/readyz", "/metrics", "/openapi.json"
_OPERATIONAL = frozenset((HEALTHZ, READYZ, METRICS, OPENAPI))
_JSON = b"application/json"
# The only request headers that reach the upstream, under their gRPC metadata names. Everything else stays here.
_FORWARDED = {b"x-api-key": "x-api-key", b"authorization": "authorization", b"idempotency-key": "idempotency-key"}
# Far above any real value (a key is ~50 characters, a JWT a few KB, an idempotency key at most 255) and, all
# together, under gRPC's default 8 KiB metadata limit: past it the gate's transport refuses the call as
# RESOURCE_EXHAUSTED, which the client would read as a rate limit (429).
_MAX_FORWARDED_BYTES = {b"x-api-key": 256, b"authorization": 6144, b"idempotency-key": 255}
_PRINTABLE_ASCII = bytes(range(0x20, 0x7F))
_CLIENT_CLOSED = CLIENT_CLOSED  # recorded in metrics when the client leaves before the answer


@dataclass(frozen=True)
class Limits:
    timeout_seconds: float
    max_body_bytes: int
    # A stream's deadline is a total one, its whole answer included, so it has its own, longer ceiling.
    stream_timeout_seconds: float = 300.0
    keepalive_seconds: float = 15.0  # a Server-Sent Events comment this often while the upstream is quiet


@dataclass
class Response:
    status: int
    body: bytes
    content_type: bytes = _JSON
    headers: tuple[tuple[str, str], ...] = ()


class _ClientGone(Exception):
    """The client disconnected before its answer (while its body was read, or a stream's first message awaited);
    nobody is left to answer. ``route`` is the matched route's template, for the metrics, when known."""

    def __init__(self, route: str = "") -> None:
        super().__init__(route)
        self.route = route


@dataclass
class _Request:
    """The few request headers the edge reads, collected in one pass over the header list."""

    content_length: bytes | None = None
    content_types: tuple[bytes, ...] = ()
    timeout: bytes | None = None
    metadata: tuple[tuple[str, str], ...] = ()


def _parse_headers(scope: Scope) -> _Request:
    request = _Request()
    metadata: list[tuple[str, str]] = []
    content_types: list[bytes] = []
    for name, value in scope["headers"]:
        if name == b"content-length":
            request.content_length = value
        elif name == b"content-type":
            content_types.append(value)
        elif name == b"x-request-timeout":
            request.timeout = value
        elif name in _FORWARDED:
            _check_forwarded(name, value)
            metadata_name = _FORWARDED[name]
            if any(key == metadata_name for key, _ in metadata):  # which one would count is anybody's guess
                raise errors.invalid_argument(
                    f"header {name.decode()} is sent more than once", errors.Violation(name.decode(), "repeated")
                )
            metadata.append((metadata_name, value.decode("ascii")))
    request.metadata = tuple(metadata)
    request.content_types = tuple(content_types)
    return request


def _check_forwarded(name: bytes, value: bytes) -> None:
    # gRPC metadata values must be printable ASCII; refusing here beats a failed call later.
    if value.translate(None, _PRINTABLE_ASCII):  # what is left once every printable byte is deleted, in C
        raise errors.malformed_forwarded_header(name.decode(), "is not printable ASCII")
    if len(value) > _MAX_FORWARDED_BYTES[name]:
        raise errors.malformed_forwarded_header(name.decode(), f"is over {_MAX_FORWARDED_BYTES[name]} characters")


def _timeout(header: bytes | None, ceiling: float) -> float:
    """A client may shorten the deadline (it will stop waiting anyway) but never extend it past the ceiling: a
    longer one is lowered to it. The form is the contract's (a plain decimal from 1 s, as the OpenAPI document
    says): float() alone takes exponents, signs, underscores and other scripts' digits, and a deadline too short
    to reach the gate would be a 504 of the client's making."""
    if header is None:
        return ceiling
    text = header.decode("latin-1")
    if not REQUEST_TIMEOUT.accepts(text):
        description = f"must be a decimal number of seconds from {MIN_REQUEST_TIMEOUT_SECONDS}, such as 2.5"
        raise errors.invalid_argument(
            f"X-Request-Timeout {description}", errors.Violation("X-Request-Timeout", description)
        )
    return min(float(text), ceiling)


def _check_content_type(values: tuple[bytes, ...]) -> None:
    """A body must be declared JSON (``application/json``, with at most ``charset=utf-8``): a form or text body
    parsed as JSON by accident is refused rather than guessed at."""
    if len(values) == 1:
        media_type, *parameters = values[0].decode("latin-1").split(";")
        if media_type.strip().lower() == "application/json" and all(
            _is_utf8_charset(parameter) for parameter in parameters
        ):
            return
    raise errors.unsupported_media_type()


def _is_utf8_charset(parameter: str) -> bool:
    name, _, value = parameter.partition("=")
    return name.strip().lower() == "charset" and value.strip().strip('"').lower() in ("utf-8", "utf8")


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
        cors: Cors | None = None,
    ) -> None:
        self._router = router
        self._upstreams = upstreams
        self._readiness = readiness
        self._metrics = metrics
        self._openapi = transcoding.dumps(openapi_document)  # rendered once: it never changes while running
        self._limits = limits
        self._cors = cors
        self._renderers = {
            route.target.grpc_path: EventRenderer(route.target)
            for route in router.routes
            if route.target.server_streaming
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # no websockets (uvicorn runs with ws="none") and no lifespan (the Edge object starts itself)
        started = time.perf_counter()
        method: str = scope["method"]
        route = UNMATCHED
        trace_id = current_trace_id()
        origin = _header(scope, b"origin") if self._cors is not None else None
        self._metrics.in_flight.inc()
        status = _CLIENT_CLOSED
        answered: float | None = None
        try:
            try:
                route, response = await self._dispatch(scope, receive, method, origin)
            except HttpError as error:
                response = _error_response(error, trace_id)
            except _ClientGone as gone:
                route = gone.route or route
                return
            except Exception:  # the last line of defence: log it all, answer a JSON 500 with the trace id
                log.exception("unhandled error serving %s %s", method, route)
                response = _error_response(errors.internal(), trace_id)
            cors_headers = () if self._cors is None else self._cors.response_headers(origin)
            if isinstance(response, EventStream):
                # A stream's duration is counted to its first event: how long the whole answer streams is the
                # answer's length, not the edge's latency.
                answered = time.perf_counter()
                status = await response.send_to(send, _stream_headers(trace_id, cors_headers), trace_id)
                return
            status = response.status
            await _send(send, response, trace_id, cors_headers)
        finally:
            self._metrics.in_flight.dec()
            self._metrics.observe(method, route, status, (answered or time.perf_counter()) - started)

    async def _dispatch(
        self, scope: Scope, receive: Receive, method: str, origin: str | None
    ) -> tuple[str, Response | EventStream]:
        path: str = scope["path"]
        # HEAD is GET without the body (uvicorn drops it; the headers, Content-Length included, are GET's).
        lookup = "GET" if method == "HEAD" else method
        if method == "OPTIONS" and self._cors is not None and self._cors.allows(origin):
            preflight = self._preflight(scope, path)
            if preflight is not None:
                return preflight
        if path in _OPERATIONAL:
            if lookup != "GET":
                raise errors.method_not_allowed(("GET", "HEAD"))
            return path, await self._operational(path, scope)
        found = self._router.match(lookup, _raw_path(scope))
        if found is None:
            raise errors.not_found()
        if isinstance(found, MethodNotAllowed):
            _name_span(method, found.template)
            refused = errors.method_not_allowed(_with_head(found.allowed))
            return found.template, _error_response(refused, current_trace_id())
        binding = found.route.target
        route = binding.template.source
        _name_span(method, route)
        try:
            return route, await self._forward(scope, receive, binding, found.values)
        except HttpError as error:
            return route, _error_response(error, current_trace_id())
        except _ClientGone:
            raise _ClientGone(route) from None

    def _preflight(self, scope: Scope, path: str) -> tuple[str, Response] | None:
        """A CORS preflight from an allowed origin: the methods the path serves. None when it is a plain OPTIONS
        (no ``Access-Control-Request-Method``), answered 405 like any other unserved method."""
        if _header(scope, b"access-control-request-method") is None:
            return None
        if path in _OPERATIONAL:
            return path, Response(204, b"", headers=Cors.preflight_headers(("GET", "HEAD")))
        found = self._router.match("OPTIONS", _raw_path(scope))  # no route serves OPTIONS: its methods, or None
        if not isinstance(found, MethodNotAllowed):
            raise errors.not_found()
        return found.template, Response(204, b"", headers=Cors.preflight_headers(_with_head(found.allowed)))

    async def _forward(
        self, scope: Scope, receive: Receive, binding: Binding, values: dict[str, str]
    ) -> Response | EventStream:
        headers = _parse_headers(scope)
        ceiling = self._limits.stream_timeout_seconds if binding.server_streaming else self._limits.timeout_seconds
        timeout = _timeout(headers.timeout, ceiling)
        body = b""
        if binding.body:
            body = await _read_body(receive, headers.content_length, self._limits.max_body_bytes)
            if body.strip():  # an empty body is an empty message, whatever it is declared as
                _check_content_type(headers.content_types)
        request = transcoding.build_request(binding, values, scope.get("query_string", b""), body)
        upstream = self._upstreams.call_for(binding)
        if upstream is None:
            raise HttpError(503, "UNAVAILABLE", "the edge is not started", (errors.UPSTREAM_NOT_STARTED,))
        if binding.server_streaming:
            return await self._open_stream(receive, binding, upstream, request, timeout, headers.metadata)
        response = await call(upstream, request, timeout=timeout, metadata=headers.metadata)
        return Response(200, transcoding.render_response(binding, response))

    async def _open_stream(
        self,
        receive: Receive,
        binding: Binding,
        upstream: Any,
        request: Message,
        timeout: float,
        metadata: tuple[tuple[str, str], ...],
    ) -> EventStream:
        """The stream, once its first message is in; raises its ``HttpError`` when it failed before."""
        deadline = asyncio.get_running_loop().time() + timeout
        stream = EventStream(
            open_stream(upstream, request, timeout=timeout, metadata=metadata),
            self._renderers[binding.grpc_path],
            receive,
            self._limits.keepalive_seconds,
            deadline,
        )
        if not await stream.start():
            raise _ClientGone
        return stream

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


def _raw_path(scope: Scope) -> str:
    # The raw path: matching must see %2F as it was sent (see domain.templates).
    raw_path = scope.get("raw_path")
    return raw_path.decode("latin-1") if raw_path else str(scope["path"])


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _with_head(methods: tuple[str, ...]) -> tuple[str, ...]:
    return (*methods, "HEAD") if "GET" in methods and "HEAD" not in methods else methods


def _accept(scope: Scope) -> str:
    # Several Accept headers make one comma-separated list (RFC 9110, section 5.3).
    return ",".join(value.decode("latin-1") for name, value in scope["headers"] if name == b"accept")


def _stream_headers(trace_id: str, extra_headers: tuple[tuple[str, str], ...]) -> list[tuple[bytes, bytes]]:
    headers = event_stream_headers()
    if trace_id:
        headers.append((b"x-trace-id", trace_id.encode()))
    headers.extend((name.encode(), value.encode("latin-1")) for name, value in extra_headers)
    return headers


def _error_response(error: HttpError, trace_id: str) -> Response:
    headers = error.headers
    if error.retry_after_seconds is not None:
        headers = (*headers, ("retry-after", str(error.retry_after_seconds)))
    return Response(error.status, transcoding.dumps(error.body(trace_id)), headers=headers)


async def _send(send: Send, response: Response, trace_id: str, extra_headers: tuple[tuple[str, str], ...] = ()) -> None:
    headers = []
    if response.status != 204:  # No Content has neither (RFC 9110, section 8.6)
        headers += [(b"content-type", response.content_type), (b"content-length", str(len(response.body)).encode())]
    if trace_id:
        headers.append((b"x-trace-id", trace_id.encode()))
    headers.extend((name.encode(), value.encode("latin-1")) for name, value in (*response.headers, *extra_headers))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})
