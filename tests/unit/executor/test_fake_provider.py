"""The fake vendor: deterministic answers every action can parse, timeouts, seeded failures."""

from __future__ import annotations

from typing import Any

import pytest

from techno_executor.adapters.fake_provider import FakeProvider, count_tokens
from techno_executor.domain.actions import default_catalogue
from techno_executor.domain.provider import ProviderServerError, ProviderTimeout

PAYLOADS: dict[str, dict[str, Any]] = {
    "chat": {"message": "Hello there. How are you?"},
    "summarize": {"text": "The cat sat on the mat. Then it slept."},
    "classify": {"text": "The invoice is overdue", "labels": ["billing", "support"]},
    "extract": {"text": "name: Ada Lovelace, born = 1815", "fields": ["name", "born", "died"]},
    "analyze_document": {"document": "First point. Second point! Third? Fourth."},
}


@pytest.mark.parametrize("action_name", sorted(PAYLOADS))
async def test_every_action_parses_the_fake_answer(action_name: str) -> None:
    action = default_catalogue().get(action_name)
    inputs = action.validate(PAYLOADS[action_name])
    provider = FakeProvider()
    first = await provider.complete(action.prompt(inputs), timeout=1)
    second = await provider.complete(action.prompt(inputs), timeout=1)
    assert first == second  # deterministic
    assert first.input_tokens > 0
    assert first.output_tokens == count_tokens(first.text) > 0
    assert action.parse(first.text, inputs)


async def test_answers_follow_the_input() -> None:
    catalogue, provider = default_catalogue(), FakeProvider()

    async def run(name: str) -> dict[str, Any]:
        action = catalogue.get(name)
        inputs = action.validate(PAYLOADS[name])
        return action.parse((await provider.complete(action.prompt(inputs), timeout=1)).text, inputs)

    assert await run("summarize") == {"summary": "The cat sat on the mat."}
    assert await run("extract") == {"fields": {"name": "Ada Lovelace", "born": "1815", "died": None}}
    assert (await run("classify"))["label"] in ("billing", "support")


async def test_free_text_prompt_still_gets_an_answer() -> None:
    completion = await FakeProvider().complete("just some words", timeout=1)
    assert completion.text == "Received 3 words."


async def test_error_rate_one_always_fails_and_zero_never() -> None:
    failing = FakeProvider(error_rate=1.0)
    for _ in range(5):
        with pytest.raises(ProviderServerError):
            await failing.complete("x", timeout=1)
    healthy = FakeProvider(error_rate=0.0)
    for _ in range(5):
        await healthy.complete("x", timeout=1)
    assert (failing.calls, healthy.calls) == (5, 5)


async def test_seeded_failures_are_reproducible() -> None:
    async def outcomes(seed: int) -> list[bool]:
        provider = FakeProvider(error_rate=0.5, seed=seed)
        results = []
        for _ in range(20):
            try:
                await provider.complete("x", timeout=1)
                results.append(True)
            except ProviderServerError:
                results.append(False)
        return results

    first = await outcomes(7)
    assert first == await outcomes(7)
    assert True in first
    assert False in first


async def test_latency_beyond_the_timeout_is_a_provider_timeout() -> None:
    with pytest.raises(ProviderTimeout):
        await FakeProvider(latency_ms=60_000).complete("x", timeout=0.01)


def test_invalid_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="error_rate"):
        FakeProvider(error_rate=1.5)
