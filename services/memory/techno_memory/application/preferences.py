"""A principal's explicit preferences and the privacy requests over everything kept about a principal.

Preferences are written only by ``set``, with exactly what the principal chose: nothing here infers or adjusts
them (an inferred preference would be a profile the principal never agreed to).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime

from techno_memory.application.ports import PreferenceStore, PrincipalDataStore
from techno_memory.domain.export_pages import PAGE_BUDGET_BYTES, decode_cursor, encode_cursor
from techno_memory.domain.records import utc_now
from techno_memory.domain.session_validation import validate_preferences, validate_principal_id
from techno_memory.domain.sessions import Erasure, Preferences, PrincipalExport


class PreferenceBook:
    def __init__(self, store: PreferenceStore, *, clock: Callable[[], datetime] = utc_now) -> None:
        self._store = store
        self._clock = clock

    async def get(self, principal_id: str) -> Preferences:
        validate_principal_id(principal_id)
        return await self._store.preferences(principal_id)

    async def set(self, principal_id: str, preferences: Preferences) -> Preferences:
        validate_preferences(principal_id, preferences)
        await self._store.set_preferences(principal_id, preferences, now=self._clock())
        return preferences


class PrincipalData:
    """Export and erasure of a principal's data: sessions, preferences and idempotency records. The audit trail
    is not part of it: it is evidence of what the gateway decided, append-only and hash-chained, kept under its
    own retention (``PRINCIPAL_TABLES`` in ``techno_memory.adapters.tables`` accounts for every table)."""

    def __init__(
        self,
        store: PrincipalDataStore,
        *,
        clock: Callable[[], datetime] = utc_now,
        page_budget_bytes: int = PAGE_BUDGET_BYTES,
    ) -> None:
        self._store = store
        self._clock = clock
        self._page_budget = page_budget_bytes

    async def export(self, principal_id: str, page_token: str = "") -> PrincipalExport:
        """One page of the export (``techno_memory.domain.export_pages``); ``next_page_token`` is "" on the last."""
        validate_principal_id(principal_id)
        cursor = decode_cursor(page_token, principal_id)
        page, following = await self._store.export_principal(
            principal_id, now=self._clock(), cursor=cursor, budget_bytes=self._page_budget
        )
        token = "" if following is None else encode_cursor(following, principal_id)
        return dataclasses.replace(page, next_page_token=token)

    async def erase(self, principal_id: str) -> Erasure:
        validate_principal_id(principal_id)
        return await self._store.erase_principal(principal_id)
