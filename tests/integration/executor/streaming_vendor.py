"""A vendor that streams: a real HTTP server (uvicorn on 127.0.0.1, via ``scripted_vendor.serve``) answering in
one vendor's server-sent events, as scripted by the test, and noting when the client hung up mid-answer.

A ``Stream`` sends its events one HTTP chunk each, then either ends, breaks the connection (``break_after``), or
holds the answer open after that many events until the client goes away (``hang_after``): the vendor stand-in
that proves a cancelled caller closed the HTTP call.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.integration.executor.scripted_vendor import Call, ScriptedVendor, Step
from tests.integration.executor.vendor_stubs import Receive, Recorded, Scope, Send, read_request

Event = tuple[str, Any]  # (event name, "" for none; data: JSON-able, or a str sent as it is)


@dataclass(frozen=True)
class Stream:
    events: Sequence[Event] = ()
    status: int = 200
    hang_after: int | None = None
    break_after: int | None = None
    headers: dict[str, str] = field(default_factory=dict)


class BrokenOnPurpose(Exception):
    """Raised inside the ASGI app: uvicorn closes the connection without finishing the chunked body."""


def openai_events(pieces: Sequence[str], usage: tuple[int, int] = (11, 3)) -> list[Event]:
    chunk = {"id": "c1", "object": "chat.completion.chunk", "model": "gpt-test"}
    events: list[Event] = [("", {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant"}}]})]
    events += [("", {**chunk, "choices": [{"index": 0, "delta": {"content": piece}}]}) for piece in pieces]
    events.append(("", {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    events.append(("", {**chunk, "choices": [], "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]}}))
    return [*events, ("", "[DONE]")]


def anthropic_events(pieces: Sequence[str], usage: tuple[int, int] = (11, 3)) -> list[Event]:
    start = {"type": "message_start", "message": {"id": "m1", "usage": {"input_tokens": usage[0], "output_tokens": 1}}}
    events: list[Event] = [
        ("message_start", start),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}}),
        ("ping", {"type": "ping"}),
    ]
    events += [
        ("content_block_delta", {"type": "content_block_delta", "delta": {"type": "text_delta", "text": piece}})
        for piece in pieces
    ]
    return [
        *events,
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "usage": {"output_tokens": usage[1]}}),
        ("message_stop", {"type": "message_stop"}),
    ]


def gemini_events(pieces: Sequence[str], usage: tuple[int, int] = (11, 3)) -> list[Event]:
    def event(piece: str, last: bool) -> Event:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": piece}]}}
        data: dict[str, Any] = {"candidates": [{**candidate, **({"finishReason": "STOP"} if last else {})}]}
        if last:
            data["usageMetadata"] = {"promptTokenCount": usage[0], "candidatesTokenCount": usage[1]}
        return "", data

    return [event(piece, index == len(pieces) - 1) for index, piece in enumerate(pieces)]


EVENTS = {"openai": openai_events, "anthropic": anthropic_events, "google": gemini_events}


def error_event(vendor: str) -> Event:
    """The error a vendor sends in the middle of an answer."""
    if vendor == "anthropic":
        return "error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    return "", {"error": {"code": "server_error", "message": "The server had an error while processing"}}


class StreamingVendor(ScriptedVendor):
    """``queue_streams(...)`` appends answers; once they are spent ``always_stream`` answers."""

    def __init__(self, name: str, pieces: Sequence[str] = ("Bon", "jour", ".")) -> None:
        super().__init__(name, lambda request: None)
        self._streams: list[Stream] = []
        self.always_stream = Stream(EVENTS[name](pieces))

    def queue_streams(self, *streams: Stream) -> None:
        self._streams.extend(streams)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request: Recorded = await read_request(scope, receive)
        stream = self._streams.pop(0) if self._streams else self.always_stream
        call = Call(time.monotonic(), request, Step(hang=stream.hang_after is not None))
        self.calls.append(call)
        await self._notify()
        if stream.status >= 300:
            body = json.dumps({"error": {"type": "scripted_error", "message": f"HTTP {stream.status}"}}).encode()
            headers = [(b"content-type", b"application/json"), *_encoded(stream.headers)]
            await send({"type": "http.response.start", "status": stream.status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for index, (name, data) in enumerate(stream.events):
            if index == stream.break_after:
                raise BrokenOnPurpose
            if index == stream.hang_after:
                await self._hold(call, receive)  # until the client hangs up (noted in call.hung_up)
                return
            await send({"type": "http.response.body", "body": _frame(name, data), "more_body": True})
        await send({"type": "http.response.body", "body": b""})


def _frame(name: str, data: Any) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data)
    return (f"event: {name}\n" if name else "").encode() + f"data: {text}\n\n".encode()


def _encoded(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(key.encode(), value.encode()) for key, value in headers.items()]
