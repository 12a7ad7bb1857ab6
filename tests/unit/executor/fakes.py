"""Test doubles shared by the executor's unit tests: a manual clock and a scripted provider."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterable, Sequence

from techno_executor.domain.provider import Completion, ProviderError, StreamEvent, Usage


class FakeClock:
    """A monotonic clock that moves only when told to; ``sleep`` advances it instead of waiting."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class ScriptedProvider:
    """Answers from a script: each step is a Completion text to return or a ProviderError to raise; the last
    step repeats. ``timeouts`` records the timeout each call was given."""

    name = "scripted"
    model = "scripted-1"

    def __init__(self, steps: Iterable[str | ProviderError], *, clock: FakeClock | None = None, cost: float = 0.0):
        self.steps = list(steps)
        self._clock = clock
        self._cost = cost
        self.timeouts: list[float] = []
        self.prompts: list[str] = []

    @property
    def calls(self) -> int:
        return len(self.timeouts)

    async def complete(self, prompt: str, *, timeout: float) -> Completion:
        self.timeouts.append(timeout)
        self.prompts.append(prompt)
        if self._clock is not None:
            self._clock.advance(self._cost)
        step = self.steps[min(len(self.timeouts), len(self.steps)) - 1]
        if isinstance(step, ProviderError):
            raise step
        return Completion(text=step, input_tokens=7, output_tokens=3)


# A streamed answer: its events in order; a ProviderError raised where it stands, HANG waits until cancelled.
HANG = "<hang>"
Script = Sequence[str | Usage | ProviderError]


class StreamingProvider:
    """Streams from a script: each call takes the next answer (the last repeats). An answer that is a
    ``ProviderError`` fails before the first piece. ``open`` counts the streams not yet closed."""

    name = "streaming"
    model = "streaming-1"

    def __init__(self, *answers: Script | ProviderError, clock: FakeClock | None = None, cost: float = 0.0) -> None:
        self.answers = list(answers)
        self.calls = 0
        self.open = 0
        self._clock = clock
        self._cost = cost

    async def complete(self, prompt: str, *, timeout: float) -> Completion:
        raise AssertionError("a streamed execution must not call complete")

    async def stream(self, prompt: str, *, timeout: float) -> AsyncGenerator[StreamEvent, None]:
        self.calls += 1
        answer = self.answers[min(self.calls, len(self.answers)) - 1]
        if self._clock is not None:
            self._clock.advance(self._cost)
        if isinstance(answer, ProviderError):
            raise answer
        self.open += 1
        try:
            for event in answer:
                if isinstance(event, ProviderError):
                    raise event
                if event == HANG:
                    await asyncio.Event().wait()
                yield event
        finally:
            self.open -= 1
