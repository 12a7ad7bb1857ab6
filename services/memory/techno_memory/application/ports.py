"""What the use cases need from the outside world; adapters implement these."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from techno_memory.domain.audit_query import AuditFilter
from techno_memory.domain.export_pages import ExportCursor
from techno_memory.domain.idempotency import Claim, ClaimRequest
from techno_memory.domain.records import ApiKey, AuditEvent, KeyListing, NewApiKey
from techno_memory.domain.sessions import Erasure, NewMessage, Preferences, PrincipalExport, Session


class AuditStore(Protocol):
    async def store_events(self, events: Sequence[AuditEvent]) -> list[bool]:
        """Store ``events`` in ONE transaction; one flag per event, True when it was newly stored (False for a
        repeat of an event_id that is already stored, or that occurs earlier in ``events``)."""
        ...

    async def audit_trail(self, trace_id: str) -> list[AuditEvent]:
        """Every stored event of the trace, in append order."""
        ...

    async def list_events(
        self, filters: AuditFilter, *, after_id: int | None, limit: int
    ) -> list[tuple[int, AuditEvent]]:
        """At most ``limit`` stored events matching every filter, with ids above ``after_id`` (any id when None),
        as (id, event) in append order (ascending id)."""
        ...


class DecisionLedger(Protocol):
    """The reads of the outcome reconciler."""

    async def last_id_before(self, occurred_at: datetime) -> int:
        """The id just before the first event that occurred at or after ``occurred_at`` (the head's id when there
        is none; 0 on an empty trail)."""
        ...

    async def allowed_decisions(self, *, after_id: int, limit: int) -> list[tuple[int, AuditEvent]]:
        """At most ``limit`` DECISION events with result ALLOW and an id above ``after_id``, as (id, event) in
        append order, with ``recorded_at``."""
        ...

    async def outcomes_of(self, trace_ids: Sequence[str]) -> list[AuditEvent]:
        """Every OUTCOME event of these traces."""
        ...


class ReconcileObserver(Protocol):
    """Told about every run of the outcome reconciler (metrics)."""

    def reconciled(self, count: int) -> None:
        """``count`` open decisions were closed with an UNKNOWN outcome by this replica."""
        ...

    def failed(self) -> None: ...


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


class SessionStore(Protocol):
    """Conversation sessions. A session is live while ``expires_at > now``; an expired one is never read, slid
    or revived (even before the sweeper deletes it), and one of another principal is treated as absent."""

    async def create_session(self, session: Session) -> None: ...

    async def use_session(
        self, session_id: str, principal_id: str, *, now: datetime, expires_at: datetime
    ) -> Session | None:
        """Slide a live session's expiry to ``expires_at`` and return it with its messages; None when absent."""
        ...

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
        """In one transaction: slide, add ``messages`` stamped ``now``, delete all but the newest ``keep``."""
        ...

    async def delete_session(self, session_id: str, principal_id: str, *, now: datetime) -> bool:
        """True when a live session was deleted (its messages with it)."""
        ...

    async def delete_expired_sessions(self, *, now: datetime, limit: int) -> int:
        """Delete at most ``limit`` expired sessions (and their messages); how many were deleted."""
        ...


class PreferenceStore(Protocol):
    async def preferences(self, principal_id: str) -> Preferences:
        """Empty preferences when none are stored."""
        ...

    async def set_preferences(self, principal_id: str, preferences: Preferences, *, now: datetime) -> None:
        """Replace the stored preferences; empty ones are stored as no row at all."""
        ...


class PrincipalDataStore(Protocol):
    async def export_principal(
        self, principal_id: str, *, now: datetime, cursor: ExportCursor, budget_bytes: int
    ) -> tuple[PrincipalExport, ExportCursor | None]:
        """One page from ``cursor``: live sessions (oldest first, messages in order), then live idempotency
        records, about ``budget_bytes`` of content but never nothing; and the preferences. With the cursor of the
        next page, None after the last."""
        ...

    async def erase_principal(self, principal_id: str) -> Erasure:
        """Delete every session (expired ones too), its messages and the preferences, in one transaction."""
        ...


class IdempotencyStore(Protocol):
    """Idempotency records, keyed by (principal_id, key). Every decision is the database's: a claim is won by
    the one INSERT or compare-and-set UPDATE that changes the row, whichever replica runs it."""

    async def claim(self, request: ClaimRequest) -> Claim:
        """In one transaction: create the record (CLAIMED), or judge the stored one (``domain.idempotency.judge``)
        and take it over by compare-and-set when it is expired, or abandoned by a holder whose audit trail shows
        nothing may have run (CLAIMED, or IN_PROGRESS when another claim changed it first; OUTCOME_UNKNOWN when
        the holder's request may have run)."""
        ...

    async def complete(self, principal_id: str, key: str, response: bytes, *, now: datetime) -> bool:
        """Store the response of an unfinished, unexpired record; False when there is none (never claimed,
        released, expired or already completed)."""
        ...

    async def stored_response(self, principal_id: str, key: str, *, now: datetime) -> bytes | None:
        """The response of an unexpired completed record; None when there is none."""
        ...

    async def release(self, principal_id: str, key: str) -> None:
        """Delete the record if it has no response; nothing when there is none."""
        ...

    async def delete_expired_idempotency_keys(self, *, now: datetime, limit: int) -> int:
        """Delete at most ``limit`` records with ``expires_at <= now``; how many were deleted."""
        ...


class SweepObserver(Protocol):
    """Told about every sweep of expired sessions and idempotency records (metrics)."""

    def expired(self, count: int) -> None:
        """``count`` expired sessions were deleted."""
        ...

    def idempotency_keys_expired(self, count: int) -> None:
        """``count`` expired idempotency records were deleted."""
        ...

    def failed(self) -> None: ...
