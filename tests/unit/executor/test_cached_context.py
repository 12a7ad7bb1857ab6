"""The preferences cache in front of memory."""

from __future__ import annotations

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
