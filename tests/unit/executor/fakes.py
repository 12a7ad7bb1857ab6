"""Test doubles shared by the executor's unit tests: a manual clock and a scripted provider."""

from __future__ import annotations

from collections.abc import Iterable

from techno_executor.domain.provider import Completion, ProviderError


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
