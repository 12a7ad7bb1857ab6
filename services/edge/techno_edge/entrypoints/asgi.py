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
from typing import Any

from google.protobuf.message import Message

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
from techno_edge.entrypoints.event_stream import CLIENT_CLOSED, EventStream
from techno_edge.entrypoints.http_io import (
    ClientGone,
    Limits,
    Receive,
    Response,
    Scope,
    Send,
    check_content_type,
    error_response,
    header,
    name_span,
    parse_headers,
    read_body,
    request_timeout,
    send_response,
)

__all__ = ["HEALTHZ", "METRICS", "OPENAPI", "READYZ", "EdgeApp", "Limits", "Receive", "Scope", "Send"]

log = logging.getLogger(__name__)

HEALTHZ, READYZ, METRICS, OPENAPI = "/healthz", "/readyz", "/metrics", "/openapi.json"
_OPERATIONAL = frozenset((HEALTHZ, READYZ, METRICS, OPENAPI))


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
        origin = header(scope, b"origin") if self._cors is not None else None
        self._metrics.in_flight.inc()
        status = CLIENT_CLOSED
        answered: float | None = None
        try:
            try:
                route, response = await self._dispatch(scope, receive, method, origin)
            except HttpError as error:
                response = error_response(error, trace_id)
            except ClientGone as gone:
                route = gone.route or route
                return
            except Exception:  # the last line of defence: log it all, answer a JSON 500 with the trace id
                log.exception("unhandled error serving %s %s", method, route)
                response = error_response(errors.internal(), trace_id)
            cors_headers = () if self._cors is None else self._cors.response_headers(origin)
            if isinstance(response, EventStream):
                # A stream's duration is counted to its first event: how long the whole answer streams is the
                # answer's length, not the edge's latency.
                answered = time.perf_counter()
                status = await response.send_to(send, trace_id, cors_headers)
                return
            status = response.status
            await send_response(send, response, trace_id, cors_headers)
        finally:
            self._metrics.in_flight.dec()
            self._metrics.observe(method, route, status, (answered or time.perf_counter()) - started)

    async def _dispatch(
        self, scope: Scope, receive: Receive, method: str, origin: str | None
    ) -> tuple[str, Response | EventStream[Message]]:
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
            name_span(method, found.template)
            refused = errors.method_not_allowed(_with_head(found.allowed))
            return found.template, error_response(refused, current_trace_id())
        binding = found.route.target
        route = binding.template.source
        name_span(method, route)
        try:
            return route, await self._forward(scope, receive, binding, found.values)
        except HttpError as error:
            return route, error_response(error, current_trace_id())
        except ClientGone:
            raise ClientGone(route) from None

    def _preflight(self, scope: Scope, path: str) -> tuple[str, Response] | None:
        """A CORS preflight from an allowed origin: the methods the path serves. None when it is a plain OPTIONS
        (no ``Access-Control-Request-Method``), answered 405 like any other unserved method."""
        if header(scope, b"access-control-request-method") is None:
            return None
        if path in _OPERATIONAL:
            return path, Response(204, b"", headers=Cors.preflight_headers(("GET", "HEAD")))
        found = self._router.match("OPTIONS", _raw_path(scope))  # no route serves OPTIONS: its methods, or None
        if not isinstance(found, MethodNotAllowed):
            raise errors.not_found()
        return found.template, Response(204, b"", headers=Cors.preflight_headers(_with_head(found.allowed)))

    async def _forward(
        self, scope: Scope, receive: Receive, binding: Binding, values: dict[str, str]
    ) -> Response | EventStream[Message]:
        headers = parse_headers(scope)
        ceiling = self._limits.stream_timeout_seconds if binding.server_streaming else self._limits.timeout_seconds
        timeout = request_timeout(headers.timeout, ceiling)
        body = b""
        if binding.body:
            body = await read_body(receive, headers.content_length, self._limits.max_body_bytes)
            if body.strip():  # an empty body is an empty message, whatever it is declared as
                check_content_type(headers.content_types)
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
    ) -> EventStream[Message]:
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
            raise ClientGone
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


def _with_head(methods: tuple[str, ...]) -> tuple[str, ...]:
    return (*methods, "HEAD") if "GET" in methods and "HEAD" not in methods else methods


def _accept(scope: Scope) -> str:
    # Several Accept headers make one comma-separated list (RFC 9110, section 5.3).
    return ",".join(value.decode("latin-1") for name, value in scope["headers"] if name == b"accept")
