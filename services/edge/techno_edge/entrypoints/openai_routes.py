"""OpenAI-compatible routes in front of the edge: ``POST /v1/chat/completions`` (plain and streamed) and
``GET /v1/models``, so the official OpenAI SDKs work against Techno by changing ``base_url``.

Every other request goes to the edge's own app untouched. These routes are governed like ``/v1/process``: the
client's ``Authorization: Bearer <Techno key>`` and ``Idempotency-Key`` are forwarded as the same gRPC metadata
(checked the same way), ``X-Request-Timeout`` lowers the deadline, the body limit is the edge's, and the gate
decides, limits and audits. The mapping of the request and its answers is ``techno_edge.domain.openai_chat``.
The context the policy is evaluated in comes from the ``X-Techno-Context`` header, else the configured default.

A streamed answer is sent as Server-Sent Events once the gate's first message is in, so a refusal (401, 403,
429 …) is still a plain HTTP error the SDK raises as such; a failure after that is one ``data:`` event carrying
the error object, then the end, as OpenAI does. A client that disconnects cancels the gate call, streamed or
not. Metrics and spans name the route (``/v1/chat/completions``, ``/v1/models``) like every other route's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from typing import Any, Protocol, TypeVar

from techno_core.tracing import current_trace_id
from techno_edge.adapters import json_input, sse, transcoding
from techno_edge.adapters.metrics import HttpMetrics
from techno_edge.adapters.openai_compat import CallOptions
from techno_edge.domain import errors
from techno_edge.domain.errors import HttpError
from techno_edge.domain.openai_chat import (
    ChatRequest,
    ChunkWriter,
    Completion,
    TextChunk,
    completion_body,
    error_body,
    models_body,
    parse_chat_request,
)

# The edge app's own request handling, reused so these routes read and forward exactly as every other route does.
from techno_edge.entrypoints.asgi import (
    Limits,
    Receive,
    Response,
    Scope,
    Send,
    _check_content_type,
    _ClientGone,
    _error_response,
    _header,
    _name_span,
    _parse_headers,
    _read_body,
    _send,
    _timeout,
)
from techno_edge.entrypoints.event_stream import CLIENT_CLOSED, _disconnected, event_stream_headers

CHAT_COMPLETIONS = "/v1/chat/completions"
MODELS = "/v1/models"
_ALLOWED = {CHAT_COMPLETIONS: ("POST",), MODELS: ("GET", "HEAD")}
CONTEXT_HEADER = b"x-techno-context"
_DONE = b"data: [DONE]\n\n"
# As for the edge's other streams: once the deadline has passed, how long a blocked send may still take.
_SEND_GRACE_SECONDS = 1.0

log = logging.getLogger(__name__)

T = TypeVar("T")
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclasses.dataclass
class _Answer:
    """What the metrics record: the status, and when a stream's first event went out."""

    status: int = CLIENT_CLOSED
    first_event_at: float | None = None


class ChatGate(Protocol):
    """The gate as these routes use it (``techno_edge.adapters.openai_compat.GateChat``; a fake in tests)."""

    async def complete(self, chat: ChatRequest, context_id: str, options: CallOptions) -> Completion: ...

    def stream(
        self, chat: ChatRequest, context_id: str, options: CallOptions
    ) -> AsyncGenerator[TextChunk | Completion, None]: ...

    async def models(self, options: CallOptions) -> list[str]: ...


class OpenAIRoutes:
    def __init__(
        self, app: AsgiApp, gate: ChatGate, metrics: HttpMetrics, limits: Limits, *, default_context: str
    ) -> None:
        self._app = app
        self._gate = gate
        self._metrics = metrics
        self._limits = limits
        self._default_context = default_context

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = scope.get("path") if scope["type"] == "http" else None
        if route not in _ALLOWED:
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        method: str = scope["method"]
        trace_id = current_trace_id()
        _name_span(method, route)
        self._metrics.in_flight.inc()
        answer = _Answer()
        try:
            answer.status = await self._serve(route, scope, receive, send, trace_id, answer)
        except _ClientGone:
            pass
        finally:
            self._metrics.in_flight.dec()
            ended = answer.first_event_at or time.perf_counter()
            self._metrics.observe(method, route, answer.status, ended - started)

    async def _serve(
        self, route: str, scope: Scope, receive: Receive, send: Send, trace_id: str, answer: _Answer
    ) -> int:
        """The answer, sent; returns its status. An ``HttpError`` becomes OpenAI's error object."""
        try:
            if ("GET" if scope["method"] == "HEAD" else scope["method"]) not in _ALLOWED[route]:
                raise errors.method_not_allowed(_ALLOWED[route])
            headers = _parse_headers(scope)
            options = CallOptions(headers.metadata, _timeout(headers.timeout, self._limits.timeout_seconds))
            if route == MODELS:
                providers = await _unless_gone(receive, self._gate.models(options))
                return await _answer(send, Response(200, transcoding.dumps(models_body(providers))), trace_id)
            body = await _read_body(receive, headers.content_length, self._limits.max_body_bytes)
            if body.strip():  # an empty body is refused below as not an object, whatever its type
                _check_content_type(headers.content_types)
            chat = parse_chat_request(json_input.loads(body) if body.strip() else None)
            context = _header(scope, CONTEXT_HEADER) or self._default_context
            if chat.stream:  # a stream's deadline covers its whole answer: the edge's longer ceiling for streams
                options = CallOptions(headers.metadata, _timeout(headers.timeout, self._limits.stream_timeout_seconds))
                return await _unless_gone(receive, self._stream(send, chat, context, options, trace_id, answer))
            completion = await _unless_gone(receive, self._gate.complete(chat, context, options))
            reply = completion_body(completion, created=int(time.time()), model=chat.model)
            return await _answer(send, Response(200, transcoding.dumps(reply)), trace_id)
        except HttpError as error:
            return await _answer(send, _openai_error(error, trace_id), trace_id)
        except _ClientGone:
            raise  # nobody is left to answer
        except Exception:  # as the edge app does: logged whole, answered as a 500 with the trace id only
            log.exception("unhandled error serving %s %s", scope["method"], route)
            return await _answer(send, _openai_error(errors.internal(), trace_id), trace_id)

    async def _stream(
        self, send: Send, chat: ChatRequest, context: str, options: CallOptions, trace_id: str, answer: _Answer
    ) -> int:
        deadline = asyncio.get_running_loop().time() + options.timeout
        events = self._gate.stream(chat, context, options)
        try:
            first = await anext(events, None)  # a refusal raises here, before anything is sent
            if first is None:
                raise errors.internal()
            writer = ChunkWriter(first.trace_id or trace_id, int(time.time()), chat.model, chat.include_usage)
            trace_header = [(b"x-trace-id", trace_id.encode())] if trace_id else []
            await send({"type": "http.response.start", "status": 200, "headers": event_stream_headers() + trace_header})
            # Counted to the first event, as the edge's other streams are: the rest is the answer's length.
            answer.first_event_at = time.perf_counter()
            # Sending is bounded by the deadline too: a client that stops reading cannot hold the stream open.
            async with asyncio.timeout_at(deadline + _SEND_GRACE_SECONDS):
                status = await _relay_or_report(send, writer, first, events)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return status
        except TimeoutError:
            log.warning("event stream dropped: the client did not read it before its deadline")
            return errors.http_status_of("DEADLINE_EXCEEDED")
        finally:
            await events.aclose()  # cancels the gate call if it is still running


async def _relay_or_report(
    send: Send, writer: ChunkWriter, first: TextChunk | Completion, rest: AsyncGenerator[TextChunk | Completion, None]
) -> int:
    """The stream relayed; a failure after the status line is one event with the error object (as OpenAI sends
    it). Returns the status the request is counted under."""
    try:
        await _relay(send, writer, first, rest)
        return 200
    except HttpError as error:
        failure = error
    except Exception:
        log.exception("unhandled error streaming %s", CHAT_COMPLETIONS)
        failure = errors.internal()
    await send(_event(error_body(failure, writer.trace_id)))
    return failure.status


async def _relay(
    send: Send, writer: ChunkWriter, first: TextChunk | Completion, rest: AsyncGenerator[TextChunk | Completion, None]
) -> None:
    await send(_event(writer.role()))
    event: TextChunk | Completion | None = first
    streamed = False
    while event is not None:
        if isinstance(event, Completion):
            if not streamed and event.reply:  # a repeat of an Idempotency-Key: the stored answer, in one piece
                await send(_event(writer.text(event.reply)))
            await send(_event(writer.finish()))
            if writer.include_usage:
                await send(_event(writer.usage(event.usage)))
            await send({"type": "http.response.body", "body": _DONE, "more_body": True})
            return
        if event.text:
            await send(_event(writer.text(event.text)))
            streamed = True
        event = await anext(rest, None)
    raise errors.internal()  # the gate ended the stream without its done message


def _event(value: dict[str, Any]) -> dict[str, Any]:
    return {"type": "http.response.body", "body": sse.frame(transcoding.dumps(value)), "more_body": True}


async def _unless_gone(receive: Receive, work: Coroutine[Any, Any, T]) -> T:
    """``work``'s result, unless the client disconnects first: then ``work`` is cancelled (and with it the gate
    call it awaits) and ``_ClientGone`` raised. Only called once the request body has been read."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:  # also when this request's own task is cancelled (server shutdown)
        gone.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        raise _ClientGone
    return task.result()


def _openai_error(error: HttpError, trace_id: str) -> Response:
    """The edge's error response (status, ``Retry-After``, ``Allow``) with OpenAI's error object as its body."""
    return dataclasses.replace(_error_response(error, trace_id), body=transcoding.dumps(error_body(error, trace_id)))


async def _answer(send: Send, response: Response, trace_id: str) -> int:
    await _send(send, response, trace_id)
    return response.status
