"""The API key directory: the operator tools register and revoke keys, the gates list them (in full at start-up,
then only the keys changed since their previous read)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime

from techno_memory.application.ports import KeyStore
from techno_memory.domain.records import ApiKey, KeyListing, NewApiKey, effective_scopes, utc_now
from techno_memory.domain.validation import validate_key_id, validate_new_key


class KeyDirectory:
    """``clock`` decides whether a requested expiry is still in the future."""

    def __init__(self, store: KeyStore, *, clock: Callable[[], datetime] = utc_now) -> None:
        self._store = store
        self._clock = clock

    async def create(self, key: NewApiKey) -> ApiKey:
        validate_new_key(key, now=self._clock())
        return await self._store.create_api_key(dataclasses.replace(key, scopes=effective_scopes(key.scopes)))

    async def list(self, updated_since: datetime | None = None) -> KeyListing:
        return await self._store.list_api_keys(updated_since)

    async def revoke(self, key_id: str) -> ApiKey:
        validate_key_id(key_id)
        return await self._store.revoke_api_key(key_id)
