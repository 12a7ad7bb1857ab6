"""Bounds on what one HTTP client may hold of the edge: time to send its headers and its body, header size and
count, and the number of open connections, enforced in uvicorn's httptools protocol, where bytes arrive.

Hand-written because uvicorn has none of these for httptools: no header-read or body-read timeout (a connection
that never finishes its request is held forever), no header size or count limit (llhttp has none, and httptools
buffers a header until it ends), and ``limit_concurrency`` answers 503 only once a request's headers are complete,
counting tasks along with connections, after the descriptor is already spent. No well-kept library adds them to
uvicorn. So a subclass of ``HttpToolsProtocol`` hooks the parser callbacks (cheap checks on counters, one timer
per slow phase) and leaves parsing and the ASGI cycle to uvicorn.

A connection goes through three phases: ``HEADERS`` (from the connection, or the first bytes of a request, until
its headers end), ``BODY`` (until the body ends) and ``IDLE`` (the app answers; then uvicorn's keep-alive timer
runs). The header deadline runs from the start of the phase and is not extended by more bytes, so dripping one
byte at a time (slowloris) does not help. A shed connection gets a JSON answer in the edge's error shape where one
makes sense (408, 431, 503), then is closed; it is counted and logged by ``ShedReport``.

The health listener (``/healthz``, ``/readyz``, ``/metrics`` only) has its own small connection budget, so probes
and scrapes are answered while the main port is full of slow clients.
"""

from __future__ import annotations

import json
import logging
import resource
from asyncio import Transport
from asyncio.events import TimerHandle
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from techno_core.runner import StartupError
from techno_edge.adapters import shedding
from techno_edge.adapters.shedding import ShedReport
from techno_edge.domain.errors import HttpError
from techno_edge.entrypoints.asgi import HEALTHZ, METRICS, READYZ

log = logging.getLogger(__name__)

# Reasons in the JSON answers (docs/reason-codes.md, "Reasons the edge gives itself").
REQUEST_TIMEOUT = "REQUEST_TIMEOUT"
HEADERS_TOO_LARGE = "HEADERS_TOO_LARGE"
TOO_MANY_HEADERS = "TOO_MANY_HEADERS"
TOO_MANY_CONNECTIONS = "TOO_MANY_CONNECTIONS"

HEALTH_PATHS = frozenset(path.encode() for path in (HEALTHZ, READYZ, METRICS))
HEALTH_MAX_CONNECTIONS = 16  # probes and a scraper or two, each answered in microseconds
# Descriptors kept for everything but client connections: the listeners, the event loop, the gRPC channels to the
# upstreams, the trace exporter, log handlers, files opened at run time.
RESERVED_DESCRIPTORS = 128
# An unfinished header section is judged on the bytes received, which also carry the request line's method and
# version and optional whitespace; the finished one on its target, names and values. This keeps the two consistent.
_FRAMING_ALLOWANCE = 1024

_HEADERS, _BODY, _IDLE = 0, 1, 2
_MAIN, _HEALTH = "main", "health"


@dataclass(frozen=True)
class Bounds:
    header_timeout_seconds: float
    body_timeout_seconds: float
    max_connections: int
    max_header_bytes: int
    max_headers: int


def _answer(status: int, grpc_code: str, reason: str, message: str, *headers: bytes) -> bytes:
    body = json.dumps(HttpError(status, grpc_code, message, (reason,)).body(""), separators=(",", ":")).encode()
    head = [STATUS_LINE[status], b"content-type: application/json\r\n", b"connection: close\r\n", *headers]
    return b"".join([*head, b"content-length: %d\r\n\r\n" % len(body), body])


@dataclass
class ConnectionGuard:
    """What every connection of one server shares: the bounds, the open connections per listener, the report."""

    bounds: Bounds
    report: ShedReport
    health_port: int = -1  # known once the health socket is bound
    open: dict[str, int] = field(default_factory=lambda: {_MAIN: 0, _HEALTH: 0})
    answers: dict[str, bytes] = field(init=False)

    def __post_init__(self) -> None:
        b = self.bounds
        self.answers = {
            shedding.HEADER_TIMEOUT: _answer(
                408,
                "DEADLINE_EXCEEDED",
                REQUEST_TIMEOUT,
                f"request headers not received in {b.header_timeout_seconds:g} s",
            ),
            shedding.BODY_TIMEOUT: _answer(
                408, "DEADLINE_EXCEEDED", REQUEST_TIMEOUT, f"request body not received in {b.body_timeout_seconds:g} s"
            ),
            shedding.HEADERS_TOO_LARGE: _answer(
                431, "RESOURCE_EXHAUSTED", HEADERS_TOO_LARGE, f"request headers exceed {b.max_header_bytes} bytes"
            ),
            shedding.TOO_MANY_HEADERS: _answer(
                431, "RESOURCE_EXHAUSTED", TOO_MANY_HEADERS, f"more than {b.max_headers} request headers"
            ),
            shedding.TOO_MANY_CONNECTIONS: _answer(
                503, "UNAVAILABLE", TOO_MANY_CONNECTIONS, "too many connections; retry later", b"retry-after: 1\r\n"
            ),
        }
        self.not_found = _answer(
            404, "NOT_FOUND", "ROUTE_NOT_FOUND", "the health port serves only /healthz, /readyz and /metrics"
        )

    def limit(self, listener: str) -> int:
        return self.bounds.max_connections if listener == _MAIN else HEALTH_MAX_CONNECTIONS

    def open_connections(self) -> int:
        return sum(self.open.values())


def guarded_protocol(
    guard: ConnectionGuard, base: type[HttpToolsProtocol] = HttpToolsProtocol
) -> type[HttpToolsProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)``: ``base`` with the guard's bounds. uvicorn builds each
    connection's protocol from a class with fixed arguments, hence a class per server carrying its guard."""
    return cast(type[HttpToolsProtocol], type("GuardedHttpToolsProtocol", (_Guarded, base), {"guard": guard}))


class _Guarded(HttpToolsProtocol):
    guard: ClassVar[ConnectionGuard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._listener: str | None = None  # the budget this connection is counted in; None once released
        self._done = False  # answered or shed here: the rest of its bytes are ignored, the transport is closing
        self._phase = _HEADERS
        self._timer: TimerHandle | None = None
        self._timer_phase = _IDLE
        self._begun = False  # bytes of a request arrived (a silent connection is closed without an answer)
        self._begun_in_feed = False
        self._received = 0  # bytes of the unfinished header section, counted per read
        self._header_bytes = 0
        self._headers = 0

    # Connection lifecycle

    def connection_made(self, transport: Transport) -> None:  # type: ignore[override]
        guard = self.guard
        sockname = transport.get_extra_info("sockname")
        listener = _HEALTH if isinstance(sockname, tuple) and sockname[1] == guard.health_port else _MAIN
        if guard.open[listener] >= guard.limit(listener):
            # Refused at once rather than queued: a queued connection still holds a descriptor, and the clients
            # holding the others are the reason there is no room. The 503 is read by clients that read first.
            self.transport = transport
            self._done = True
            guard.report.shed(shedding.TOO_MANY_CONNECTIONS)
            transport.write(guard.answers[shedding.TOO_MANY_CONNECTIONS])
            transport.close()
            return
        guard.open[listener] += 1
        self._listener = listener
        super().connection_made(transport)
        self._arm(_HEADERS)  # a connection that never sends a byte is a slow client too

    def connection_lost(self, exc: Exception | None) -> None:
        if self._listener is not None:
            self.guard.open[self._listener] -= 1
            self._listener = None
        self._cancel_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        super().data_received(data)
        if self._done:
            return
        begun, self._begun_in_feed = self._begun_in_feed, False
        if self._phase == _HEADERS and not begun:
            # A header that has not ended yet is buffered by httptools and not seen by on_header: bound it by the
            # bytes received. The read that began the request is not counted (it may hold the end of the previous
            # one), which leaves the memory bound at the limit plus two reads.
            self._received += len(data)
            if self._received > self.guard.bounds.max_header_bytes + _FRAMING_ALLOWANCE:
                self._shed(shedding.HEADERS_TOO_LARGE)
                return
        if self._phase != self._timer_phase:
            self._cancel_timer()
            if self._phase != _IDLE:
                self._arm(self._phase)

    # Parser callbacks (httptools calls them from feed_data, inside data_received)

    def on_message_begin(self) -> None:
        if self._done:
            return
        self._phase = _HEADERS
        self._begun = self._begun_in_feed = True
        self._received = self._header_bytes = self._headers = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        if self._done:
            return
        self._header_bytes += len(url)
        if self._header_bytes > self.guard.bounds.max_header_bytes:
            self._shed(shedding.HEADERS_TOO_LARGE)
            return
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._done:
            return
        self._headers += 1
        self._header_bytes += len(name) + len(value) + 4  # ": " and CRLF
        if self._headers > self.guard.bounds.max_headers:
            self._shed(shedding.TOO_MANY_HEADERS)
        elif self._header_bytes > self.guard.bounds.max_header_bytes:
            self._shed(shedding.HEADERS_TOO_LARGE)
        else:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._done:
            return
        self._phase = _BODY
        if self._listener == _HEALTH and httptools.parse_url(self.url).path not in HEALTH_PATHS:
            self._finish(self.guard.not_found)
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._done:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._done:
            return
        self._phase = _IDLE
        super().on_message_complete()

    # Deadlines

    def _arm(self, phase: int) -> None:
        bounds = self.guard.bounds
        seconds = bounds.header_timeout_seconds if phase == _HEADERS else bounds.body_timeout_seconds
        self._timer = self.loop.call_later(seconds, self._expired)
        self._timer_phase = phase

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_phase = _IDLE

    def _expired(self) -> None:
        self._timer = None
        phase, self._timer_phase = self._timer_phase, _IDLE
        if self._done or self.transport.is_closing() or phase != self._phase:
            return
        cycle = self.cycle
        if self.pipeline or (phase == _HEADERS and cycle is not None and not cycle.response_complete):
            self._arm(phase)  # a pipelined request waits behind one still being answered: not the client's fault
            return
        if phase == _HEADERS:
            self._shed(shedding.HEADER_TIMEOUT, answer=self._begun)
            return
        if cycle.response_started:
            # The app answered without the whole body (a route that takes none): the unread rest makes the
            # connection unusable, so it is closed now instead of when keep-alive ends.
            self.guard.report.shed(shedding.BODY_TIMEOUT)
            self._done = True
            if cycle.response_complete:
                self.transport.close()
            else:
                cycle.keep_alive = False
            return
        # The app waits in receive(): it gets http.disconnect and ends without answering; the 408 is sent here.
        cycle.disconnected = True
        cycle.message_event.set()
        self._shed(shedding.BODY_TIMEOUT)

    def _shed(self, reason: str, *, answer: bool = True) -> None:
        self.guard.report.shed(reason)
        self._finish(self.guard.answers[reason] if answer else b"")

    def _finish(self, response: bytes) -> None:
        self._done = True
        self._cancel_timer()
        if response:
            self.transport.write(response)
        self.transport.close()


def fit_descriptor_limit(connections: int) -> None:
    """Make sure ``connections`` client sockets and a reserve fit under the process's descriptor limit
    (RLIMIT_NOFILE): out of descriptors, accept() fails and asyncio stops accepting for a second at a time, health
    probes included, and nothing says why. Raises the soft limit toward the hard one when needed (what Go's runtime
    does at start and nginx's ``worker_rlimit_nofile`` offers); refuses to start when even the hard limit is short."""
    needed = connections + RESERVED_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise StartupError(
            f"TECHNO_EDGE_MAX_CONNECTIONS needs {needed} file descriptors ({connections} connections, "
            f"{RESERVED_DESCRIPTORS} reserved) but the hard limit is {hard}: lower the setting or raise `ulimit -Hn`"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    log.info("raised the file descriptor limit", extra={"from": soft, "to": needed})
