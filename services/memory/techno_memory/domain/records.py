"""The two kinds of records the memory service keeps."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class AuditEventKind(StrEnum):
    DECISION = "DECISION"
    OUTCOME = "OUTCOME"
    BREAKER = "BREAKER"
    ADMIN = "ADMIN"


@dataclass(frozen=True)
class AuditEvent:
    """One immutable entry of the audit trail. ``recorded_at`` is None until the event is stored: it is the time of
    the transaction that stored it, by this service's clock (``occurred_at`` is the writer's)."""

    event_id: str
    trace_id: str
    kind: AuditEventKind
    occurred_at: datetime
    service: str
    principal_id: str = ""
    action: str = ""
    context_id: str = ""
    result: str = ""
    reason_codes: tuple[str, ...] = ()
    attributes: dict[str, Any] = field(default_factory=dict)
    recorded_at: datetime | None = None


def new_events(events: Sequence[AuditEvent], stored: Collection[str]) -> tuple[list[bool], list[AuditEvent]]:
    """What appending ``events`` adds when the event_ids in ``stored`` are already stored: one flag per event, True
    for the first occurrence of an id not stored yet (a stored one, or a later occurrence, repeats it), and those
    first occurrences, in order. Appends are idempotent by event_id."""
    seen = set(stored)
    flags, new = [], []
    for event in events:
        is_new = event.event_id not in seen
        flags.append(is_new)
        if is_new:
            seen.add(event.event_id)
            new.append(event)
    return flags, new


# What a key may do. The gate enforces them; this service only keeps them, so it refuses any other value (a typo
# would otherwise be stored and silently grant nothing).
API_KEY_SCOPES = frozenset({"process", "audit:read", "admin"})
# A key created without scopes may only process requests: never more than the caller asked for.
DEFAULT_SCOPES = ("process",)


def utc_now() -> datetime:
    return datetime.now(UTC)


def effective_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """The scopes to store: ``DEFAULT_SCOPES`` when none are given, otherwise each once, in the order given."""
    return tuple(dict.fromkeys(scopes)) or DEFAULT_SCOPES


@dataclass(frozen=True)
class NewApiKey:
    """What an operator tool sends to register a key: never the key itself, only its SHA-256."""

    key_id: str
    prefix: str
    key_hash: str
    name: str
    profile: str
    scopes: tuple[str, ...] = ()
    expires_at: datetime | None = None


@dataclass(frozen=True)
class ApiKey:
    """A stored key. ``updated_at`` is the time of its last change (creation, then its first revocation): the
    gates ask only for keys changed since their previous read."""

    key_id: str
    prefix: str
    key_hash: str
    name: str
    profile: str
    created_at: datetime
    revoked_at: datetime | None = None
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    expires_at: datetime | None = None
    updated_at: datetime = field(kw_only=True)

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True)
class KeyListing:
    """Keys as read, with the time of the read by the clock that stamps ``updated_at``: the next incremental read
    starts from it (less a margin, see ``SqlRepository.list_api_keys``)."""

    keys: tuple[ApiKey, ...]
    read_at: datetime
