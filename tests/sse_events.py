"""Reading a Server-Sent Events response in tests, as the event stream format defines it (fields up to a blank
line, comments apart), from an httpx response's lines."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

WAIT = 10.0  # a bound on waiting for the next event; never reached when the stream is right


@dataclass
class Event:
    name: str
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class EventReader:
    """Reads the response as the event stream format defines it: fields until a blank line; comments apart."""

    lines: AsyncIterator[str]
    comments: list[str] = field(default_factory=list)

    async def next(self) -> Event | None:
        name, data = "message", list[str]()
        async for line in self.lines:
            if not line:
                if data:
                    return Event(name, "\n".join(data))
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
            elif line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data.append(line.removeprefix("data: "))
        return None

    async def wait_for_comments(self, count: int) -> None:
        """Reads on until ``count`` comments in all were seen; only comments may come meanwhile."""
        async for line in self.lines:
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
            else:
                assert not line, f"an event while waiting for comments: {line}"
            if len(self.comments) >= count:
                return

    async def rest(self) -> list[Event]:
        events = []
        while (event := await asyncio.wait_for(self.next(), WAIT)) is not None:
            events.append(event)
        return events
