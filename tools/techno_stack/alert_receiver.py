"""A small Alertmanager webhook receiver: takes the notifications POSTed to ``/webhook`` (the on-call receiver)
and ``/log`` (every alert), logs each alert as one JSON line, and keeps them so tests can await a delivery.

``python -m techno_stack.alert_receiver`` runs it (``TECHNO_ALERT_RECEIVER_HOST``/``_PORT``); compose runs it
as the ``alert-receiver`` service, ``make run`` as a child process and the live test in-process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings

from techno_core.logging import configure_logging
from techno_core.runner import load_settings
from techno_core.settings import TECHNO_CONFIG, LogLevel

log = logging.getLogger("techno_stack.alert_receiver")  # also when run as __main__

RECEIVERS = ("webhook", "log")  # the paths Alertmanager's receivers post to (infra/alertmanager/alertmanager.yml)
_MAX_BODY = 1 << 20


class AlertReceiverSettings(BaseSettings):
    model_config = TECHNO_CONFIG

    alert_receiver_host: str = Field("127.0.0.1", description="Address the alert receiver listens on.")
    alert_receiver_port: int = Field(9095, ge=0, le=65535, description="HTTP port of the alert receiver.")
    log_level: LogLevel = Field("INFO", description="Minimum level of the JSON logs written to stderr.")


@dataclass(frozen=True)
class ReceivedAlert:
    """One alert of one notification, as Alertmanager sent it."""

    receiver: str  # "webhook" or "log": the path it was posted to
    name: str
    status: str  # "firing" or "resolved"
    labels: Mapping[str, str]
    starts_at: str
    ends_at: str
    received_at: float  # time.monotonic() on arrival

    def matches(self, name: str, status: str, labels: Mapping[str, str], receiver: str | None) -> bool:
        return (
            self.name == name
            and self.status == status
            and (receiver is None or self.receiver == receiver)
            and all(self.labels.get(key) == value for key, value in labels.items())
        )


class AlertReceiver:
    """The HTTP server in a background thread; ``port=0`` picks a free port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.alerts: list[ReceivedAlert] = []
        self._arrived = threading.Condition()
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="alert-receiver", daemon=True
        )

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    @property
    def url(self) -> str:
        """Base URL; Alertmanager posts to ``<url>/webhook`` and ``<url>/log``."""
        host = str(self._server.server_address[0])
        return f"http://{host}:{self.port}"

    def start(self) -> AlertReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> AlertReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def record(self, receiver: str, notification: Mapping[str, Any]) -> list[ReceivedAlert]:
        arrived = time.monotonic()
        alerts = [_alert(receiver, raw, arrived) for raw in notification.get("alerts", [])]
        for alert in alerts:
            log.info(
                "alert",
                extra={
                    "receiver": alert.receiver,
                    "alertname": alert.name,
                    "status": alert.status,
                    "labels": dict(alert.labels),
                    "startsAt": alert.starts_at,
                    "endsAt": alert.ends_at,
                },
            )
        with self._arrived:
            self.alerts.extend(alerts)
            self._arrived.notify_all()
        return alerts

    def find(
        self,
        name: str,
        status: str,
        labels: Mapping[str, str] | None = None,
        *,
        receiver: str | None = None,
        after: float = 0.0,
    ) -> ReceivedAlert | None:
        """The first matching alert that arrived after ``after`` (a ``time.monotonic()`` value), if any."""
        with self._arrived:
            return next(
                (
                    alert
                    for alert in self.alerts
                    if alert.received_at >= after and alert.matches(name, status, labels or {}, receiver)
                ),
                None,
            )

    def wait_for(
        self,
        name: str,
        status: str,
        labels: Mapping[str, str] | None = None,
        *,
        within: float,
        receiver: str | None = None,
        after: float = 0.0,
    ) -> ReceivedAlert:
        """Block until alert ``name`` with ``status`` (and a superset of ``labels``) has arrived after ``after``;
        raises ``TimeoutError`` listing what did arrive when ``within`` seconds pass first."""
        deadline = time.monotonic() + within
        with self._arrived:
            while True:
                found = self.find(name, status, labels, receiver=receiver, after=after)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = sorted(
                        {f"{a.name}{dict(a.labels)} {a.status}" for a in self.alerts if a.received_at >= after}
                    )
                    raise TimeoutError(
                        f"alert {name}{dict(labels or {})} {status} not received within {within}s; received: {seen}"
                    )
                self._arrived.wait(left)

    async def arrival(
        self,
        name: str,
        status: str,
        labels: Mapping[str, str] | None = None,
        *,
        within: float,
        receiver: str | None = None,
        after: float = 0.0,
    ) -> ReceivedAlert:
        """``wait_for`` for asyncio: polls without blocking the event loop, and can be cancelled."""
        deadline = time.monotonic() + within
        while (found := self.find(name, status, labels, receiver=receiver, after=after)) is None:
            if time.monotonic() > deadline:
                return self.wait_for(name, status, labels, within=0, receiver=receiver, after=after)  # raises
            await asyncio.sleep(0.05)
        return found


def _alert(receiver: str, raw: Mapping[str, Any], arrived: float) -> ReceivedAlert:
    labels = {str(key): str(value) for key, value in dict(raw.get("labels") or {}).items()}
    return ReceivedAlert(
        receiver=receiver,
        name=labels.get("alertname", ""),
        status=str(raw.get("status", "")),
        labels=labels,
        starts_at=str(raw.get("startsAt", "")),
        ends_at=str(raw.get("endsAt", "")),
        received_at=arrived,
    )


def _handler(receiver: AlertReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            name = self.path.strip("/")
            if name not in RECEIVERS:
                self._reply(404, {"error": f"no receiver at {self.path}; post to /webhook or /log"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > _MAX_BODY:
                self._reply(413, {"error": "notification too large"})
                return
            try:
                notification = json.loads(self.rfile.read(length))
            except (ValueError, UnicodeDecodeError):
                self._reply(400, {"error": "body is not JSON"})
                return
            if not isinstance(notification, dict) or not isinstance(notification.get("alerts", []), list):
                self._reply(400, {"error": "not an Alertmanager notification"})
                return
            self._reply(200, {"received": len(receiver.record(name, notification))})

        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._reply(200, {"status": "ok"})
            else:
                self._reply(404, {"error": "not found"})

        def _reply(self, status: int, body: Mapping[str, Any]) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:  # the alerts are logged, not each request
            return

    return Handler


def main() -> int:
    settings = load_settings(AlertReceiverSettings)
    configure_logging("alert-receiver", settings.log_level)
    try:
        receiver = AlertReceiver(settings.alert_receiver_host, settings.alert_receiver_port)
    except OSError as error:
        print(f"alert receiver cannot listen on port {settings.alert_receiver_port}: {error}", file=sys.stderr)
        return 1
    stopped = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with receiver:
        log.info("listening", extra={"url": receiver.url})
        stopped.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
