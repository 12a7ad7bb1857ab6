"""The preferences cache in front of memory."""

from __future__ import annotations

import asyncio

import pytest

from techno_executor.adapters.cached_context import CachedPreferences
from techno_executor.application.context import Preferences, Turn


class CountingContext:
    def __init__(self) -> None:
        self.preference_reads = 0
        self.history_reads = 0
        self.failing = False

    async def preferences(self, principal_id: str, *, timeout: float | None = None) -> Preferences:
        self.preference_reads += 1
        if self.failing:
            raise ConnectionError("memory down")
        return Preferences(tone="formal", format="", language=principal_id)

    async def history(self, principal_id: str, session_id: str, *, timeout: float | None = None) -> list[Turn]:
        self.history_reads += 1
        return []

    async def remember(
        self, principal_id: str, session_id: str, user: str, reply: str, *, timeout: float | None = None
    ) -> None:
        return None


async def test_preferences_are_read_once_per_principal_within_the_ttl() -> None:
    inner = CountingContext()
    cached = CachedPreferences(inner, ttl_seconds=60)
    assert (await cached.preferences("en")).language == "en"
    assert (await cached.preferences("en")).language == "en"
    assert (await cached.preferences("pt")).language == "pt"
    assert inner.preference_reads == 2


async def test_history_is_never_cached() -> None:
    inner = CountingContext()
    cached = CachedPreferences(inner, ttl_seconds=60)
    await cached.history("p", "s")
    await cached.history("p", "s")
    assert inner.history_reads == 2


async def test_failures_are_not_cached() -> None:
    inner = CountingContext()
    cached = CachedPreferences(inner, ttl_seconds=60)
    inner.failing = True
    with pytest.raises(ConnectionError):
        await cached.preferences("en")
    inner.failing = False
    assert (await cached.preferences("en")).language == "en"
    assert inner.preference_reads == 2


async def test_the_cache_is_bounded() -> None:
    inner = CountingContext()
    cached = CachedPreferences(inner, ttl_seconds=60, max_principals=2)
    for name in ("a", "b", "c", "a"):
        await cached.preferences(name)
    assert inner.preference_reads == 4  # "a" was evicted to make room for "c"


class SlowContext(CountingContext):
    """Reads wait until released, so a test can pile callers up behind one read."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def preferences(self, principal_id: str, *, timeout: float | None = None) -> Preferences:
        await self.release.wait()
        return await super().preferences(principal_id, timeout=timeout)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_concurrent_misses_share_one_read() -> None:
    inner = SlowContext()
    cached = CachedPreferences(inner, ttl_seconds=60)
    waiting = [asyncio.create_task(cached.preferences("en")) for _ in range(25)]
    await asyncio.sleep(0)
    inner.release.set()
    answers = await asyncio.gather(*waiting)
    assert {a.language for a in answers} == {"en"}
    assert inner.preference_reads == 1


async def test_a_cancelled_caller_does_not_cancel_the_shared_read() -> None:
    inner = SlowContext()
    cached = CachedPreferences(inner, ttl_seconds=60)
    first = asyncio.create_task(cached.preferences("en"))
    second = asyncio.create_task(cached.preferences("en"))
    await asyncio.sleep(0)
    first.cancel()
    inner.release.set()
    assert (await second).language == "en"
    assert first.cancelled()
    assert inner.preference_reads == 1


async def test_an_old_entry_is_served_while_one_read_refreshes_it() -> None:
    inner = CountingContext()
    clock = Clock()
    cached = CachedPreferences(inner, ttl_seconds=5, clock=clock)
    await cached.preferences("en")
    clock.now += 6  # past the fresh lifetime, within the stale one
    inner.failing = True  # the refresh fails: the old answer is still served
    answers = [await cached.preferences("en") for _ in range(10)]
    await asyncio.sleep(0)
    assert {a.language for a in answers} == {"en"}
    assert inner.preference_reads == 2  # one refresh for ten requests
    inner.failing = False
    await cached.preferences("en")
    await asyncio.sleep(0)
    assert inner.preference_reads == 3
    clock.now += 1
    await cached.preferences("en")
    assert inner.preference_reads == 3  # refreshed: fresh again


async def test_an_entry_past_twice_the_ttl_is_read_again() -> None:
    inner = CountingContext()
    clock = Clock()
    cached = CachedPreferences(inner, ttl_seconds=5, clock=clock)
    await cached.preferences("en")
    clock.now += 11
    inner.failing = True
    with pytest.raises(ConnectionError):
        await cached.preferences("en")
