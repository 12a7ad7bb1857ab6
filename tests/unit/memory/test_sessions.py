"""Session and preference rules, the session use case's bounds and the sweeper's batching, over fakes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from techno_core.errors import InvalidArgument, NotFound
from techno_memory.application.sessions import Sessions
from techno_memory.application.sweeper import ExpirySweeper, Swept
from techno_memory.domain.session_validation import validate_append, validate_preferences
from techno_memory.domain.sessions import NewMessage, Preferences, Session
from techno_memory.settings import MemorySettings

NOW = datetime(2025, 6, 1, tzinfo=UTC)


def fields(error: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    return [violation.field for violation in error.value.violations]


@pytest.mark.parametrize("language", ["en", "pt-BR", "zh-Hant-TW", "gsw", "es-419"])
def test_language_tags_accepted(language: str) -> None:
    validate_preferences("key", Preferences(language=language))


@pytest.mark.parametrize("language", ["EN", "e", "english", "en_US", "en-", "pt-BR-toolongsubtag", "en-" + "a" * 40])
def test_language_tags_refused(language: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        validate_preferences("key", Preferences(language=language))
    assert fields(error) == ["preferences.language"]


def test_empty_preferences_are_valid() -> None:
    validate_preferences("key", Preferences())


@pytest.mark.parametrize("character", ["\x00", "\x1b", "\x7f", "\x85"])
def test_control_characters_are_refused(character: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        validate_append("s", "p", [NewMessage("user", f"a{character}b")])
    assert fields(error) == ["messages[0].content"]


def test_too_many_messages_in_one_append() -> None:
    with pytest.raises(InvalidArgument) as error:
        validate_append("s", "p", [NewMessage("user", "x")] * 101)
    assert fields(error) == ["messages"]


def test_settings_defaults() -> None:
    settings = MemorySettings()
    assert settings.memory_session_ttl_seconds == 8 * 3600
    assert settings.memory_session_max_messages == 50
    assert settings.memory_session_sweep_seconds == 60


class FakeStore:
    def __init__(self, expired: int = 0) -> None:
        self.appended: list[NewMessage] = []
        self.expired = expired
        self.limits: list[int] = []

    async def append_messages(
        self,
        session_id: str,
        principal_id: str,
        messages: Sequence[NewMessage],
        *,
        now: datetime,
        expires_at: datetime,
        keep: int,
    ) -> Session | None:
        self.appended = list(messages)
        return None if session_id == "gone" else Session(session_id, principal_id, now, expires_at)

    async def delete_expired_sessions(self, *, now: datetime, limit: int) -> int:
        self.limits.append(limit)
        deleted = min(limit, self.expired)
        self.expired -= deleted
        return deleted


async def test_messages_beyond_the_bound_are_not_even_written() -> None:
    store = FakeStore()
    sessions = Sessions(store, ttl=timedelta(hours=1), max_messages=2, clock=lambda: NOW)  # type: ignore[arg-type]
    session = await sessions.append("s", "p", [NewMessage("user", str(n)) for n in range(5)])
    assert [m.content for m in store.appended] == ["3", "4"]
    assert session.expires_at == NOW + timedelta(hours=1)
    with pytest.raises(NotFound):
        await sessions.append("gone", "p", [NewMessage("user", "x")])


class ExpiredKeys:
    def __init__(self, expired: int = 0) -> None:
        self.expired = expired
        self.limits: list[int] = []

    async def delete_expired_idempotency_keys(self, *, now: datetime, limit: int) -> int:
        self.limits.append(limit)
        deleted = min(limit, self.expired)
        self.expired -= deleted
        return deleted


class Counted:
    def __init__(self) -> None:
        self.expired_total = 0
        self.keys_expired_total = 0
        self.failures = 0

    def expired(self, count: int) -> None:
        self.expired_total += count

    def idempotency_keys_expired(self, count: int) -> None:
        self.keys_expired_total += count

    def failed(self) -> None:
        self.failures += 1


async def test_the_sweeper_deletes_in_batches_until_none_is_left() -> None:
    store, keys, observer = FakeStore(expired=25), ExpiredKeys(expired=20), Counted()
    sweeper = ExpirySweeper(store, keys, observer, interval_seconds=60, batch=10, clock=lambda: NOW)  # type: ignore[arg-type]
    assert await sweeper.sweep() == Swept(sessions=25, idempotency_keys=20)
    assert store.limits == [10, 10, 10]
    assert keys.limits == [10, 10, 10]  # a full last batch: one more look, which finds none
    assert observer.expired_total == 25
    assert observer.keys_expired_total == 20
