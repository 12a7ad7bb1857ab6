"""A scripted vendor for the resilience tests: a real HTTP server (uvicorn, 127.0.0.1, port 0) speaking one
vendor's wire format, whose answers a test queues in advance and which records when each request arrived.

Unlike ``vendor_stubs.VendorStub`` it can answer late (``Step(delay=…)``), keeps answering a default step once
the queue is empty (``always``: a full outage), notes when the client hung up on a request it had not answered
yet (the executor giving up on it), and lets a test await a number of requests or hang-ups instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from tests.integration.executor.vendor_stubs import Receive, Recorded, Scope, Send, _Server, read_request


@dataclass(frozen=True)
class Step:
    """One scripted answer: ``status`` with ``headers`` and ``body`` (None: the vendor's success body for a 2xx,
    a vendor-like error body otherwise), sent after ``delay`` seconds; ``hang`` never answers."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    delay: float = 0.0
    hang: bool = False


@dataclass
class Call:
    """A request the vendor received: when (``time.monotonic``), what, and when the client hung up on it (None:
    it was answered, or is still waiting)."""

    arrived: float
    request: Recorded
    step: Step
    hung_up: float | None = None


class ScriptedVendor:
    """The ASGI app. ``queue(...)`` appends answers; once they are spent ``always`` answers (success by default)."""

    def __init__(self, name: str, success: Callable[[Recorded], Any]) -> None:
        self.name = name
        self._success = success
        self._script: deque[Step] = deque()
        self.always = Step()
        self.calls: list[Call] = []
        self._changed = asyncio.Condition()
        self._stopping = asyncio.Event()

    def queue(self, *steps: Step) -> None:
        self._script.extend(steps)

    @property
    def arrivals(self) -> list[float]:
        return [call.arrived for call in self.calls]

    async def wait_for_calls(self, count: int, *, timeout: float = 5.0) -> list[Call]:
        """Awaits until at least ``count`` requests arrived; fails after ``timeout`` seconds."""
        await self._wait(lambda: len(self.calls) >= count, timeout)
        return self.calls

    async def wait_for_hang_up(self, index: int, *, timeout: float = 5.0) -> float:
        """Awaits until the client hung up on request number ``index`` (0-based); the moment it did."""
        await self._wait(lambda: len(self.calls) > index and self.calls[index].hung_up is not None, timeout)
        hung_up = self.calls[index].hung_up
        assert hung_up is not None
        return hung_up

    def stop_holding(self) -> None:
        """Held requests end without an answer (the server is stopping)."""
        self._stopping.set()

    async def _wait(self, predicate: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        arrived = time.monotonic()
        request = await read_request(scope, receive)
        step = self._script.popleft() if self._script else self.always
        call = Call(arrived, request, step)
        self.calls.append(call)
        await self._notify()
        if (step.hang or step.delay > 0) and not await self._hold(call, receive):
            return
        if step.body is not None:
            body = step.body
        elif step.status < 300:
            body = self._success(request)
        else:
            body = {"error": {"type": "scripted_error", "message": f"HTTP {step.status}"}}
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        headers += [(k.encode(), v.encode()) for k, v in step.headers.items()]
        await send({"type": "http.response.start", "status": step.status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def _hold(self, call: Call, receive: Receive) -> bool:
        """Waits out the step's delay (forever when it hangs); False when the client hung up first or the
        server is stopping (nothing is sent then)."""

        async def hang_up() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            call.hung_up = time.monotonic()
            await self._notify()

        watchers = [asyncio.ensure_future(hang_up()), asyncio.ensure_future(self._stopping.wait())]
        try:
            done, _ = await asyncio.wait(
                watchers, timeout=None if call.step.hang else call.step.delay, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for watcher in watchers:
                watcher.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
        return not done


@contextlib.asynccontextmanager
async def serve(vendors: Iterable[ScriptedVendor]) -> AsyncIterator[dict[str, str]]:
    """Runs each vendor on its own free port of 127.0.0.1; yields their base URLs by name. On exit, answers held
    requests no more and stops the servers."""
    servers: list[tuple[ScriptedVendor, _Server, asyncio.Task[None], socket.socket]] = []
    urls: dict[str, str] = {}
    try:
        for vendor in vendors:
            sock = socket.create_server(("127.0.0.1", 0))
            config = uvicorn.Config(
                vendor, http="h11", ws="none", lifespan="off", loop="none", log_config=None, access_log=False
            )
            server = _Server(config)
            task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
            servers.append((vendor, server, task, sock))
            while not server.started:  # uvicorn has no start-up event; poll its flag
                if task.done():
                    task.result()
                    raise RuntimeError("uvicorn stopped during start-up")
                await asyncio.sleep(0.005)
            urls[vendor.name] = f"http://127.0.0.1:{sock.getsockname()[1]}"
        yield urls
    finally:
        for vendor, running, _, _ in servers:
            vendor.stop_holding()
            running.should_exit = True
        for _, _, task, sock in servers:
            await task
            sock.close()
