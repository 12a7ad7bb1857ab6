"""The fake vendor: deterministic answers every action can parse, timeouts, seeded failures, injected faults."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from typing import Any

import pytest

from techno_executor.adapters.action_file import shipped_catalogue
from techno_executor.adapters.fake_provider import (
    TIMEOUT_FAULT_MARGIN_SECONDS,
    FakeProvider,
    Fault,
    count_tokens,
    latency_seconds,
    pick_fault,
)
from techno_executor.domain.faults import FaultProfile, FaultSwitch, StreamShape
from techno_executor.domain.provider import (
    Completion,
    ProviderError,
    ProviderRateLimited,
    ProviderServerError,
    ProviderTimeout,
    Usage,
)

PAYLOADS: dict[str, dict[str, Any]] = {
    "chat": {"message": "Hello there. How are you?"},
    "summarize": {"text": "The cat sat on the mat. Then it slept."},
    "classify": {"text": "The invoice is overdue", "labels": ["billing", "support"]},
    "extract": {"text": "name: Ada Lovelace, born = 1815", "fields": ["name", "born", "died"]},
    "analyze_document": {"document": "First point. Second point! Third? Fourth."},
}


@pytest.mark.parametrize("action_name", sorted(PAYLOADS))
async def test_every_action_parses_the_fake_answer(action_name: str) -> None:
    action = shipped_catalogue().get(action_name)
    inputs = action.validate(PAYLOADS[action_name])
    provider = FakeProvider()
    first = await provider.complete(action.prompt(inputs), timeout=1)
    second = await provider.complete(action.prompt(inputs), timeout=1)
    assert first == second  # deterministic
    assert first.input_tokens > 0
    assert first.output_tokens == count_tokens(first.text) > 0
    assert action.parse(first.text, inputs)


async def test_answers_follow_the_input() -> None:
    catalogue, provider = shipped_catalogue(), FakeProvider()

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
    with pytest.raises(ValueError, match="hang_rate"):
        FakeProvider(faults=FaultSwitch(FaultProfile(hang_rate=-0.1)))
    with pytest.raises(ValueError, match="add up"):
        FakeProvider(faults=FaultSwitch(FaultProfile(error_rate=0.6, timeout_rate=0.6)))
    with pytest.raises(ValueError, match="either faults"):
        FakeProvider(faults=FaultSwitch(), error_rate=0.5)
    with pytest.raises(ValueError, match="either rng"):
        FakeProvider(rng=random.Random(1), seed=1)


# --- Fault injection -------------------------------------------------------------------------------------------


class RecordingSleep:
    """Stands for ``asyncio.sleep``: records each delay and returns at once, without yielding."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def faulty(profile: FaultProfile, *, seed: int = 1, sleep: RecordingSleep | None = None) -> FakeProvider:
    return FakeProvider(
        faults=FaultSwitch(profile),
        rng=random.Random(seed),
        sleep=sleep or RecordingSleep(),
    )


async def outcome(provider: FakeProvider, *, timeout: float = 1.0) -> str:
    """What one call did: "answer", an error type, or "hang" (still pending once every other outcome is done:
    with a non-yielding sleep, a call that does not hang finishes in its first step)."""
    task = asyncio.create_task(provider.complete("x", timeout=timeout))
    await asyncio.sleep(0)
    if not task.done():
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return "hang"
    error = task.exception()
    if error is None:
        return "answer"
    assert isinstance(error, ProviderError)
    return "error" if isinstance(error, ProviderServerError) and error.status == 503 else error.error_type


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        (FaultProfile(error_rate=1.0), ProviderServerError),
        (FaultProfile(rate_limit_rate=1.0, retry_after_seconds=7), ProviderRateLimited),
    ],
)
async def test_error_faults_at_rate_one_always_trigger(profile: FaultProfile, expected: type[ProviderError]) -> None:
    provider = faulty(profile)
    for _ in range(20):
        with pytest.raises(expected) as raised:
            await provider.complete("x", timeout=1)
    if isinstance(raised.value, ProviderRateLimited):
        assert raised.value.retry_after == 7
        assert raised.value.error_type == "rate_limited"
    assert sum(provider.injected.values()) == 20


async def test_timeout_fault_sleeps_past_the_timeout_without_raising_itself() -> None:
    sleep = RecordingSleep()
    provider = faulty(FaultProfile(timeout_rate=1.0, latency_ms=5), sleep=sleep)
    completion = await provider.complete("just some words", timeout=0.5)  # nobody cancelled: a late answer
    assert completion.text == "Received 3 words."
    assert sleep.delays == [pytest.approx(0.5 + TIMEOUT_FAULT_MARGIN_SECONDS)]
    assert 0.5 < sleep.delays[0] <= 1.0  # past the timeout, yet bounded
    assert provider.injected == Counter({"timeout": 1})


async def test_timeout_fault_is_cut_by_the_callers_timeout() -> None:
    provider = FakeProvider(faults=FaultSwitch(FaultProfile(timeout_rate=1.0)))
    started = time.perf_counter()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(provider.complete("x", timeout=0.05), 0.05)
    assert time.perf_counter() - started < 1.0


async def test_hang_is_cancelled_by_the_callers_timeout() -> None:
    provider = FakeProvider(faults=FaultSwitch(FaultProfile(hang_rate=1.0)))
    started = time.perf_counter()
    with pytest.raises(TimeoutError):
        # The provider's own timeout is long: only the caller's wait_for ends the hang.
        await asyncio.wait_for(provider.complete("x", timeout=60), 0.05)
    assert time.perf_counter() - started < 1.0
    assert provider.injected == Counter({"hang": 1})


async def test_hang_at_rate_one_always_hangs() -> None:
    provider = faulty(FaultProfile(hang_rate=1.0))
    assert [await outcome(provider) for _ in range(10)] == ["hang"] * 10


async def test_zero_rates_inject_no_fault() -> None:
    sleep = RecordingSleep()
    provider = faulty(FaultProfile(latency_ms=3, latency_jitter_ms=2, retry_after_seconds=9), sleep=sleep)
    assert {await outcome(provider) for _ in range(200)} == {"answer"}
    assert not provider.injected
    assert all(0.001 <= delay <= 0.005 for delay in sleep.delays)


async def test_seeded_fault_draws_are_reproducible() -> None:
    profile = FaultProfile(error_rate=0.2, rate_limit_rate=0.2, timeout_rate=0.2, hang_rate=0.2, latency_jitter_ms=5)

    async def run(seed: int) -> tuple[list[str], list[float]]:
        sleep = RecordingSleep()
        provider = faulty(profile, seed=seed, sleep=sleep)
        return [await outcome(provider) for _ in range(50)], sleep.delays

    first = await run(42)
    assert first == await run(42)
    assert set(first[0]) == {"answer", "error", "rate_limited", "hang"}  # a timeout fault answers late here
    assert first != await run(43)


async def test_distribution_follows_the_rates() -> None:
    profile = FaultProfile(error_rate=0.1, rate_limit_rate=0.2, timeout_rate=0.15, hang_rate=0.05)
    provider = faulty(profile, seed=2024)
    draws = 2000
    outcomes = Counter([await outcome(provider) for _ in range(draws)])
    # A timeout fault answers late (no one cancels it here): counted by the provider, not by the outcome.
    assert outcomes["hang"] == provider.injected["hang"]
    assert outcomes["error"] == provider.injected["error"]
    assert outcomes["rate_limited"] == provider.injected["rate_limit"]
    assert outcomes["answer"] == draws - outcomes["hang"] - outcomes["error"] - outcomes["rate_limited"]
    expected: dict[Fault, float] = {"hang": 0.05, "timeout": 0.15, "rate_limit": 0.2, "error": 0.1}
    for fault, rate in expected.items():
        share = provider.injected[fault] / draws
        assert abs(share - rate) < 0.03, (fault, share)  # about 4 standard deviations at n = 2000
    assert sum(provider.injected.values()) == pytest.approx(0.5 * draws, abs=0.04 * draws)


async def test_replace_takes_effect_on_the_next_call() -> None:
    switch = FaultSwitch()
    provider = FakeProvider(faults=switch, rng=random.Random(3), sleep=RecordingSleep())
    assert isinstance(await provider.complete("x", timeout=1), Completion)
    switch.replace(FaultProfile(error_rate=1.0))
    with pytest.raises(ProviderServerError):
        await provider.complete("x", timeout=1)
    switch.replace(FaultProfile(rate_limit_rate=1.0, retry_after_seconds=3))
    with pytest.raises(ProviderRateLimited) as raised:
        await provider.complete("x", timeout=1)
    assert raised.value.retry_after == 3
    switch.replace(FaultProfile())
    assert isinstance(await provider.complete("x", timeout=1), Completion)
    assert provider.faults is switch


async def test_latency_is_jittered_around_the_mean_and_never_negative() -> None:
    sleep = RecordingSleep()
    provider = faulty(FaultProfile(latency_ms=100, latency_jitter_ms=20), sleep=sleep)
    for _ in range(300):
        await provider.complete("x", timeout=1)
    assert all(0.080 <= delay <= 0.120 for delay in sleep.delays)
    assert min(sleep.delays) < 0.090 < 0.110 < max(sleep.delays)  # the whole band is used
    assert latency_seconds(FaultProfile(latency_ms=5, latency_jitter_ms=50), 0.0) == 0.0


async def test_latency_also_delays_the_injected_errors() -> None:
    sleep = RecordingSleep()
    provider = faulty(FaultProfile(latency_ms=40, error_rate=1.0), sleep=sleep)
    with pytest.raises(ProviderServerError):
        await provider.complete("x", timeout=1)
    assert sleep.delays == [pytest.approx(0.040)]


async def test_real_latency_is_waited() -> None:
    provider = FakeProvider(faults=FaultSwitch(FaultProfile(latency_ms=20, latency_jitter_ms=5)))
    started = time.perf_counter()
    await provider.complete("x", timeout=1)
    elapsed = time.perf_counter() - started
    assert 0.014 <= elapsed < 1.0


async def test_latency_beyond_the_timeout_waits_only_the_timeout() -> None:
    sleep = RecordingSleep()
    provider = faulty(FaultProfile(latency_ms=60_000), sleep=sleep)
    with pytest.raises(ProviderTimeout):
        await provider.complete("x", timeout=0.25)
    assert sleep.delays == [0.25]


def test_fault_bands_are_cumulative_in_order() -> None:
    profile = FaultProfile(hang_rate=0.1, timeout_rate=0.2, rate_limit_rate=0.3, error_rate=0.1)
    assert [pick_fault(profile, draw) for draw in (0.0, 0.09, 0.1, 0.29, 0.31, 0.59, 0.61, 0.69, 0.71, 0.999)] == [
        "hang",
        "hang",
        "timeout",
        "timeout",
        "rate_limit",
        "rate_limit",
        "error",
        "error",
        None,
        None,
    ]
    assert pick_fault(FaultProfile(), 0.0) is None
    assert pick_fault(FaultProfile(error_rate=1.0), 0.9999999) == "error"


async def _streamed(provider: FakeProvider, prompt: str, received: list[object]) -> None:
    async for event in provider.stream(prompt, timeout=5.0):
        received.append(event)  # noqa: PERF401 - one by one: a failing stream keeps what came first


async def test_a_stream_is_the_same_answer_in_pieces_of_the_configured_size_then_its_usage() -> None:
    prompt = shipped_catalogue().get("summarize").prompt(PAYLOADS["summarize"])
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    provider = FakeProvider(stream_shape=StreamShape(chunk_chars=5, chunk_delay_ms=30), sleep=sleep)
    whole = await provider.complete(prompt, timeout=5.0)
    received: list[object] = []
    await _streamed(provider, prompt, received)

    *pieces, usage = received
    assert "".join(str(piece) for piece in pieces) == whole.text
    assert all(len(str(piece)) == 5 for piece in pieces[:-1])
    assert usage == Usage(whole.input_tokens, whole.output_tokens)
    assert sleeps == [0.03] * (len(pieces) - 1)  # between pieces, not before the first
    assert (provider.chunks_generated, provider.streams_open) == (len(pieces), 0)


async def test_a_fault_strikes_mid_stream_after_the_configured_pieces() -> None:
    provider = FakeProvider(
        faults=FaultSwitch(FaultProfile(error_rate=1.0)), stream_shape=StreamShape(chunk_chars=3, fault_after_chunks=2)
    )
    received: list[object] = []
    with pytest.raises(ProviderServerError):
        await _streamed(provider, "Tell me a story about cats.", received)
    assert len(received) == 2
    assert provider.streams_open == 0


async def test_a_fault_strikes_before_the_first_piece_by_default() -> None:
    provider = FakeProvider(faults=FaultSwitch(FaultProfile(rate_limit_rate=1.0)))
    received: list[object] = []
    with pytest.raises(ProviderRateLimited):
        await _streamed(provider, "Tell me a story.", received)
    assert received == []
    assert provider.chunks_generated == 0


async def test_closing_a_stream_early_stops_generating() -> None:
    provider = FakeProvider(stream_shape=StreamShape(chunk_chars=1))
    stream = provider.stream("Tell me a long story about cats.", timeout=5.0)
    assert await anext(stream) == "R"
    assert provider.streams_open == 1
    await stream.aclose()
    assert (provider.streams_open, provider.chunks_generated) == (0, 1)


@pytest.mark.parametrize(
    ("shape", "field"),
    [(StreamShape(chunk_chars=0), "chunk_chars"), (StreamShape(chunk_delay_ms=-1), "chunk_delay_ms")],
)
def test_an_invalid_stream_shape_is_refused_naming_it(shape: StreamShape, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        FakeProvider(stream_shape=shape)
