"""Pages of a privacy export: however much a principal has kept, each page stays far inside a gRPC message.

An export is read in pages of about ``PAGE_BUDGET_BYTES`` of content: the live sessions first (oldest first,
each with its messages in order), then the idempotency records (oldest first). A session larger than what is
left of a page is cut between two messages and continues, under the same session id, on the next page; every
page carries at least one message or record, so an export always ends. The preferences (a few bytes) are on
every page.

The page token says where the next page starts: the section, the sort key (creation time, id) of the session or
record it starts at, and for a session cut in two, the last message already exported. It is opaque to callers:
base64url (no padding) of a small JSON object, bound to the principal (a token of another principal's export is
refused, not answered). It is not signed and needs not be: every read is of the caller's own rows, so a forged
token can only skip or repeat the caller's own data. A session or record deleted between two pages is simply
not there; one created meanwhile appears if it sorts after the position reached.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from techno_memory.domain.audit_query import page_token_refused

# Content per page. A page's message is this plus small per-item overheads, so it stays well below the 4 MiB
# gRPC messages are limited to (techno_core.channels), through the gate and to the edge as JSON.
PAGE_BUDGET_BYTES = 1024 * 1024
_ITEM_OVERHEAD_BYTES = 64
_MAX_TOKEN_LENGTH = 1024
_VERSION = 1


class Section(StrEnum):
    SESSIONS = "s"
    IDEMPOTENCY = "i"


@dataclass(frozen=True)
class ExportCursor:
    """Where a page starts: the first session (or record) at or after ``(created_at, key)`` in ``section``;
    ``after_message_id`` > 0 when that session was cut, and only its later messages are still to come."""

    section: Section = Section.SESSIONS
    created_at: datetime | None = None
    key: str = ""
    after_message_id: int = 0

    @property
    def first(self) -> bool:
        return self.created_at is None


def message_cost(role: str, content: str) -> int:
    return len(content.encode()) + len(role) + _ITEM_OVERHEAD_BYTES


def record_cost(key: str, response: bytes | None) -> int:
    return len(key) + len(response or b"") + 2 * _ITEM_OVERHEAD_BYTES


def _fingerprint(principal_id: str) -> str:
    return hashlib.sha256(principal_id.encode()).hexdigest()[:16]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(moment: datetime) -> int:
    return (moment.astimezone(UTC) - _EPOCH) // timedelta(microseconds=1)


def encode_cursor(cursor: ExportCursor, principal_id: str) -> str:
    if cursor.created_at is None:
        raise ValueError("the first page has no token")
    document = {
        "v": _VERSION,
        "p": _fingerprint(principal_id),
        "s": cursor.section.value,
        "t": _micros(cursor.created_at),
        "k": cursor.key,
        "m": cursor.after_message_id,
    }
    raw = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(token: str, principal_id: str) -> ExportCursor:
    """The cursor of ``token`` ("" is the first page); ``InvalidArgument`` (``INVALID_PAGE_TOKEN``) when it is not
    a token of this principal's export."""
    if not token:
        return ExportCursor()
    garbled = "not a page token of this export; start again from the first page"
    if len(token) > _MAX_TOKEN_LENGTH or not token.isascii():
        raise page_token_refused(garbled)
    try:
        document = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        section = Section(document["s"])
        created_at = _EPOCH + timedelta(microseconds=int(document["t"]))
        key, after = str(document["k"]), int(document["m"])
        version, fingerprint = document["v"], document["p"]
    except (binascii.Error, ValueError, TypeError, KeyError, OverflowError) as error:
        raise page_token_refused(garbled) from error
    if version != _VERSION or after < 0 or not key:
        raise page_token_refused(garbled)
    if fingerprint != _fingerprint(principal_id):
        raise page_token_refused("issued for another principal's export")
    return ExportCursor(section, created_at, key, after)
