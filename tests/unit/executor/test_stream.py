"""The StreamAction use case with scripted streaming providers and a manual clock: governance before the first
piece (retry, fallback, breaker), failures after it (no retry, a breaker failure), validation at the end, and a
caller who goes away."""

from __future__ import annotations

from contextlib import aclosing

import pytest

from techno_core.errors import DeadlineExceeded, Unavailable
from techno_executor.adapters.action_file import shipped_catalogue
from techno_executor.adapters.providers import ProviderRejected
from techno_executor.application.execute import ExecuteAction, ExecuteCommand, Execution, ProviderRoute
from techno_executor.application.stream import StreamAction, StreamOutput
from techno_executor.domain.breaker import CircuitBreaker
from techno_executor.domain.provider import Provider, ProviderServerError, Usage
from techno_executor.domain.retry import RetryPolicy

from .fakes import HANG, FakeClock, Script, ScriptedProvider, StreamingProvider
from .test_execute import RecordingObserver

SUMMARIZE = ExecuteCommand(action="summarize", payload={"text": "A long text."})
ANSWER: Script = ["A ", "short ", "summary.", Usage(5, 2)]


def use_case(
    *providers: Provider, clock: FakeClock, observer: RecordingObserver, provider_timeout: float = 30.0
) -> tuple[StreamAction, list[CircuitBreaker]]:
    breakers = [CircuitBreaker(p.name, failure_threshold=3, open_seconds=60, clock=clock) for p in providers]
    execute = ExecuteAction(
        catalogue=shipped_catalogue(),
        routes=[ProviderRoute(p, b) for p, b in zip(providers, breakers, strict=True)],
        retry=RetryPolicy(max_attempts=3, sleep=clock.sleep, random=lambda: 1.0, clock=clock),
        observer=observer,
        provider_timeout_seconds=provider_timeout,
        clock=clock,
    )
    return StreamAction(execute), breakers


async def run(stream: StreamAction, received: list[StreamOutput], command: ExecuteCommand = SUMMARIZE) -> None:
    async with aclosing(stream.stream(command, timeout=None)) as outputs:
        async for output in outputs:
            received.append(output)  # noqa: PERF401 - one by one: a failing stream keeps what came first


def done(received: list[StreamOutput]) -> Execution:
    last = received[-1]
    assert isinstance(last, Execution)
    return last


async def test_pieces_then_the_execution_with_usage_and_a_breaker_success() -> None:
    clock, observer = FakeClock(), RecordingObserver()
    provider = StreamingProvider(ANSWER, clock=clock, cost=0.5)
    stream, [breaker] = use_case(provider, clock=clock, observer=observer)
    received: list[StreamOutput] = []
    await run(stream, received)

    assert received[:-1] == ["A ", "short ", "summary."]
    execution = done(received)
    assert execution.result == {"summary": "A short summary."}
    assert (execution.provider, execution.input_tokens, execution.output_tokens, execution.attempts) == (
        "streaming",
        5,
        2,
        1,
    )
    assert ("first_chunk", 0.5) in observer.events
    assert ("stream", "completed") in observer.events
    assert observer.finished[0]["succeeded"] is True
    assert breaker.snapshot().calls_in_window == 1
    assert breaker.snapshot().consecutive_failures == 0
    assert provider.open == 0


async def test_a_failure_before_the_first_piece_is_retried() -> None:
    clock, observer = FakeClock(), RecordingObserver()
    provider = StreamingProvider(ProviderServerError("503"), ANSWER)
    stream, _ = use_case(provider, clock=clock, observer=observer)
    received: list[StreamOutput] = []
    await run(stream, received)
    assert done(received).attempts == 2
    assert provider.calls == 2
    assert clock.sleeps == [0.2]  # the retry policy's backoff


async def test_a_refused_request_falls_back_to_the_next_provider_before_the_first_piece() -> None:
    clock, observer = FakeClock(), RecordingObserver()
    first, second = StreamingProvider(ProviderRejected("400")), StreamingProvider(ANSWER)
    second.name = "second"
    stream, _ = use_case(first, second, clock=clock, observer=observer)
    received: list[StreamOutput] = []
    await run(stream, received)
    assert done(received).provider == "second"
    assert (first.calls, second.calls) == (1, 1)


async def test_a_failure_after_the_first_piece_ends_the_stream_without_retry_or_fallback() -> None:
    clock, observer = FakeClock(), RecordingObserver()
    first, second = StreamingProvider(["A ", ProviderServerError("overloaded")]), StreamingProvider(ANSWER)
    second.name = "second"
    stream, [breaker, _] = use_case(first, second, clock=clock, observer=observer)
    received: list[StreamOutput] = []
    with pytest.raises(Unavailable) as raised:
        await run(stream, received)

    assert raised.value.reason == "PROVIDER_UNAVAILABLE"
    assert raised.value.metadata == {"provider": "streaming", "chunks": "1"}
    assert received == ["A "]
    assert (first.calls, second.calls) == (1, 0)
    assert breaker.snapshot().consecutive_failures == 1
    assert ("stream", "failed") in observer.events
    assert first.open == 0


async def test_a_silent_provider_mid_stream_is_a_provider_timeout_and_a_breaker_failure() -> None:
    clock, observer = FakeClock(), RecordingObserver()
    provider = StreamingProvider(["A ", HANG])
    stream, [breaker] = use_case(provider, clock=clock, observer=observer, provider_timeout=0.05)
    received: list[StreamOutput] = []
    with pytest.raises(DeadlineExceeded) as raised:
        await run(stream, received)
    assert raised.value.reason == "PROVIDER_TIMEOUT"
    assert received == ["A "]
    assert breaker.snapshot().consecutive_failures == 1
    assert provider.open == 0  # the hanging stream was closed


async def test_an_answer_that_does_not_validate_is_provider_output_invalid_without_asking_again() -> None:
    clock, observer = FakeClock(), RecordingObserver()
    provider = StreamingProvider(["not ", "json", Usage(5, 2)])
    stream, _ = use_case(provider, clock=clock, observer=observer)
    command = ExecuteCommand(action="analyze_document", payload={"document": "Revenue grew."})
    received: list[StreamOutput] = []
    with pytest.raises(Unavailable) as raised:
        await run(stream, received, command)
    assert raised.value.reason == "PROVIDER_OUTPUT_INVALID"
    assert received == ["not ", "json"]
    assert provider.calls == 1


async def test_every_circuit_open_is_circuit_open_without_calling() -> None:
    clock, observer = FakeClock(), RecordingObserver()
    provider = StreamingProvider(ANSWER)
    stream, [breaker] = use_case(provider, clock=clock, observer=observer)
    breaker.force_open()
    with pytest.raises(Unavailable) as raised:
        await run(stream, [])
    assert raised.value.reason == "CIRCUIT_OPEN"
    assert provider.calls == 0


async def test_a_caller_who_goes_away_closes_the_provider_stream_and_gives_no_verdict() -> None:
    clock, observer = FakeClock(), RecordingObserver()
    provider = StreamingProvider(["A ", HANG])
    stream, [breaker] = use_case(provider, clock=clock, observer=observer)
    async with aclosing(stream.stream(SUMMARIZE, timeout=None)) as outputs:
        assert await anext(outputs) == "A "
        assert provider.open == 1
    assert provider.open == 0
    assert breaker.snapshot().calls_in_window == 0
    assert ("stream", "cancelled") in observer.events
    assert observer.finished[0]["succeeded"] is False


async def test_a_provider_that_cannot_stream_answers_in_one_piece() -> None:
    clock, observer = FakeClock(), RecordingObserver()
    stream, _ = use_case(ScriptedProvider(["A summary."]), clock=clock, observer=observer)
    received: list[StreamOutput] = []
    await run(stream, received)
    assert received[0] == "A summary."
    assert done(received).result == {"summary": "A summary."}
