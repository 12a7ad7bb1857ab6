"""The fake language-model vendor: deterministic answers computed from the prompt, no network.

It stands where a real vendor adapter stands (behind the ``Provider`` port) and behaves like one: it honours
its timeout and takes configurable time. It also injects the faults of a ``FaultSwitch`` — latency with jitter,
server errors, 429 with Retry-After, timeouts and hangs — drawn per call from a seeded random generator, and an
operator can switch them at run time (``FaultSwitch.replace`` takes effect on the next call). Its answers come
from reading the executor's prompt convention (``domain.prompt``) the way a model would read the instructions —
crude text heuristics, but in the output format the task asked for, so every action can run end to end in
development and tests.

It streams too (``stream``): the same answer in pieces shaped by a ``StreamShape`` (size, pause between them),
with the drawn fault striking before the first piece or, when the shape says so, in the middle. ``streams_open``
and ``chunks_generated`` show whether it is still working, so a test can prove a cancelled caller stopped it.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import Any, Literal

from techno_executor.domain.faults import FaultProfile, FaultSwitch, StreamShape
from techno_executor.domain.prompt import Prompt, parse_prompt
from techno_executor.domain.provider import (
    Completion,
    ProviderRateLimited,
    ProviderServerError,
    ProviderTimeout,
    StreamEvent,
    Usage,
)

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"\w+")

Fault = Literal["hang", "timeout", "rate_limit", "error"]
Sleep = Callable[[float], Awaitable[None]]

# A timeout fault answers this long after the caller's timeout: late enough that the caller's own timeout
# fires first, bounded so that a caller without one is not held for ever.
TIMEOUT_FAULT_MARGIN_SECONDS = 0.1
SERVER_ERROR_STATUS = 503


def pick_fault(profile: FaultProfile, draw: float) -> Fault | None:
    """The fault for a uniform ``draw`` in [0, 1): cumulative bands hang, timeout, rate limit, error, then none.

    A rate of 1.0 always wins its band and 0.0 never does, since ``draw < 1``.
    """
    bound = 0.0
    bands: tuple[tuple[Fault, float], ...] = (
        ("hang", profile.hang_rate),
        ("timeout", profile.timeout_rate),
        ("rate_limit", profile.rate_limit_rate),
        ("error", profile.error_rate),
    )
    for fault, rate in bands:
        bound += max(rate, 0.0)
        if draw < bound:
            return fault
    return None


def latency_seconds(profile: FaultProfile, draw: float) -> float:
    """``latency_ms`` ± uniform jitter for a uniform ``draw`` in [0, 1), in seconds, never negative."""
    milliseconds = profile.latency_ms + (2 * draw - 1) * profile.latency_jitter_ms
    return max(milliseconds, 0.0) / 1000


class FakeProvider:
    """``faults`` switches the injected faults at run time; without it, ``latency_ms`` and ``error_rate`` make
    a fixed profile (the older form). ``rng`` (or ``seed``) drives the draws, so a seeded run replays the same
    faults; ``sleep`` lets tests observe the delays without waiting them."""

    def __init__(
        self,
        *,
        name: str = "fake",
        model: str = "fake-echo-1",
        latency_ms: int = 0,
        error_rate: float = 0.0,
        seed: int | None = None,
        faults: FaultSwitch | None = None,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
        stream_shape: StreamShape | None = None,
    ) -> None:
        if faults is not None and (latency_ms or error_rate):
            raise ValueError("pass either faults or latency_ms/error_rate, not both")
        if rng is not None and seed is not None:
            raise ValueError("pass either rng or seed, not both")
        if faults is None:
            faults = FaultSwitch(FaultProfile(latency_ms=latency_ms, error_rate=error_rate))
        stream_shape = stream_shape or StreamShape()
        problems = faults.current.problems() + stream_shape.problems()
        if problems:
            raise ValueError("; ".join(f"{field} {why}" for field, why in problems))
        self._name = name
        self._model = model
        self._faults = faults
        # Two draws per call (fault, then jitter), whatever the profile: a seed replays the same faults even
        # when the latency settings change.
        self._random = rng or random.Random(seed)  # noqa: S311 - simulation, not security
        self._sleep = sleep
        self._shape = stream_shape
        self.calls = 0
        self.injected: Counter[Fault] = Counter()
        self.streams_open = 0
        self.chunks_generated = 0

    @property
    def name(self) -> str:
        return self._name

    @property
    def model(self) -> str:
        return self._model

    @property
    def faults(self) -> FaultSwitch:
        return self._faults

    async def complete(self, prompt: str, *, timeout: float) -> Completion:
        fault, delay, profile = self._draw()
        await self._strike(fault, delay, timeout, profile)
        text, input_tokens, output_tokens = reply(prompt)
        return Completion(text=text, input_tokens=input_tokens, output_tokens=output_tokens)

    async def stream(self, prompt: str, *, timeout: float) -> AsyncGenerator[StreamEvent, None]:
        fault, delay, profile = self._draw()
        shape = self._shape
        mid_stream = shape.fault_after_chunks > 0
        await self._strike(None if mid_stream else fault, delay, timeout, profile)
        text, input_tokens, output_tokens = reply(prompt)
        self.streams_open += 1
        try:
            for index in range(0, len(text), shape.chunk_chars):
                if mid_stream and index == shape.fault_after_chunks * shape.chunk_chars:
                    await self._strike(fault, 0.0, timeout, profile)
                if index and shape.chunk_delay_ms:
                    await self._sleep(shape.chunk_delay_ms / 1000)
                self.chunks_generated += 1
                yield text[index : index + shape.chunk_chars]
            yield Usage(input_tokens=input_tokens, output_tokens=output_tokens)
        finally:  # also when the caller closes the stream early or is cancelled
            self.streams_open -= 1

    def _draw(self) -> tuple[Fault | None, float, FaultProfile]:
        self.calls += 1
        profile = self._faults.current  # read per call: a replace() applies from the next call on
        fault = pick_fault(profile, self._random.random())
        delay = latency_seconds(profile, self._random.random())
        if fault is not None:
            self.injected[fault] += 1
        return fault, delay, profile

    async def _strike(self, fault: Fault | None, delay: float, timeout: float, profile: FaultProfile) -> None:
        """Wait ``delay`` and play ``fault`` (None: none), within ``timeout`` as a vendor would."""
        if fault == "hang":
            # Never answers: only the caller's timeout or deadline, by cancelling, ends the wait.
            await asyncio.Event().wait()
        elif fault == "timeout":
            # Answers too late; the caller's own timeout fires first (not ProviderTimeout raised here).
            await self._sleep(timeout + TIMEOUT_FAULT_MARGIN_SECONDS)
            return
        if delay >= timeout:
            await self._sleep(timeout)
            raise ProviderTimeout(f"{self._name} did not answer within {timeout:.3f}s")
        if delay:
            await self._sleep(delay)
        if fault == "rate_limit":
            raise ProviderRateLimited(
                f"{self._name} throttled the call (simulated)", retry_after=profile.retry_after_seconds
            )
        if fault == "error":
            raise ProviderServerError(f"{self._name} failed (simulated)", status=SERVER_ERROR_STATUS)


# Prompts up to this long have their reply kept (a few recent ones, so at most a few MiB).
_KEPT_PROMPT_CHARS = 16_384
_KEPT_REPLIES = 128


def reply(prompt: str) -> tuple[str, int, int]:
    """The answer to ``prompt`` with its input and output token counts. A reply is a pure function of its
    prompt and the same prompts recur (benchmarks, retries, tests): reading one costs this process a quarter of
    its own CPU per execution — work a real vendor does on its own machines — so recent ones are kept."""
    if len(prompt) > _KEPT_PROMPT_CHARS:
        return _reply(prompt)
    return _kept_reply(prompt)


def _reply(prompt: str) -> tuple[str, int, int]:
    text = answer(prompt)
    return text, count_tokens(prompt), count_tokens(text)


_kept_reply = functools.lru_cache(maxsize=_KEPT_REPLIES)(_reply)


def count_tokens(text: str) -> int:
    """Word count: a stand-in for a tokenizer, close enough for usage accounting in tests."""
    return len(_WORD.findall(text))


def answer(prompt_text: str) -> str:
    prompt = parse_prompt(prompt_text)
    if prompt is None:
        return f"Received {count_tokens(prompt_text)} words."
    text = _first_text(prompt.inputs)
    if prompt.task == "summarize":
        return _summary(text)
    if prompt.task == "chat":
        return f"You said: {_summary(text, max_words=40)}"
    if prompt.json_schema is None:
        return _summary(text)
    return json.dumps(_json_answer(prompt, text), ensure_ascii=False)


def _json_answer(prompt: Prompt, text: str) -> dict[str, Any]:
    inputs = prompt.inputs
    if prompt.task == "classify":
        return _classification(text, [str(label) for label in inputs.get("labels", [])])
    if prompt.task == "extract":
        return {str(name): _find_field(text, str(name)) for name in inputs.get("fields", [])}
    if prompt.task == "analyze_document":
        sentences = _sentences(text)
        return {"summary": _summary(text), "key_points": sentences[:3]}
    # An unknown JSON task: every asked-for key, filled with the start of the text.
    return {key: _summary(text, max_words=10) for key in prompt.json_schema or {}}


def _first_text(inputs: Mapping[str, Any]) -> str:
    return next((value for value in inputs.values() if isinstance(value, str)), "")


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(" ".join(text.split())) if s.strip()]


def _summary(text: str, *, max_words: int = 25) -> str:
    """The first sentence, cut to ``max_words``."""
    sentences = _sentences(text)
    words = (sentences[0] if sentences else "").split()
    return " ".join(words[:max_words]) + (" …" if len(words) > max_words else "")


def _classification(text: str, labels: list[str]) -> dict[str, Any]:
    """The label sharing most words with the text; ties are broken by a hash of the text, so the same text
    always gets the same label."""
    if not labels:
        return {"label": "", "confidence": 0.0}
    words = {w.casefold() for w in _WORD.findall(text)}
    overlaps = [len(words & {w.casefold() for w in _WORD.findall(label)}) for label in labels]
    best = max(overlaps)
    tied = [label for label, overlap in zip(labels, overlaps, strict=True) if overlap == best]
    digest = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")
    return {"label": tied[digest % len(tied)], "confidence": 0.9 if best else round(1 / len(labels), 3)}


def _find_field(text: str, name: str) -> str | None:
    """``name: value`` or ``name = value`` in the text, up to the end of the clause."""
    match = re.search(rf"\b{re.escape(name)}\s*[:=]\s*([^,;\n]+)", text, flags=re.IGNORECASE)
    return match.group(1).strip() if match else None
