"""The hash chain of the audit trail: what makes it tamper-evident.

Every stored event carries ``prev_hash``, the ``hash`` of the event appended just before it (by ``id``, the append
order; ``GENESIS_HASH`` for the first), and its own ``hash``::

    hash = SHA-256(canonical_encoding(event) + prev_hash)      (lower-case hex, 64 characters)

so changing, removing or reordering any event breaks the link to the next one, and ``verify`` finds it. What a
chain alone cannot show is an attacker who rewrites it from the altered event to the end, or cuts its tail:
that needs the head hash kept elsewhere (``ChainReport.head``, printed by ``python -m techno_memory verify``).

``event_hash`` is the ONE definition, used by the write path, the verifier and the migration that chained the
events stored before it existed. Changing it changes the meaning of every stored hash: it would need a new
version of the encoding and a migration, never an edit here.

The canonical encoding is the UTF-8 of a JSON array (so no field can bleed into the next), with no spaces and
only ASCII (``\\uXXXX`` escapes), of, in this order:

``"techno-audit-v1"``, event_id, trace_id, kind, occurred_at, service, principal_id, action, context_id, result,
reason_codes (a list of strings), attributes (an object, keys sorted at every depth), prev_hash

- ``occurred_at`` is ISO 8601 in UTC with microseconds and a ``Z``: ``2025-06-01T12:00:00.000000Z``.
- Numbers in ``attributes`` are encoded as the double they are (attributes come from a protobuf ``Struct``,
  whose numbers are all doubles): an integral value below 2**53 as an integer (``12``, never ``12.0``), any
  other as Python's shortest round-tripping form. The databases may give back ``12.0`` as ``12`` (PostgreSQL's
  JSONB keeps numbers as decimals), and this makes both encode alike.
- ``recorded_at`` and the row ``id`` are not covered: the first is the service's own stamp, the second the
  position that ``prev_hash`` already fixes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from techno_memory.domain.records import AuditEvent

ENCODING_VERSION = "techno-audit-v1"
HASH_LENGTH = 64
# The prev_hash of the first event of the trail.
GENESIS_HASH = "0" * HASH_LENGTH
_EXACT_INTEGER_LIMIT = 2**53


def utc_iso(moment: datetime) -> str:
    """``moment`` as ISO 8601 in UTC with microseconds: ``2025-06-01T12:00:00.000000Z``."""
    if moment.tzinfo is None:
        raise ValueError("naive datetimes are ambiguous; pass an aware one")
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _canonical(value: Any) -> Any:
    """``value`` with every number in its canonical form (see the module's documentation)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        number = float(value)
        return int(number) if number.is_integer() and abs(number) < _EXACT_INTEGER_LIMIT else number
    if isinstance(value, Mapping):
        return {str(key): _canonical(item) for key, item in value.items()}
    if isinstance(value, Sequence):
        return [_canonical(item) for item in value]
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def canonical_json(value: Any) -> str:
    """The canonical JSON text of ``value``: keys sorted, no spaces, ASCII only, numbers normalised."""
    return json.dumps(_canonical(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def canonical_encoding(event: AuditEvent, prev_hash: str) -> bytes:
    """The bytes hashed for ``event`` linked after ``prev_hash``."""
    fields = [
        ENCODING_VERSION,
        event.event_id,
        event.trace_id,
        event.kind.value,
        utc_iso(event.occurred_at),
        event.service,
        event.principal_id,
        event.action,
        event.context_id,
        event.result,
        list(event.reason_codes),
        dict(event.attributes),
        prev_hash,
    ]
    return canonical_json(fields).encode("ascii")


def event_hash(event: AuditEvent, prev_hash: str) -> str:
    """The chain hash of ``event`` appended after the event whose hash is ``prev_hash``: lower-case hex SHA-256."""
    return hashlib.sha256(canonical_encoding(event, prev_hash)).hexdigest()


@dataclass(frozen=True)
class ChainLink:
    """One event as appended to the chain."""

    event: AuditEvent
    prev_hash: str
    hash: str


def chain(events: Sequence[AuditEvent], head: str) -> list[ChainLink]:
    """Link ``events``, in order, after the event whose hash is ``head``."""
    links = []
    for event in events:
        link = ChainLink(event=event, prev_hash=head, hash=event_hash(event, head))
        links.append(link)
        head = link.hash
    return links


@dataclass(frozen=True)
class ChainReport:
    """What verifying the chain found. ``verified`` counts the events checked and found intact before the first
    broken link (all of them when ``intact``); ``head`` is the hash of the last intact event (``GENESIS_HASH``
    for an empty trail)."""

    verified: int
    head: str = GENESIS_HASH
    broken_at_id: int | None = None
    broken_event_id: str | None = None
    problem: str | None = None

    @property
    def intact(self) -> bool:
        return self.problem is None

    def summary(self) -> str:
        if self.intact:
            return f"verified {self.verified} events; chain intact (head {self.head})"
        return (
            f"chain broken at event id={self.broken_at_id} event_id={self.broken_event_id}: {self.problem} "
            f"({self.verified} events before it verified)"
        )


# What a broken link means, as reported.
ALTERED = "content altered: its hash does not match its content"
RELINKED = (
    "wrong prev_hash: it does not match the hash of the event before it, so an event was removed or the events "
    "were reordered"
)
NOT_FIRST = "wrong prev_hash: the first event does not start the chain, so the events before it were removed"


class ChainVerifier:
    """Checks stored events one by one, in append order; stops at the first broken link."""

    def __init__(self) -> None:
        self._head = GENESIS_HASH
        self._verified = 0
        self._broken: tuple[int, str, str] | None = None

    @property
    def broken(self) -> bool:
        return self._broken is not None

    def check(self, row_id: int, event: AuditEvent, prev_hash: str, stored_hash: str) -> bool:
        """Check the next stored event; False (and no further checking) once a link is broken."""
        if self._broken is not None:
            return False
        if prev_hash != self._head:
            self._broken = (row_id, event.event_id, NOT_FIRST if self._verified == 0 else RELINKED)
            return False
        if event_hash(event, prev_hash) != stored_hash:
            self._broken = (row_id, event.event_id, ALTERED)
            return False
        self._head = stored_hash
        self._verified += 1
        return True

    def unreadable(self, row_id: int, event_id: str, why: str) -> None:
        """A stored event that is not even a valid event (a writer could not have stored it): altered."""
        if self._broken is None:
            self._broken = (row_id, event_id, f"content altered: {why}")

    def report(self) -> ChainReport:
        if self._broken is None:
            return ChainReport(verified=self._verified, head=self._head)
        row_id, event_id, problem = self._broken
        return ChainReport(
            verified=self._verified,
            head=self._head,
            broken_at_id=row_id,
            broken_event_id=event_id,
            problem=problem,
        )
