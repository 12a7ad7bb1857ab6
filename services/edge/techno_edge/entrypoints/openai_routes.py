"""OpenAI-compatible routes in front of the edge: ``POST /v1/chat/completions`` (plain and streamed),
``GET /v1/models`` and ``GET /v1/models/{model}``, so the official OpenAI SDKs work against Techno by changing
``base_url``.

Every other request goes to the edge's own app untouched. These routes are governed like ``/v1/process``: the
client's ``Authorization: Bearer <Techno key>`` and ``Idempotency-Key`` are forwarded as the same gRPC metadata
(checked the same way), ``X-Request-Timeout`` lowers the deadline, the body limit is the edge's, CORS is the
edge's setting, and the gate decides, limits and audits. The request is read and the answer sent by the same
code as every other route's (``http_io``); the mapping of the request and its answers is
``techno_edge.domain.openai_chat``. The context the policy is evaluated in comes from the ``X-Techno-Context``
header, else the configured default.

A streamed answer is the edge's one event-stream loop (``event_stream``) with OpenAI's framing
(``openai_compat.ChunkRenderer``): sent once the gate's first message is in, so a refusal (401, 403, 429 …) is
still a plain HTTP error the SDK raises as such; a failure after that is one ``data:`` event carrying the error
object, then the end, as OpenAI does; ``: keep-alive`` comments while the gate is quiet (the SDKs skip comments).
A client that disconnects cancels the gate call, streamed or not. Metrics and spans name the route
(``/v1/chat/completions``, ``/v1/models``, ``/v1/models/{model}``) like every other route's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from techno_core.tracing import current_trace_id
from techno_edge.adapters import json_input, transcoding
from techno_edge.adapters.metrics import HttpMetrics
from techno_edge.adapters.openai_compat import CallOptions, ChunkRenderer
from techno_edge.domain import errors
from techno_edge.domain.errors import HttpError
from techno_edge.domain.openai_chat import (
    ChatRequest,
    Completion,
    TextChunk,
    completion_body,
    error_body,
    model_body,
    model_not_found,
    models_body,
    parse_chat_request,
)
from techno_edge.entrypoints.cors import ANY_HEADER, Cors
from techno_edge.entrypoints.event_stream import CLIENT_CLOSED, EventStream, MessageStream
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
    unless_disconnected,
)

CHAT_COMPLETIONS = "/v1/chat/completions"
MODELS = "/v1/models"
MODEL = "/v1/models/{model}"
_MODEL_PREFIX = MODELS + "/"
_ALLOWED = {CHAT_COMPLETIONS: ("POST",), MODELS: ("GET", "HEAD"), MODEL: ("GET", "HEAD")}
CONTEXT_HEADER = b"x-techno-context"

log = logging.getLogger(__name__)

AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ChatGate(Protocol):
    """The gate as these routes use it (``techno_edge.adapters.openai_compat.GateChat``; a fake in tests)."""

    async def complete(self, chat: ChatRequest, context_id: str, options: CallOptions) -> Completion: ...

    def stream(
        self, chat: ChatRequest, context_id: str, options: CallOptions
    ) -> MessageStream[TextChunk | Completion]: ...

    async def models(self, options: CallOptions) -> list[str]: ...


@dataclasses.dataclass(frozen=True)
class _Request:
    route: str  # the template, for metrics and spans
    model: str  # the ``{model}`` of ``/v1/models/{model}``
    scope: Scope
    receive: Receive
    trace_id: str


def _route_of(path: str) -> tuple[str, str] | None:
    """The route's template and its ``{model}``, or None when the path is not one of these routes."""
    if path in _ALLOWED:
        return path, ""
    model = path.removeprefix(_MODEL_PREFIX)
    if model != path and model and "/" not in model:
        return MODEL, model
    return None


class OpenAIRoutes:
    def __init__(
        self,
        app: AsgiApp,
        gate: ChatGate,
        metrics: HttpMetrics,
        limits: Limits,
        *,
        default_context: str,
        cors: Cors | None = None,
    ) -> None:
        self._app = app
        self._gate = gate
        self._metrics = metrics
        self._limits = limits
        self._default_context = default_context
        self._cors = cors

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        matched = _route_of(scope["path"]) if scope["type"] == "http" else None
        if matched is None:
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        method: str = scope["method"]
        request = _Request(matched[0], matched[1], scope, receive, current_trace_id())
        name_span(method, request.route)
        origin = header(scope, b"origin") if self._cors is not None else None
        cors_headers = () if self._cors is None else self._cors.response_headers(origin)
        self._metrics.in_flight.inc()
        status, answered = CLIENT_CLOSED, None
        try:
            answer = await self._answer(request, origin)
            if isinstance(answer, EventStream):
                # Counted to the first event, as the edge's other streams are: the rest is the answer's length.
                answered = time.perf_counter()
                status = await answer.send_to(send, request.trace_id, cors_headers)
            else:
                status = answer.status
                await send_response(send, answer, request.trace_id, cors_headers)
        except ClientGone:
            pass
        finally:
            self._metrics.in_flight.dec()
            self._metrics.observe(method, request.route, status, (answered or time.perf_counter()) - started)

    async def _answer(self, request: _Request, origin: str | None) -> Response | EventStream[TextChunk | Completion]:
        """The answer to send; an ``HttpError`` becomes OpenAI's error object."""
        method = request.scope["method"]
        try:
            allowed = _ALLOWED[request.route]
            if method == "OPTIONS" and self._is_preflight(request.scope, origin):
                return Response(204, b"", headers=Cors.preflight_headers(allowed, ANY_HEADER))
            if ("GET" if method == "HEAD" else method) not in allowed:
                raise errors.method_not_allowed(allowed)
            if request.route == CHAT_COMPLETIONS:
                return await self._chat(request)
            return await self._models(request)
        except HttpError as error:
            return _openai_error(error, request.trace_id)
        except ClientGone:
            raise  # nobody is left to answer
        except Exception:  # as the edge app does: logged whole, answered as a 500 with the trace id only
            log.exception("unhandled error serving %s %s", method, request.route)
            return _openai_error(errors.internal(), request.trace_id)

    def _is_preflight(self, scope: Scope, origin: str | None) -> bool:
        """A CORS preflight from an allowed origin; any other OPTIONS is a 405 like the edge's own routes'."""
        return (
            self._cors is not None
            and self._cors.allows(origin)
            and header(scope, b"access-control-request-method") is not None
        )

    async def _models(self, request: _Request) -> Response:
        headers = parse_headers(request.scope)
        options = CallOptions(headers.metadata, request_timeout(headers.timeout, self._limits.timeout_seconds))
        providers = await unless_disconnected(request.receive, self._gate.models(options))
        if request.route == MODELS:
            return Response(200, transcoding.dumps(models_body(providers)))
        if request.model not in providers:
            raise model_not_found(request.model)
        return Response(200, transcoding.dumps(model_body(request.model)))

    async def _chat(self, request: _Request) -> Response | EventStream[TextChunk | Completion]:
        headers = parse_headers(request.scope)
        body = await read_body(request.receive, headers.content_length, self._limits.max_body_bytes)
        if body.strip():  # an empty body is refused below as not an object, whatever its type
            check_content_type(headers.content_types)
        chat = parse_chat_request(json_input.loads(body) if body.strip() else None)
        context = header(request.scope, CONTEXT_HEADER) or self._default_context
        # A stream's deadline covers its whole answer: the edge's longer ceiling for streams.
        ceiling = self._limits.stream_timeout_seconds if chat.stream else self._limits.timeout_seconds
        options = CallOptions(headers.metadata, request_timeout(headers.timeout, ceiling))
        if chat.stream:
            return await self._open_stream(request, chat, context, options)
        completion = await unless_disconnected(request.receive, self._gate.complete(chat, context, options))
        reply = completion_body(completion, created=int(time.time()), model=chat.model)
        return Response(200, transcoding.dumps(reply))

    async def _open_stream(
        self, request: _Request, chat: ChatRequest, context: str, options: CallOptions
    ) -> EventStream[TextChunk | Completion]:
        """The stream, once the gate's first message is in; raises its ``HttpError`` when it failed before."""
        deadline = asyncio.get_running_loop().time() + options.timeout
        stream = EventStream(
            self._gate.stream(chat, context, options),
            ChunkRenderer(request.trace_id, int(time.time()), chat.model, chat.include_usage),
            request.receive,
            self._limits.keepalive_seconds,
            deadline,
        )
        if not await stream.start():
            raise ClientGone
        return stream


def _openai_error(error: HttpError, trace_id: str) -> Response:
    """The edge's error response (status, ``Retry-After``, ``Allow``) with OpenAI's error object as its body."""
    return error_response(error, trace_id, transcoding.dumps(error_body(error, trace_id)))
