"""A server-streaming call answered as Server-Sent Events: the one loop behind every stream the edge sends, the
REST routes' (``techno_edge.adapters.sse``: one event per message, named after its oneof) and the
OpenAI-compatible chat's (``techno_edge.adapters.openai_compat``: ``data: {chunk}`` … ``data: [DONE]``). What
differs between them is a ``Renderer``: how a message, a failure and the end are written.

The status line waits for the upstream's first message: a refusal before it (credentials, policy, limits, a bad
payload) is an ordinary HTTP error with its JSON body, because nothing has been sent yet. From the first message
on the answer is ``200 text/event-stream``: each message is rendered as it arrives, a comment line
(``: keep-alive``, which every client ignores) keeps the connection visibly alive while the upstream is quiet, and
a failure ends the stream with the renderer's error event.

The client leaving (ASGI ``http.disconnect``, watched for the whole stream) cancels the upstream call at once,
so the gate records the stream as cancelled and the provider stops. The request's deadline is a total one: the
gRPC call carries it, so the upstream ends a stream that outlives it with DEADLINE_EXCEEDED (an error event),
and sending is bounded by it too, so a client that stops reading cannot hold the stream past it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Generic, Protocol, TypeVar

from techno_edge.adapters import sse
from techno_edge.domain import errors
from techno_edge.domain.errors import HttpError
from techno_edge.entrypoints.http_io import Receive, Send, disconnected, encode_headers, trace_header

log = logging.getLogger(__name__)

M = TypeVar("M")
M_co = TypeVar("M_co", covariant=True)
M_contra = TypeVar("M_contra", contravariant=True)

CLIENT_CLOSED = 499  # nginx's convention, as for a unary request whose client left
_GONE, _QUIET = object(), object()  # what waiting for the next message may give besides a message or the end
# After the deadline the upstream has ended the stream; this is how long a blocked send may still take to
# deliver the error event before the stream is dropped.
_SEND_GRACE_SECONDS = 1.0


class MessageStream(Protocol[M_co]):
    """One server-streaming call (``techno_edge.adapters.upstream.UpstreamStream``): ``read`` gives the next
    message, None at the end, or raises the ``HttpError`` the stream failed with; ``cancel`` ends the call."""

    async def read(self) -> M_co | None: ...

    def cancel(self) -> None: ...


class Renderer(Protocol[M_contra]):
    """How one kind of stream writes itself as Server-Sent Events."""

    def render(self, message: M_contra) -> bytes:
        """The events of one message (none, one or several)."""
        ...

    def error(self, error: HttpError, trace_id: str) -> bytes:
        """The event that ends a stream which failed after its status line."""
        ...

    def end(self) -> None:
        """Called when the upstream ended the stream; raises the ``HttpError`` of a stream that ended short."""
        ...


class EventStream(Generic[M]):
    """One streamed answer, from waiting for its first message to its last event."""

    def __init__(
        self, stream: MessageStream[M], renderer: Renderer[M], receive: Receive, keepalive: float, deadline: float
    ) -> None:
        self._stream = stream
        self._renderer = renderer
        self._keepalive = keepalive
        self._deadline = deadline  # event loop time
        self._gone = asyncio.ensure_future(disconnected(receive))
        self._pending: asyncio.Future[M | None] | None = None
        self._first: object = None

    async def start(self) -> bool:
        """Waits for the first message (or the end). False when the client left first; raises the ``HttpError``
        of a stream that failed (or ended short) before its first message. Either way the stream is closed then."""
        try:
            self._first = await self._next(None)
            if self._first is None:
                self._renderer.end()
        except BaseException:
            self.close()
            raise
        if self._first is _GONE:
            self.close()
            return False
        return True

    async def send_to(self, send: Send, trace_id: str, extra_headers: tuple[tuple[str, str], ...] = ()) -> int:
        """Sends the whole stream; returns the status it is counted under: 200, the error event's status, or
        499 when the client left."""
        headers = event_stream_headers() + trace_header(trace_id) + encode_headers(extra_headers)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            async with asyncio.timeout_at(self._deadline + _SEND_GRACE_SECONDS):
                status = await self._relay(send, trace_id)
            if status != CLIENT_CLOSED:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            return status
        except TimeoutError:
            log.warning("event stream dropped: the client did not read it before its deadline")
            return errors.http_status_of("DEADLINE_EXCEEDED")
        finally:
            self.close()

    async def _relay(self, send: Send, trace_id: str) -> int:
        item = self._first
        try:
            while item is not None:
                if item is _GONE:
                    return CLIENT_CLOSED
                body = sse.KEEP_ALIVE if item is _QUIET else self._renderer.render(item)  # type: ignore[arg-type]
                if body:
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                item = await self._next(self._keepalive)
            self._renderer.end()
        except HttpError as error:
            return await self._send_error(send, error, trace_id)
        except Exception:  # the stream's status line is sent: the last line of defence is an error event
            log.exception("unhandled error streaming an answer")
            return await self._send_error(send, errors.internal(), trace_id)
        return 200

    async def _next(self, timeout: float | None) -> object:
        """The next message, None at the end, _GONE when the client left, _QUIET when ``timeout`` passed first.
        A pending read is kept across quiet periods: cancelling it would cancel the call."""
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._stream.read())
        done, _ = await asyncio.wait((self._pending, self._gone), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if self._pending in done:
            read, self._pending = self._pending, None
            return read.result()
        return _GONE if self._gone in done else _QUIET

    async def _send_error(self, send: Send, error: HttpError, trace_id: str) -> int:
        await send({"type": "http.response.body", "body": self._renderer.error(error, trace_id), "more_body": True})
        return error.status

    def close(self) -> None:
        """Idempotent. Cancels the upstream call (a no-op once it ended) and the disconnect watch."""
        self._gone.cancel()
        if self._pending is not None:
            self._pending.cancel()
        self._stream.cancel()


def event_stream_headers() -> list[tuple[bytes, bytes]]:
    """Headers of every event stream: not cached, not buffered by nginx-style proxies (X-Accel-Buffering), so
    each event reaches the client as it is sent."""
    return [(b"content-type", sse.CONTENT_TYPE), (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
