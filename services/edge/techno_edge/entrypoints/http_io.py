"""Reading a request and sending its answer over ASGI: what every route of the edge does the same way, the edge's
own (``asgi``) and the OpenAI-compatible ones (``openai_routes``) alike.

The request side: the few headers the edge reads, collected in one pass (the credentials and idempotency key it
forwards as gRPC metadata, checked here), the client's ``X-Request-Timeout`` under the route's ceiling, the
declared content type and the body, counted against the limit as it arrives. The answer side: a buffered
``Response`` sent with its trace id and CORS headers, and the watch for a client that leaves (``http.disconnect``)
so the work done for it can be cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from dataclasses import dataclass
from typing import Any, TypeVar

from opentelemetry import trace

from techno_core.contract import MIN_REQUEST_TIMEOUT_SECONDS, REQUEST_TIMEOUT
from techno_edge.adapters import transcoding
from techno_edge.domain import errors
from techno_edge.domain.errors import HttpError

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

T = TypeVar("T")

JSON = b"application/json"
# The only request headers that reach the upstream, under their gRPC metadata names. Everything else stays here.
_FORWARDED = {b"x-api-key": "x-api-key", b"authorization": "authorization", b"idempotency-key": "idempotency-key"}
# Far above any real value (a key is ~50 characters, a JWT a few KB, an idempotency key at most 255) and, all
# together, under gRPC's default 8 KiB metadata limit: past it the gate's transport refuses the call as
# RESOURCE_EXHAUSTED, which the client would read as a rate limit (429).
_MAX_FORWARDED_BYTES = {b"x-api-key": 256, b"authorization": 6144, b"idempotency-key": 255}
_PRINTABLE_ASCII = bytes(range(0x20, 0x7F))


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
    content_type: bytes = JSON
    headers: tuple[tuple[str, str], ...] = ()


class ClientGone(Exception):
    """The client disconnected before its answer (while its body was read, or a stream's first message awaited);
    nobody is left to answer. ``route`` is the matched route's template, for the metrics, when known."""

    def __init__(self, route: str = "") -> None:
        super().__init__(route)
        self.route = route


@dataclass
class RequestHeaders:
    """The few request headers the edge reads, collected in one pass over the header list."""

    content_length: bytes | None = None
    content_types: tuple[bytes, ...] = ()
    timeout: bytes | None = None
    metadata: tuple[tuple[str, str], ...] = ()


def parse_headers(scope: Scope) -> RequestHeaders:
    request = RequestHeaders()
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


def request_timeout(header: bytes | None, ceiling: float) -> float:
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


def check_content_type(values: tuple[bytes, ...]) -> None:
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


async def read_body(receive: Receive, content_length: bytes | None, limit: int) -> bytes:
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
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise errors.body_too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def name_span(method: str, route: str) -> None:
    # The middleware named the span after the raw path before routing; the template keeps span names bounded.
    span = trace.get_current_span()
    if span.is_recording():
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)


async def disconnected(receive: Receive) -> None:
    """Returns when the client has gone (ASGI ``http.disconnect``); run it beside the work it should stop."""
    while (await receive())["type"] != "http.disconnect":
        pass  # the rest of a body nobody reads (a method without a body has not read its empty one)


async def unless_disconnected(receive: Receive, work: Coroutine[Any, Any, T]) -> T:
    """``work``'s result, unless the client disconnects first: then ``work`` is cancelled (and with it the
    upstream call it awaits) and ``ClientGone`` raised. Only called once the request body has been read."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(disconnected(receive))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:  # also when this request's own task is cancelled (server shutdown)
        gone.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        raise ClientGone
    return task.result()


def error_response(error: HttpError, trace_id: str, body: bytes | None = None) -> Response:
    """The AIP-193 error body, with the error's own headers (``Allow``) and its ``Retry-After``. ``body`` is
    another API's error shape (OpenAI's) answered instead, with the same status and headers."""
    headers = error.headers
    if error.retry_after_seconds is not None:
        headers = (*headers, ("retry-after", str(error.retry_after_seconds)))
    if body is None:
        body = transcoding.dumps(error.body(trace_id))
    return Response(error.status, body, headers=headers)


def encode_headers(headers: tuple[tuple[str, str], ...]) -> list[tuple[bytes, bytes]]:
    return [(name.encode(), value.encode("latin-1")) for name, value in headers]


def trace_header(trace_id: str) -> list[tuple[bytes, bytes]]:
    return [(b"x-trace-id", trace_id.encode())] if trace_id else []


async def send_response(
    send: Send, response: Response, trace_id: str, extra_headers: tuple[tuple[str, str], ...] = ()
) -> None:
    headers = []
    if response.status != 204:  # No Content has neither (RFC 9110, section 8.6)
        headers += [(b"content-type", response.content_type), (b"content-length", str(len(response.body)).encode())]
    headers += trace_header(trace_id)
    headers += encode_headers((*response.headers, *extra_headers))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})
