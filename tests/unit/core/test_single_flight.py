"""SingleFlight: one run per key in flight, shared by its callers, forgotten when it ends."""

from __future__ import annotations

import asyncio

import pytest

from techno_core.single_flight import SingleFlight


async def test_concurrent_callers_of_one_key_share_one_run_and_other_keys_run_apart() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    release = asyncio.Event()
    runs: list[str] = []

    async def work(key: str) -> str:
        runs.append(key)
        await release.wait()
        return key.upper()

    callers = [asyncio.ensure_future(flights.run("a", lambda: work("a"))) for _ in range(5)]
    other = asyncio.ensure_future(flights.run("b", lambda: work("b")))
    await asyncio.sleep(0)
    assert flights.in_flight("a")
    assert flights.in_flight("b")
    release.set()
    assert await asyncio.gather(*callers, other) == ["A"] * 5 + ["B"]
    assert sorted(runs) == ["a", "b"]
    assert not flights.in_flight("a")
    assert not flights.in_flight("b")


async def test_a_cancelled_caller_leaves_the_run_to_the_others() -> None:
    flights: SingleFlight[None, int] = SingleFlight()
    release = asyncio.Event()

    async def work() -> int:
        await release.wait()
        return 7

    leaving = asyncio.ensure_future(flights.run(None, work))
    staying = asyncio.ensure_future(flights.run(None, work))
    await asyncio.sleep(0)
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    release.set()
    assert await staying == 7


async def test_a_failure_is_not_kept_the_next_call_runs_again() -> None:
    flights: SingleFlight[None, int] = SingleFlight()
    answers: list[int | Exception] = [RuntimeError("down"), 3]

    async def work() -> int:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    with pytest.raises(RuntimeError):
        await flights.run(None, work)
    assert not flights.in_flight(None)
    assert await flights.run(None, work) == 3
