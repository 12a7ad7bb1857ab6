"""What the edge sheds to protect itself from slow and abusive clients: counted in ``edge_connections_shed_total``
and logged as one warning line per kind and time window, with the count, never one line per connection (under
attack that would be thousands of lines a second, and the log would become the next thing to fall over)."""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CollectorRegistry, Counter

log = logging.getLogger(__name__)

HEADER_TIMEOUT = "header_timeout"
BODY_TIMEOUT = "body_timeout"
TOO_MANY_CONNECTIONS = "too_many_connections"
HEADERS_TOO_LARGE = "headers_too_large"
TOO_MANY_HEADERS = "too_many_headers"
REASONS = (HEADER_TIMEOUT, BODY_TIMEOUT, TOO_MANY_CONNECTIONS, HEADERS_TOO_LARGE, TOO_MANY_HEADERS)

_WHAT = {
    HEADER_TIMEOUT: "request line and headers not received in time",
    BODY_TIMEOUT: "request body not received in time",
    TOO_MANY_CONNECTIONS: "connection refused: the connection limit is reached",
    HEADERS_TOO_LARGE: "request headers over the byte limit",
    TOO_MANY_HEADERS: "request with more headers than the limit",
}


class ShedReport:
    """The first shed of a kind is logged at once; the rest of its window is summed and logged when the window
    ends (``interval_seconds``), then a quiet kind logs nothing until it is shed again. ``close`` logs what is
    still pending, so the counts in the log always add up to the counter."""

    def __init__(self, registry: CollectorRegistry, interval_seconds: float = 10.0) -> None:
        self._counter = Counter(
            "edge_connections_shed",
            "Connections the edge closed or refused to protect itself, by reason.",
            ["reason"],
            registry=registry,
        )
        for reason in REASONS:  # every series exists from the start, so rate() and alerts see the first shed
            self._counter.labels(reason)
        self._interval = interval_seconds
        self._pending: dict[str, int] = {}
        self._windows: dict[str, asyncio.TimerHandle] = {}

    def shed(self, reason: str) -> None:
        """Call it on the event loop."""
        self._counter.labels(reason).inc()
        self._pending[reason] = self._pending.get(reason, 0) + 1
        if reason not in self._windows:
            self._log(reason)
            self._open_window(reason)

    def close(self) -> None:
        for window in self._windows.values():
            window.cancel()
        self._windows.clear()
        for reason in list(self._pending):
            self._log(reason)

    def _open_window(self, reason: str) -> None:
        self._windows[reason] = asyncio.get_running_loop().call_later(self._interval, self._window_ended, reason)

    def _window_ended(self, reason: str) -> None:
        del self._windows[reason]
        if reason in self._pending:
            self._log(reason)
            self._open_window(reason)

    def _log(self, reason: str) -> None:
        count = self._pending.pop(reason)
        log.warning(
            "edge shed %d connection(s): %s",
            count,
            _WHAT[reason],
            extra={"shed_reason": reason, "shed_count": count, "window_seconds": self._interval},
        )
