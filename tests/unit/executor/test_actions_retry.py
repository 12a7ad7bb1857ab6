"""An answer that does not parse or validate is asked for once more from the same provider, then fails with
PROVIDER_OUTPUT_INVALID naming the action and the problem (or falls back to the next provider)."""

from __future__ import annotations

import pytest

from techno_core.errors import DeadlineExceeded, Unavailable
from techno_executor.application.execute import ExecuteCommand
from techno_executor.domain.breaker import CircuitState
from techno_executor.domain.provider import ProviderServerError

from .fakes import FakeClock
from .test_execute import harness, state
from .test_resilience import make_use_case, named

EXTRACT = ExecuteCommand(action="extract", payload={"text": "name: Ada", "fields": ["name", "born"]})
VALID = '{"name": "Ada", "born": null}'


async def test_one_bad_answer_is_asked_again_and_the_second_succeeds() -> None:
    h = harness("no JSON here", VALID)
    execution = await h.use_case.execute(EXTRACT, timeout=None)
    assert execution.result == {"fields": {"name": "Ada", "born": None}}
    assert h.provider.calls == 2
    assert h.provider.prompts[0] == h.provider.prompts[1]  # the same question, asked once more
    assert execution.attempts == 2
    assert state(h) is CircuitState.CLOSED
    assert h.breaker.snapshot().consecutive_failures == 0


async def test_two_bad_answers_fail_with_a_clear_status() -> None:
    h = harness("no JSON here", '{"name": "Ada"}')  # the second is JSON, without the required key
    with pytest.raises(Unavailable) as raised:
        await h.use_case.execute(EXTRACT, timeout=None)
    error = raised.value
    assert error.reason == "PROVIDER_OUTPUT_INVALID"
    assert "action extract" in error.message
    assert "'born' is a required property" in error.message  # what was wrong with the last answer
    assert error.metadata == {"provider": "scripted", "action": "extract"}
    assert h.provider.calls == 2  # one retry, no more
    assert state(h) is CircuitState.CLOSED  # it answered: it is up
    assert h.breaker.snapshot().consecutive_failures == 0
    assert h.observer.finished[0]["succeeded"] is False


async def test_bad_answers_never_trip_the_breaker() -> None:
    h = harness("garbage")
    for _ in range(5):
        with pytest.raises(Unavailable):
            await h.use_case.execute(EXTRACT, timeout=None)
    assert h.provider.calls == 10
    assert state(h) is CircuitState.CLOSED


async def test_a_failed_second_ask_is_output_invalid_too() -> None:
    h = harness("garbage", ProviderServerError("down", status=503))
    with pytest.raises(Unavailable) as raised:
        await h.use_case.execute(EXTRACT, timeout=None)
    assert raised.value.reason == "PROVIDER_OUTPUT_INVALID"
    assert "asked again, it failed" in raised.value.message
    assert h.provider.calls == 2  # the second ask is one call, outside the retry policy


async def test_no_time_left_for_the_second_ask_is_a_deadline() -> None:
    h = harness("garbage", VALID, cost=1.0)  # each call takes 1 s of the 1 s deadline
    with pytest.raises(DeadlineExceeded):
        await h.use_case.execute(EXTRACT, timeout=1.0)
    assert h.provider.calls == 1


async def test_after_two_bad_answers_the_next_provider_is_tried() -> None:
    clock = FakeClock()
    primary, backup = named("primary", "garbage"), named("backup", VALID)
    use_case = make_use_case(primary, backup, clock=clock)
    execution = await use_case.execute(EXTRACT, timeout=None)
    assert (execution.provider, primary.calls, backup.calls) == ("backup", 2, 1)
