"""The vendor adapters' streaming over real HTTP: each against a local server speaking its vendor's server-sent
events (``streaming_vendor``), for the pieces, the usage, the request they send, and every way a stream fails."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

import pytest

from techno_executor.adapters.providers import AnthropicProvider, GeminiProvider, OpenAICompatibleProvider
from techno_executor.adapters.providers.http import ProviderBadResponse
from techno_executor.domain.provider import (
    ProviderConnectionError,
    ProviderRateLimited,
    ProviderServerError,
    StreamEvent,
    Usage,
)
from tests.integration.executor.scripted_vendor import serve
from tests.integration.executor.streaming_vendor import EVENTS, Event, Stream, StreamingVendor, error_event

KEY = "sk-test-streaming-0123456789"
VENDORS = ("openai", "anthropic", "google")
PIECES = ("Bon", "jour", " à", " tous.")
Adapter = OpenAICompatibleProvider | AnthropicProvider | GeminiProvider


def provider_for(name: str, url: str) -> Adapter:
    if name == "openai":
        return OpenAICompatibleProvider(name="openai", model="gpt-test", base_url=f"{url}/v1", api_key=KEY)
    if name == "anthropic":
        return AnthropicProvider(model="claude-test", api_key=KEY, base_url=url)
    return GeminiProvider(model="gemini-test", api_key=KEY, base_url=url)


@pytest.fixture(params=VENDORS)
async def vendor(request: pytest.FixtureRequest) -> AsyncIterator[tuple[StreamingVendor, Adapter]]:
    stand_in = StreamingVendor(request.param, PIECES)
    async with serve([stand_in]) as urls:
        provider = provider_for(request.param, urls[request.param])
        try:
            yield stand_in, provider
        finally:
            await provider.aclose()


async def collect(provider: Adapter, events: list[StreamEvent]) -> None:
    # One by one: a test of a failing stream reads what arrived before the failure.
    async for event in provider.stream("Say hello.", timeout=5.0):
        events.append(event)  # noqa: PERF401


def first_text_event(events: list[Event]) -> int:
    """The index of the vendor event that carries the first piece, ``PIECES[0]``."""
    return next(i for i, (_, data) in enumerate(events) if PIECES[0] in str(data))


async def test_streams_the_pieces_in_order_then_the_usage(vendor: tuple[StreamingVendor, Adapter]) -> None:
    _, provider = vendor
    events: list[StreamEvent] = []
    await collect(provider, events)
    assert events == [*PIECES, Usage(11, 3)]


async def test_asks_the_vendor_to_stream(vendor: tuple[StreamingVendor, Adapter]) -> None:
    stand_in, provider = vendor
    await collect(provider, [])
    request = stand_in.calls[0].request
    if stand_in.name == "openai":
        assert request.path == "/v1/chat/completions"
        assert request.body["stream"] is True
        assert request.body["stream_options"] == {"include_usage": True}
        assert request.headers["authorization"] == f"Bearer {KEY}"
    elif stand_in.name == "anthropic":
        assert request.path == "/v1/messages"
        assert request.body["stream"] is True
        assert request.headers["x-api-key"] == KEY
    else:
        assert request.path == "/v1beta/models/gemini-test:streamGenerateContent"
        assert request.headers["x-goog-api-key"] == KEY
        assert KEY not in request.path


async def test_a_vendor_error_mid_stream_fails_after_the_first_pieces(
    vendor: tuple[StreamingVendor, Adapter],
) -> None:
    stand_in, provider = vendor
    events = EVENTS[stand_in.name](PIECES)
    # The error comes right after the first text piece (the second Gemini event, the second OpenAI delta …).
    first_text = first_text_event(events)
    stand_in.queue_streams(Stream([*events[: first_text + 1], error_event(stand_in.name)]))
    received: list[StreamEvent] = []
    with pytest.raises(ProviderServerError, match="mid-stream") as raised:
        await collect(provider, received)
    assert received == ["Bon"]
    assert KEY not in str(raised.value)


async def test_a_broken_connection_mid_stream_is_a_connection_error(
    vendor: tuple[StreamingVendor, Adapter],
) -> None:
    stand_in, provider = vendor
    events = EVENTS[stand_in.name](PIECES)
    stand_in.queue_streams(Stream(events, break_after=len(events) - 1))
    with pytest.raises(ProviderConnectionError):
        await collect(provider, [])


async def test_a_stream_without_its_end_is_a_bad_response(vendor: tuple[StreamingVendor, Adapter]) -> None:
    stand_in, provider = vendor
    events = EVENTS[stand_in.name](PIECES)
    stand_in.queue_streams(Stream(events[:-1] if stand_in.name != "google" else events[:1]))
    with pytest.raises(ProviderBadResponse):
        await collect(provider, [])


async def test_errors_before_the_stream_map_like_unary_calls(vendor: tuple[StreamingVendor, Adapter]) -> None:
    stand_in, provider = vendor
    stand_in.queue_streams(Stream(status=429, headers={"retry-after": "2"}), Stream(status=503))
    with pytest.raises(ProviderRateLimited) as limited:
        await collect(provider, [])
    assert limited.value.retry_after == 2
    with pytest.raises(ProviderServerError):
        await collect(provider, [])


async def test_closing_the_stream_early_hangs_up_on_the_vendor(
    vendor: tuple[StreamingVendor, Adapter],
) -> None:
    stand_in, provider = vendor
    events = EVENTS[stand_in.name](PIECES)
    first_text = first_text_event(events)
    stand_in.queue_streams(Stream(events, hang_after=first_text + 1))
    async with aclosing(provider.stream("Say hello.", timeout=5.0)) as pieces:
        assert await anext(pieces) == "Bon"
    # The vendor was still holding the answer open: it sees the client go away.
    await stand_in.wait_for_hang_up(0)
