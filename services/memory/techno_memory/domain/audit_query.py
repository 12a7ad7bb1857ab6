"""Queries over the audit trail: filters, page sizes and the page token.

A query pages through the events matching every filter given, in append order (the stored ``id``). Paging is
by keyset, never by offset: a page token carries the ``id`` of the last event returned, and the next page starts
right after it, so a page costs the same however deep it is, and events appended while a caller pages are never
skipped nor repeated (they are appended after every id already seen).

The token is opaque to callers: base64url (no padding) of

    version (1 byte) | last id (8 bytes, big-endian, unsigned) | fingerprint of the filters (16 bytes)

The fingerprint is the first 16 bytes of the SHA-256 of the filters' canonical JSON. A token is only valid with
the filters it was issued for: used with other filters (or garbled) it is refused with ``INVALID_PAGE_TOKEN``
rather than silently answering a page of a different query. The token is not signed and needs not be: a forged
id only moves where the same caller's query with the same filters starts, which the caller could do anyway.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import struct
from dataclasses import dataclass, field
from datetime import datetime

from techno_core.errors import FieldViolation, InvalidArgument
from techno_memory.domain.chain import utc_iso
from techno_memory.domain.records import AuditEvent
from techno_memory.domain.validation import MAX_ID_LENGTH, text_problems, trace_id_problem

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# A token is 25 bytes, 34 characters; anything much longer is not one of ours (and is not decoded at all).
MAX_PAGE_TOKEN_LENGTH = 64

INVALID_AUDIT_QUERY = "INVALID_AUDIT_QUERY"
INVALID_PAGE_TOKEN = "INVALID_PAGE_TOKEN"  # noqa: S105 (a reason code, not a secret)

_TOKEN_VERSION = 1
_TOKEN = struct.Struct(">BQ16s")


@dataclass(frozen=True)
class AuditFilter:
    """Every filter set must match; an empty string or None is no filter on that field. The time range is on
    ``occurred_at`` (the writer's clock): ``start_time`` inclusive, ``end_time`` exclusive."""

    trace_id: str = ""
    principal_id: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None

    def fingerprint(self) -> bytes:
        """16 bytes that change with any filter (page size is not a filter: it may change between pages)."""
        fields = [
            self.trace_id,
            self.principal_id,
            None if self.start_time is None else utc_iso(self.start_time),
            None if self.end_time is None else utc_iso(self.end_time),
        ]
        text = json.dumps(fields, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(text.encode("ascii")).digest()[:16]


@dataclass(frozen=True)
class AuditQuery:
    """A query as the caller sends it: page_size 0 means the default, page_token "" the first page."""

    filters: AuditFilter = field(default_factory=AuditFilter)
    page_size: int = 0
    page_token: str = ""


@dataclass(frozen=True)
class PageRequest:
    """A validated query: what to select (``after_id`` None for the first page) and how many events at most."""

    filters: AuditFilter
    limit: int
    after_id: int | None


@dataclass(frozen=True)
class AuditPage:
    """One page of events in append order; ``next_page_token`` is empty on the last page."""

    events: tuple[AuditEvent, ...]
    next_page_token: str = ""


def encode_page_token(last_id: int, audit_filter: AuditFilter) -> str:
    raw = _TOKEN.pack(_TOKEN_VERSION, last_id, audit_filter.fingerprint())
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def page_token_refused(description: str) -> InvalidArgument:
    """The refusal of a page token (``INVALID_PAGE_TOKEN``), for every paged read of this service."""
    return InvalidArgument(
        reason=INVALID_PAGE_TOKEN,
        message=f"invalid page_token: {description}",
        violations=[FieldViolation("page_token", description)],
    )


def decode_page_token(token: str, audit_filter: AuditFilter) -> int:
    """The last id of the previous page; ``InvalidArgument`` (``INVALID_PAGE_TOKEN``) when the token is not one
    this service issued, or was issued for other filters."""
    garbled = "not a page token issued by this service; start again from the first page"
    if len(token) > MAX_PAGE_TOKEN_LENGTH or not token.isascii():
        raise page_token_refused(garbled)
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError) as error:
        raise page_token_refused(garbled) from error
    if len(raw) != _TOKEN.size:
        raise page_token_refused(garbled)
    version, last_id, fingerprint = _TOKEN.unpack(raw)
    # Re-encoding must give the token back: no other spelling of the same bytes (padding, stray bits) is accepted.
    if version != _TOKEN_VERSION or base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != token:
        raise page_token_refused(garbled)
    if fingerprint != audit_filter.fingerprint():
        raise page_token_refused("issued for other filters; repeat the query's filters or start from the first page")
    return int(last_id)


def filter_violations(audit_filter: AuditFilter) -> list[FieldViolation]:
    violations = []
    if audit_filter.trace_id and (problem := trace_id_problem(audit_filter.trace_id)) is not None:
        violations.append(FieldViolation("trace_id", problem))
    violations += text_problems("principal_id", audit_filter.principal_id, required=False, max_length=MAX_ID_LENGTH)
    start, end = audit_filter.start_time, audit_filter.end_time
    if start is not None and end is not None and start >= end:
        violations.append(FieldViolation("end_time", "must be after start_time"))
    return violations


def page_request(query: AuditQuery) -> PageRequest:
    """Validate ``query``: every problem of its filters and page size at once (``INVALID_AUDIT_QUERY``), then its
    token (``INVALID_PAGE_TOKEN``). A page size above ``MAX_PAGE_SIZE`` is lowered to it."""
    violations = filter_violations(query.filters)
    if query.page_size < 0:
        violations.append(FieldViolation("page_size", "must not be negative"))
    if violations:
        raise InvalidArgument(reason=INVALID_AUDIT_QUERY, message="invalid audit query", violations=violations)
    limit = min(query.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    after_id = decode_page_token(query.page_token, query.filters) if query.page_token else None
    return PageRequest(filters=query.filters, limit=limit, after_id=after_id)
