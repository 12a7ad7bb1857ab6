"""The server-sent events parser the vendor adapters read their streams with."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

from techno_executor.adapters.providers.sse import ServerSentEvent, parse_sse


async def _lines(lines: Iterable[str]) -> AsyncIterator[str]:
    for line in lines:
        yield line


async def parsed(*lines: str) -> list[ServerSentEvent]:
    return [event async for event in parse_sse(_lines(lines))]


async def test_data_lines_of_one_event_are_joined_and_a_blank_line_ends_it() -> None:
    events = await parsed('data: {"a":', "data: 1}", "", "data: [DONE]", "")
    assert events == [ServerSentEvent("message", '{"a":\n1}'), ServerSentEvent("message", "[DONE]")]


async def test_the_event_name_applies_to_its_event_only() -> None:
    events = await parsed("event: message_start", "data: {}", "", "data: x", "")
    assert [event.event for event in events] == ["message_start", "message"]


async def test_comments_and_unknown_fields_are_skipped_and_one_leading_space_is_removed() -> None:
    events = await parsed(": keep-alive", "", "id: 7", "retry: 10", "data:  two spaces", "data:none", "")
    assert events == [ServerSentEvent("message", " two spaces\nnone")]


async def test_an_event_without_its_final_blank_line_is_still_given_and_empty_events_are_not() -> None:
    assert await parsed("event: ping", "", "data: last") == [ServerSentEvent("message", "last")]
