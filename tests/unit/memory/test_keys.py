"""The key directory use case over an in-memory store: defaults and checks before anything is stored."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from techno_core.errors import InvalidArgument
from techno_memory.application.keys import KeyDirectory
from techno_memory.domain.records import ApiKey, KeyListing, NewApiKey

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
KEY_HASH = "a" * 64


class RecordingStore:
    """Keeps what it is asked to create; lists whatever it holds."""

    def __init__(self) -> None:
        self.created: list[NewApiKey] = []
        self.asked_since: list[datetime | None] = []

    async def create_api_key(self, key: NewApiKey) -> ApiKey:
        self.created.append(key)
        return ApiKey(
            key.key_id,
            key.prefix,
            key.key_hash,
            key.name,
            key.profile,
            NOW,
            scopes=key.scopes,
            expires_at=key.expires_at,
            updated_at=NOW,
        )

    async def list_api_keys(self, updated_since: datetime | None = None) -> KeyListing:
        self.asked_since.append(updated_since)
        return KeyListing(keys=(), read_at=NOW)

    async def revoke_api_key(self, key_id: str) -> ApiKey:
        raise NotImplementedError


def new_key(**changes: Any) -> NewApiKey:
    return dataclasses.replace(NewApiKey("key_1", "tk_ab12", KEY_HASH, "ci", "default"), **changes)


async def test_a_key_without_scopes_may_only_process() -> None:
    store = RecordingStore()
    created = await KeyDirectory(store, clock=lambda: NOW).create(new_key())
    assert created.scopes == ("process",)
    assert store.created[0].scopes == ("process",)


async def test_scopes_are_stored_once_each_in_the_order_given() -> None:
    store = RecordingStore()
    await KeyDirectory(store, clock=lambda: NOW).create(new_key(scopes=("admin", "process", "admin")))
    assert store.created[0].scopes == ("admin", "process")


async def test_an_expiry_is_judged_by_the_directory_clock() -> None:
    store = RecordingStore()
    directory = KeyDirectory(store, clock=lambda: NOW)
    await directory.create(new_key(expires_at=NOW + timedelta(microseconds=1)))
    with pytest.raises(InvalidArgument):
        await directory.create(new_key(key_id="key_2", expires_at=NOW))
    assert [key.key_id for key in store.created] == ["key_1"]  # the refused key never reached the store


async def test_listing_passes_updated_since_through() -> None:
    store = RecordingStore()
    directory = KeyDirectory(store)
    await directory.list()
    await directory.list(NOW)
    assert store.asked_since == [None, NOW]
