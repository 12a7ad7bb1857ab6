"""The OpenAI-compatible routes over ASGI (techno_edge.entrypoints.openai_routes), against an in-memory gate."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, MutableMapping
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from techno_edge.adapters.metrics import HttpMetrics
from techno_edge.adapters.openai_compat import CallOptions
from techno_edge.adapters.sse import KEEP_ALIVE
from techno_edge.domain.errors import HttpError
from techno_edge.domain.openai_chat import ChatRequest, Completion, TextChunk, Usage
from techno_edge.entrypoints.asgi import Limits, Receive, Scope, Send
from techno_edge.entrypoints.cors import Cors
from techno_edge.entrypoints.openai_routes import OpenAIRoutes

KEY = {"Authorization": "Bearer tk_test"}
CHAT = {"model": "fake", "messages": [{"role": "user", "content": "Hello"}]}
JSON = {"Content-Type": "application/json"}
DONE = Completion("trace-1", "Hello there", "fake", Usage(4, 2, 6))
# A streamed chat as the ASGI server hands it over, for the tests that drive the routes without httpx.
CHAT_SCOPE: Scope = {
    "type": "http",
    "method": "POST",
    "path": "/v1/chat/completions",
    "raw_path": b"/v1/chat/completions",
    "query_string": b"",
    "headers": [(b"content-type", b"application/json"), (b"authorization", b"Bearer tk_test")],
}


class FakeStream:
    """A stream call over an async generator: ``read`` is its next item; ``cancel`` before its end is recorded,
    as the gate would record a cancelled stream."""

    def __init__(self, items: AsyncGenerator[TextChunk | Completion, None], cancelled: asyncio.Event) -> None:
        self._items = items
        self._cancelled = cancelled
        self._ended = False

    async def read(self) -> TextChunk | Completion | None:
        item = await anext(self._items, None)
        self._ended = item is None
        return item

    def cancel(self) -> None:
        if not self._ended:
            self._cancelled.set()


class FakeGate:
    """Answers with ``DONE``, streamed as ``chunks``; ``refusal`` fails the call before anything is answered,
    ``failure`` fails a stream after its chunks; ``hold`` keeps a stream waiting after its chunks, ``release``
    until it is set; without ``done`` the stream ends after its chunks with no done message."""

    def __init__(self) -> None:
        self.chunks = ["Hello", " ", "there"]
        self.refusal: HttpError | None = None
        self.failure: HttpError | None = None
        self.hold = False
        self.release: asyncio.Event | None = None
        self.done = True
        self.calls: list[tuple[ChatRequest | None, str, CallOptions]] = []
        self.stream_cancelled = asyncio.Event()

    async def complete(self, chat: ChatRequest, context_id: str, options: CallOptions) -> Completion:
        self.calls.append((chat, context_id, options))
        if self.refusal:
            raise self.refusal
        return DONE

    def stream(self, chat: ChatRequest, context_id: str, options: CallOptions) -> FakeStream:
        self.calls.append((chat, context_id, options))
        return FakeStream(self._stream(), self.stream_cancelled)

    async def _stream(self) -> AsyncGenerator[TextChunk | Completion, None]:
        if self.refusal:
            raise self.refusal
        for text in self.chunks:
            yield TextChunk("trace-1", text)
        if self.hold:
            await asyncio.Event().wait()
        if self.release:
            await self.release.wait()
        if self.failure:
            raise self.failure
        if self.done:
            yield DONE

    async def models(self, options: CallOptions) -> list[str]:
        self.calls.append((None, "", options))
        if self.refusal:
            raise self.refusal
        return ["fake", "openai"]


async def inner_app(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


@pytest.fixture
def gate() -> FakeGate:
    return FakeGate()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def routes(gate: FakeGate, registry: CollectorRegistry) -> OpenAIRoutes:
    return OpenAIRoutes(inner_app, gate, HttpMetrics(registry), Limits(30.0, 4096), default_context="openai")


@pytest.fixture
async def client(routes: OpenAIRoutes) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=routes), base_url="http://edge") as client:
        yield client


def counted(registry: CollectorRegistry, method: str, route: str, status: int) -> float:
    labels = {"method": method, "route": route, "status": str(status)}
    return registry.get_sample_value("http_requests_total", labels) or 0.0


def events_of(body: str) -> list[str]:
    assert body.endswith("\n\n")
    return [event.removeprefix("data: ") for event in body[:-2].split("\n\n")]


async def test_a_completion_is_answered_in_openais_shape(
    client: httpx.AsyncClient, gate: FakeGate, registry: CollectorRegistry
) -> None:
    headers = {**KEY, "Idempotency-Key": "k-1", "X-Techno-Context": "shop", "X-Request-Timeout": "5"}
    response = await client.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "chatcmpl-trace-1"
    assert body["model"] == "fake"
    assert body["choices"][0]["message"]["content"] == "Hello there"
    assert body["usage"]["total_tokens"] == 6
    [(chat, context, options)] = gate.calls
    assert chat is not None
    assert (chat.model, chat.message, chat.stream) == ("fake", "Hello", False)
    assert context == "shop"
    assert options.metadata == (("authorization", "Bearer tk_test"), ("idempotency-key", "k-1"))
    assert options.timeout == 5.0
    assert counted(registry, "POST", "/v1/chat/completions", 200) == 1


async def test_the_context_defaults_to_the_configured_one(client: httpx.AsyncClient, gate: FakeGate) -> None:
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=KEY)).status_code == 200
    assert gate.calls[0][1] == "openai"


async def test_a_stream_is_server_sent_events_ending_with_done(
    client: httpx.AsyncClient, registry: CollectorRegistry
) -> None:
    request = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    response = await client.post("/v1/chat/completions", json=request, headers=KEY)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    *chunks, done = events_of(response.text)
    assert done == "[DONE]"
    parsed = [json.loads(chunk) for chunk in chunks]
    deltas = [c["choices"][0]["delta"] for c in parsed if c["choices"]]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"content": "Hello"},
        {"content": " "},
        {"content": "there"},
        {},
    ]
    assert parsed[-2]["choices"][0]["finish_reason"] == "stop"
    assert parsed[-1]["choices"] == []
    assert parsed[-1]["usage"]["total_tokens"] == 6
    assert counted(registry, "POST", "/v1/chat/completions", 200) == 1


async def test_a_refusal_before_the_stream_is_a_plain_http_error(client: httpx.AsyncClient, gate: FakeGate) -> None:
    gate.refusal = HttpError(403, "PERMISSION_DENIED", "provider not allowed", ("PROVIDER_NOT_ALLOWED",))
    response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=KEY)
    assert response.status_code == 403
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("permission_error", "PROVIDER_NOT_ALLOWED")


async def test_a_failure_mid_stream_is_an_error_event_and_no_done(
    client: httpx.AsyncClient, gate: FakeGate, registry: CollectorRegistry
) -> None:
    gate.failure = HttpError(503, "UNAVAILABLE", "provider failed", ("PROVIDER_UNAVAILABLE",))
    response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=KEY)
    assert response.status_code == 200
    events = events_of(response.text)
    assert "[DONE]" not in events
    assert json.loads(events[-1])["error"]["code"] == "PROVIDER_UNAVAILABLE"
    assert json.loads(events[-2])["choices"][0]["delta"] == {"content": "there"}
    assert counted(registry, "POST", "/v1/chat/completions", 503) == 1  # counted as it failed, like /v1/process:stream


async def test_a_rate_limit_is_a_429_with_retry_after(client: httpx.AsyncClient, gate: FakeGate) -> None:
    gate.refusal = HttpError(429, "RESOURCE_EXHAUSTED", "slow down", ("RATE_LIMITED",), retry_after_seconds=3)
    response = await client.post("/v1/chat/completions", json=CHAT, headers=KEY)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"


@pytest.mark.parametrize(
    ("content", "headers", "status", "param"),
    [
        (b"{not json", JSON, 400, "body"),
        (b'{"model": "fake", "messages": []}', JSON, 400, "messages"),
        (b"", {}, 400, "body"),
        (b'{"model": "fake"}', {"Content-Type": "text/plain"}, 415, "Content-Type"),
        (b'{"model": "fake", "n": 3, "messages": [{"role": "user", "content": "x"}]}', JSON, 400, "n"),
    ],
)
async def test_bad_requests_are_4xx_in_openais_shape_and_never_reach_the_gate(
    client: httpx.AsyncClient, gate: FakeGate, content: bytes, headers: dict[str, str], status: int, param: str
) -> None:
    response = await client.post("/v1/chat/completions", content=content, headers={**KEY, **headers})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert gate.calls == []


async def test_a_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
    response = await client.post("/v1/chat/completions", json=big, headers=KEY)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "BODY_TOO_LARGE"


async def test_models_lists_the_providers(client: httpx.AsyncClient, registry: CollectorRegistry) -> None:
    response = await client.get("/v1/models", headers=KEY)
    assert response.status_code == 200
    assert [m["id"] for m in response.json()["data"]] == ["fake", "openai"]
    assert counted(registry, "GET", "/v1/models", 200) == 1


async def test_wrong_methods_are_405_with_allow(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/chat/completions", headers=KEY)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert (await client.post("/v1/models", json={})).headers["allow"] == "GET, HEAD"


async def test_a_bad_forwarded_header_is_refused_before_the_gate(client: httpx.AsyncClient, gate: FakeGate) -> None:
    response = await client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer " + "k" * 7000})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert gate.calls == []


async def test_other_paths_go_to_the_edge_app(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/process", json={})).status_code == 204
    assert (await client.get("/v1/models/fake/more")).status_code == 204  # not ours: the edge app answers its 404
    assert (await client.get("/v1/modelsx")).status_code == 204


async def test_a_client_that_disconnects_mid_stream_cancels_the_gate_call(
    routes: OpenAIRoutes, gate: FakeGate, registry: CollectorRegistry
) -> None:
    gate.hold = True
    body = json.dumps({**CHAT, "stream": True}).encode()
    gone = asyncio.Event()
    sent: list[MutableMapping[str, Any]] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> MutableMapping[str, Any]:
        if messages:
            return messages.pop()
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)
        if b"there" in message.get("body", b""):  # every chunk is out: the client leaves
            gone.set()

    await routes(dict(CHAT_SCOPE), receive, send)
    assert gate.stream_cancelled.is_set()
    assert not any(b"[DONE]" in m.get("body", b"") for m in sent)
    assert counted(registry, "POST", "/v1/chat/completions", 499) == 1


async def test_a_stream_has_the_longer_stream_deadline_which_the_client_may_lower(
    client: httpx.AsyncClient, gate: FakeGate
) -> None:
    streamed = {**CHAT, "stream": True}
    await client.post("/v1/chat/completions", json=streamed, headers=KEY)
    await client.post("/v1/chat/completions", json=streamed, headers={**KEY, "X-Request-Timeout": "7"})
    await client.post("/v1/chat/completions", json=CHAT, headers=KEY)
    assert [options.timeout for _, _, options in gate.calls] == [300.0, 7.0, 30.0]


async def test_line_breaks_of_any_kind_arrive_intact_in_one_event_line(
    client: httpx.AsyncClient, gate: FakeGate
) -> None:
    gate.chunks = ["one\u2028two", "\r\n"]
    response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=KEY)
    texts = [json.loads(e)["choices"][0]["delta"].get("content") for e in events_of(response.text)[:-1]]
    assert texts[1:3] == ["one\u2028two", "\r\n"]
    assert all(len(event.splitlines()) == 1 for event in response.text.split("\n\n") if event)


async def test_a_replayed_stream_of_only_its_done_message_still_carries_the_reply(
    client: httpx.AsyncClient, gate: FakeGate
) -> None:
    gate.chunks = []  # what the gate streams for a repeated Idempotency-Key: the stored answer alone
    response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=KEY)
    deltas = [json.loads(e)["choices"][0]["delta"] for e in events_of(response.text)[:-1]]
    assert deltas == [{"role": "assistant", "content": ""}, {"content": "Hello there"}, {}]


async def test_a_model_the_caller_may_use_is_retrieved(client: httpx.AsyncClient, registry: CollectorRegistry) -> None:
    response = await client.get("/v1/models/openai", headers=KEY)
    assert response.status_code == 200
    assert response.json() == {"id": "openai", "object": "model", "created": 0, "owned_by": "techno"}
    assert counted(registry, "GET", "/v1/models/{model}", 200) == 1


async def test_any_other_model_is_a_404_in_openais_shape(
    client: httpx.AsyncClient, registry: CollectorRegistry
) -> None:
    response = await client.get("/v1/models/anthropic", headers=KEY)
    assert response.status_code == 404
    error = response.json()["error"]
    assert (error["type"], error["code"], error["reason_codes"]) == (
        "not_found_error",
        "model_not_found",
        ["MODEL_NOT_FOUND"],
    )
    assert "anthropic" in error["message"]
    assert error["trace_id"] == response.headers.get("x-trace-id", error["trace_id"])
    assert counted(registry, "GET", "/v1/models/{model}", 404) == 1


async def test_retrieving_a_model_is_refused_as_listing_them_is(client: httpx.AsyncClient, gate: FakeGate) -> None:
    gate.refusal = HttpError(401, "UNAUTHENTICATED", "no key", ("API_KEY_MISSING",))
    response = await client.get("/v1/models/fake")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


async def send_streamed(routes: OpenAIRoutes, on_body: Callable[[bytes], None]) -> list[bytes]:
    """The bodies of a streamed chat sent to ``routes`` over raw ASGI; ``on_body`` sees each as it is sent."""
    body = json.dumps({**CHAT, "stream": True}).encode()
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[bytes] = []

    async def receive() -> MutableMapping[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # the client stays
        raise AssertionError("unreachable")

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.body":
            sent.append(message["body"])
            on_body(message["body"])

    await routes(dict(CHAT_SCOPE), receive, send)
    return sent


async def test_a_quiet_stream_sends_keep_alive_comments(gate: FakeGate, registry: CollectorRegistry) -> None:
    """The gate holds its done message until a keep-alive has been sent: the stream only ends if one was."""
    routes = OpenAIRoutes(
        inner_app, gate, HttpMetrics(registry), Limits(30.0, 4096, keepalive_seconds=0.01), default_context="openai"
    )
    release = gate.release = asyncio.Event()
    sent = await send_streamed(routes, lambda body: release.set() if body == KEEP_ALIVE else None)
    assert KEEP_ALIVE in sent
    assert sent[sent.index(KEEP_ALIVE) - 1].startswith(b"data: ")  # after the chunks, while the gate was quiet
    assert sent[-1] == b""
    assert sent[-2].endswith(b"data: [DONE]\n\n")
    assert counted(registry, "POST", "/v1/chat/completions", 200) == 1


async def test_a_stream_that_ends_without_its_done_message_is_an_error(
    client: httpx.AsyncClient, gate: FakeGate
) -> None:
    gate.done = False
    response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=KEY)
    assert response.status_code == 200
    events = events_of(response.text)
    assert "[DONE]" not in events
    assert json.loads(events[-1])["error"]["code"] == "INTERNAL"
    gate.chunks = []  # nothing at all: still a plain HTTP error, nothing was sent
    response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=KEY)
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "api_error"


@pytest.fixture
async def cors_client(gate: FakeGate) -> AsyncIterator[httpx.AsyncClient]:
    routes = OpenAIRoutes(
        inner_app,
        gate,
        HttpMetrics(CollectorRegistry()),
        Limits(30.0, 4096),
        default_context="openai",
        cors=Cors.of(["https://app.example"]),
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=routes), base_url="http://edge") as client:
        yield client


@pytest.mark.parametrize(("path", "methods"), [("/v1/chat/completions", "POST"), ("/v1/models/fake", "GET, HEAD")])
async def test_a_preflight_from_an_allowed_origin_is_answered(
    cors_client: httpx.AsyncClient, gate: FakeGate, path: str, methods: str
) -> None:
    preflight = {
        "Origin": "https://app.example",
        "Access-Control-Request-Method": methods.split(",")[0],
        "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os",
    }
    response = await cors_client.options(path, headers=preflight)
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "https://app.example"
    assert response.headers["access-control-allow-methods"] == methods
    allowed = [name.strip() for name in response.headers["access-control-allow-headers"].split(",")]
    assert "*" in allowed  # the SDK's own headers (X-Stainless-*)
    assert "Authorization" in allowed  # the one header * does not cover
    assert gate.calls == []


async def test_answers_to_an_allowed_origin_name_it(cors_client: httpx.AsyncClient) -> None:
    origin = {"Origin": "https://app.example"}
    streamed = await cors_client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers={**KEY, **origin})
    refused = await cors_client.post("/v1/chat/completions", content=b"{", headers={**KEY, **JSON, **origin})
    for response in (streamed, refused, await cors_client.get("/v1/models", headers={**KEY, **origin})):
        assert response.headers["access-control-allow-origin"] == "https://app.example"
        assert "X-Trace-Id" in response.headers["access-control-expose-headers"]
    assert refused.status_code == 400


async def test_preflights_are_405_from_other_origins_or_with_cors_off(
    client: httpx.AsyncClient, cors_client: httpx.AsyncClient
) -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    off = await client.options("/v1/chat/completions", headers=preflight)
    other = await cors_client.options("/v1/chat/completions", headers={**preflight, "Origin": "https://evil.example"})
    for response in (off, other):
        assert response.status_code == 405
        assert "access-control-allow-origin" not in response.headers
    assert other.headers["vary"] == "Origin"
