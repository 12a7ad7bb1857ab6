"""The API key directory: the operator tools register and revoke keys, the gate lists them."""

from __future__ import annotations

from techno_memory.application.ports import KeyStore
from techno_memory.domain.records import ApiKey, NewApiKey
from techno_memory.domain.validation import validate_key_id, validate_new_key


class KeyDirectory:
    def __init__(self, store: KeyStore) -> None:
        self._store = store

    async def create(self, key: NewApiKey) -> ApiKey:
        validate_new_key(key)
        return await self._store.create_api_key(key)

    async def list(self) -> list[ApiKey]:
        return await self._store.list_api_keys()

    async def revoke(self, key_id: str) -> ApiKey:
        validate_key_id(key_id)
        return await self._store.revoke_api_key(key_id)
