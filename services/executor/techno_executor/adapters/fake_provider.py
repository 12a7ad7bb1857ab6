"""The fake language-model vendor: deterministic answers computed from the prompt, no network.

It stands where a real vendor adapter stands (behind the ``Provider`` port) and behaves like one: it honours
its timeout, takes configurable time and fails at a configurable, seeded rate with a server error. Its answers
come from reading the executor's prompt convention (``domain.prompt``) the way a model would read the
instructions — crude text heuristics, but in the output format the task asked for, so every action can run
end to end in development and tests.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
from collections.abc import Mapping
from typing import Any

from techno_executor.domain.prompt import Prompt, parse_prompt
from techno_executor.domain.provider import Completion, ProviderServerError, ProviderTimeout

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"\w+")


class FakeProvider:
    def __init__(
        self,
        *,
        name: str = "fake",
        model: str = "fake-echo-1",
        latency_ms: int = 0,
        error_rate: float = 0.0,
        seed: int | None = None,
    ) -> None:
        if not 0.0 <= error_rate <= 1.0 or latency_ms < 0:
            raise ValueError("error_rate must be within [0, 1] and latency_ms >= 0")
        self._name = name
        self._model = model
        self._latency = latency_ms / 1000
        self._error_rate = error_rate
        # Error draws only; a test simulating failures reproduces them exactly by fixing the seed.
        self._random = random.Random(seed)  # noqa: S311 - simulation, not security
        self.calls = 0

    @property
    def name(self) -> str:
        return self._name

    @property
    def model(self) -> str:
        return self._model

    async def complete(self, prompt: str, *, timeout: float) -> Completion:
        self.calls += 1
        try:
            async with asyncio.timeout(timeout):
                if self._latency:
                    await asyncio.sleep(self._latency)
        except TimeoutError as error:
            raise ProviderTimeout(f"{self._name} did not answer within {timeout:.3f}s") from error
        # error_rate 1.0 must always fail, and 0.0 never: random() is in [0, 1).
        if self._random.random() < self._error_rate:
            raise ProviderServerError(f"{self._name} failed (simulated)", status=503)
        text = answer(prompt)
        return Completion(text=text, input_tokens=count_tokens(prompt), output_tokens=count_tokens(text))


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
