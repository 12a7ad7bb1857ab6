"""Local HTTP servers speaking the vendors' wire formats, for the adapters' integration tests.

Each stub is a small ASGI app run by a real uvicorn on 127.0.0.1, port 0. It records every request (path,
headers, JSON body) and answers with the vendor's success body, unless a test scripted other answers
(``stub.script``): a status with headers and a body, or a hang until the stub is stopped (to test timeouts).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

ANSWER = "Bonjour."


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


async def read_request(scope: Scope, receive: Receive) -> Recorded:
    """The whole request as the vendor received it (shared by every stub)."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    raw = b"".join(chunks)
    return Recorded(
        method=scope["method"],
        path=scope["path"],
        headers={k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
        body=json.loads(raw) if raw else None,
    )


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes | Any = None  # bytes are sent as they are; anything else as JSON; None: the vendor's success
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # never answer (until the stub stops)


def openai_success(request: Recorded) -> Any:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": request.body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
    }


def anthropic_success(request: Recorded) -> Any:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": request.body["model"],
        "content": [
            {"type": "thinking", "thinking": "hidden", "signature": "x"},
            {"type": "text", "text": "Bon"},
            {"type": "text", "text": "jour."},
        ],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 12, "output_tokens": 4},
    }


def gemini_success(request: Recorded) -> Any:
    return {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": "thinking…", "thought": True}, {"text": ANSWER}]},
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {"promptTokenCount": 13, "candidatesTokenCount": 2, "thoughtsTokenCount": 5},
    }


class VendorStub:
    """The ASGI app: records, then answers the next scripted ``Reply`` or ``success(request)``."""

    def __init__(self, success: Callable[[Recorded], Any]) -> None:
        self._success = success
        self.requests: list[Recorded] = []
        self.client_ports: set[int] = set()  # one per TCP connection the client opened
        self.script: deque[Reply] = deque()
        self.released = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = await read_request(scope, receive)
        self.requests.append(request)
        self.client_ports.add(scope["client"][1])
        reply = self.script.popleft() if self.script else Reply()
        if reply.hang:
            await self.released.wait()
            return
        body = reply.body if reply.body is not None else self._success(request)
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        headers += [(k.encode(), v.encode()) for k, v in reply.headers.items()]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the test runner owns the signals
        yield


@contextlib.asynccontextmanager
async def serve(app: VendorStub) -> AsyncIterator[str]:
    """Run ``app`` on 127.0.0.1 (a free port) and yield its base URL; stops it (releasing hung requests)."""
    sock = socket.create_server(("127.0.0.1", 0))
    config = uvicorn.Config(app, http="h11", ws="none", lifespan="off", loop="none", log_config=None, access_log=False)
    server = _Server(config)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:  # uvicorn has no start-up event; poll its flag
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped during start-up")
            await asyncio.sleep(0.005)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        app.released.set()
        server.should_exit = True
        await task
        sock.close()
