"""What the use cases need from the outside world; adapters implement these."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from techno_memory.domain.records import ApiKey, AuditEvent, KeyListing, NewApiKey


class AuditStore(Protocol):
    async def store_events(self, events: Sequence[AuditEvent]) -> list[bool]:
        """Store ``events`` in ONE transaction; one flag per event, True when it was newly stored (False for a
        repeat of an event_id that is already stored, or that occurs earlier in ``events``)."""
        ...

    async def audit_trail(self, trace_id: str) -> list[AuditEvent]:
        """Every stored event of the trace, in append order."""
        ...


class KeyStore(Protocol):
    async def create_api_key(self, key: NewApiKey) -> ApiKey:
        """Raises ``AlreadyExists`` when the key_id or the key_hash is taken."""
        ...

    async def list_api_keys(self, updated_since: datetime | None = None) -> KeyListing:
        """Every key, or only those with ``updated_at >= updated_since``; ``read_at`` is taken before the read."""
        ...

    async def revoke_api_key(self, key_id: str) -> ApiKey:
        """Raises ``NotFound`` for an unknown id; revoking again changes nothing (neither the first revocation time
        nor ``updated_at``)."""
        ...


class AppendObserver(Protocol):
    """Told about every group-commit transaction (metrics)."""

    def committed(self, batch_size: int, appended: int) -> None: ...

    def failed(self, batch_size: int) -> None: ...
