"""A small parser of Server-Sent Events (the WHATWG ``text/event-stream`` format) for the vendors' streaming
answers.

Why our own: the one well-kept parser for httpx, ``httpx-sse``, is not among the project's dependencies, and the
part of the format the vendors use is a few lines: ``field: value`` lines, ``data`` lines of one event joined by
newlines, a blank line ending the event, comment lines starting with ``:``. ``retry`` and reconnection are left
out on purpose: a broken stream is never resumed (the answer would be generated, and billed, twice).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True)
class ServerSentEvent:
    event: str  # "message" when the event named none
    data: str


async def parse_sse(lines: AsyncIterable[str]) -> AsyncIterator[ServerSentEvent]:
    """The events of ``lines`` (as httpx's ``aiter_lines`` gives them: without their line ends). An event the
    stream did not finish with a blank line is still given: some servers close right after the last one."""
    event = ""
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield ServerSentEvent(event or "message", "\n".join(data))
            event, data = "", []
            continue
        if line.startswith(":"):
            continue  # a comment: keep-alive pings
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "event":
            event = value
    if data:
        yield ServerSentEvent(event or "message", "\n".join(data))
