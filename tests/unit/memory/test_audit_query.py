"""Audit queries: validation of the filters, the page token, and the paging of the use case over a fake store."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from techno_core.errors import InvalidArgument
from techno_memory.application.audit_log import AuditLog
from techno_memory.domain.audit_query import (
    DEFAULT_PAGE_SIZE,
    INVALID_AUDIT_QUERY,
    INVALID_PAGE_TOKEN,
    MAX_PAGE_SIZE,
    AuditFilter,
    AuditQuery,
    decode_page_token,
    encode_page_token,
    page_request,
)
from techno_memory.domain.records import AuditEvent, AuditEventKind

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
FILTERS = AuditFilter(trace_id=TRACE_ID, principal_id="key_1", start_time=T0, end_time=T0 + timedelta(hours=1))


def refused(query: AuditQuery) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as raised:
        page_request(query)
    return raised.value


def test_a_token_round_trips_and_is_url_safe() -> None:
    for last_id in (1, 255, 2**40, 2**63 - 1):
        token = encode_page_token(last_id, FILTERS)
        assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        assert decode_page_token(token, FILTERS) == last_id


@pytest.mark.parametrize(
    "other",
    [
        AuditFilter(),
        AuditFilter(trace_id=TRACE_ID),
        replace(FILTERS, principal_id="key_2"),
        replace(FILTERS, trace_id="0af7651916cd43dd8448eb211c80319c"),
        replace(FILTERS, start_time=T0 + timedelta(microseconds=1)),
        replace(FILTERS, end_time=None),
    ],
)
def test_a_token_is_refused_with_other_filters(other: AuditFilter) -> None:
    token = encode_page_token(42, FILTERS)
    error = refused(AuditQuery(filters=other, page_token=token))
    assert error.reason == INVALID_PAGE_TOKEN
    assert [v.field for v in error.violations] == ["page_token"]
    assert "other filters" in error.violations[0].description


def _garbled() -> list[str]:
    token = encode_page_token(42, FILTERS)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    return [
        "x",
        "not a token!",
        "é" * 10,
        token[:-1],  # truncated
        token + "A",  # one character too many
        token + "==",  # padded: another spelling of the same bytes
        token[:-1] + ("A" if token[-1] != "A" else "B"),  # the last character's spare bits changed
        base64.urlsafe_b64encode(b"\x02" + raw[1:]).rstrip(b"=").decode(),  # unknown version
        base64.urlsafe_b64encode(raw + b"\x00").rstrip(b"=").decode(),  # too long a payload
        "A" * 10_000,
    ]


@pytest.mark.parametrize("token", _garbled())
def test_a_garbled_token_is_refused(token: str) -> None:
    error = refused(AuditQuery(filters=FILTERS, page_token=token))
    assert error.reason == INVALID_PAGE_TOKEN
    assert [v.field for v in error.violations] == ["page_token"]


def test_the_page_size_defaults_and_is_capped() -> None:
    assert page_request(AuditQuery()).limit == DEFAULT_PAGE_SIZE
    assert page_request(AuditQuery(page_size=7)).limit == 7
    assert page_request(AuditQuery(page_size=MAX_PAGE_SIZE)).limit == MAX_PAGE_SIZE
    assert page_request(AuditQuery(page_size=MAX_PAGE_SIZE + 1)).limit == MAX_PAGE_SIZE
    assert page_request(AuditQuery()).after_id is None


def test_every_filter_problem_is_reported_at_once() -> None:
    bad = AuditFilter(trace_id="ABC", principal_id="p" * 129, start_time=T0, end_time=T0)
    error = refused(AuditQuery(filters=bad, page_size=-1, page_token="garbage"))
    assert error.reason == INVALID_AUDIT_QUERY  # the filters first: a token cannot be judged against bad filters
    assert [v.field for v in error.violations] == ["trace_id", "principal_id", "end_time", "page_size"]


@pytest.mark.parametrize("trace_id", ["0" * 32, "4BF92F3577B34DA6A3CE929D0E0E4736", TRACE_ID[:-1]])
def test_trace_ids_are_validated_like_get_audit_trails(trace_id: str) -> None:
    error = refused(AuditQuery(filters=AuditFilter(trace_id=trace_id)))
    assert [v.field for v in error.violations] == ["trace_id"]


def test_start_must_precede_end() -> None:
    error = refused(AuditQuery(filters=AuditFilter(start_time=T0, end_time=T0 - timedelta(seconds=1))))
    assert [v.field for v in error.violations] == ["end_time"]
    page_request(AuditQuery(filters=AuditFilter(start_time=T0, end_time=T0 + timedelta(microseconds=1))))
    page_request(AuditQuery(filters=AuditFilter(start_time=T0)))
    page_request(AuditQuery(filters=AuditFilter(end_time=T0)))


class Observer:
    def committed(self, batch_size: int, appended: int) -> None:
        pass

    def failed(self, batch_size: int) -> None:
        pass


class FakeStore:
    """Stored events with ids 1..n; answers like the database (ids above after_id, ascending, at most limit)."""

    def __init__(self, count: int) -> None:
        self.rows = [
            (n, AuditEvent(f"e{n}", TRACE_ID, AuditEventKind.DECISION, T0, "gate", principal_id="key_1"))
            for n in range(1, count + 1)
        ]
        self.limits: list[int] = []

    async def store_events(self, events: Sequence[AuditEvent]) -> list[bool]:
        raise NotImplementedError

    async def audit_trail(self, trace_id: str) -> list[AuditEvent]:
        raise NotImplementedError

    async def list_events(
        self, filters: AuditFilter, *, after_id: int | None, limit: int
    ) -> list[tuple[int, AuditEvent]]:
        self.limits.append(limit)
        return [row for row in self.rows if after_id is None or row[0] > after_id][:limit]


async def test_pages_follow_each_other_and_the_last_has_no_token() -> None:
    store = FakeStore(7)
    log = AuditLog(store, Observer(), max_batch=10)
    filters = AuditFilter(principal_id="key_1")
    seen, token, pages = [], "", 0
    while True:
        page = await log.query(AuditQuery(filters=filters, page_size=3, page_token=token))
        seen += [event.event_id for event in page.events]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"e{n}" for n in range(1, 8)]
    assert pages == 3
    assert store.limits == [4, 4, 4]  # one more than the page: its presence tells whether a next page exists
    await log.close()


async def test_an_exactly_full_last_page_has_no_token() -> None:
    log = AuditLog(FakeStore(6), Observer(), max_batch=10)
    first = await log.query(AuditQuery(page_size=3))
    second = await log.query(AuditQuery(page_size=3, page_token=first.next_page_token))
    assert [e.event_id for e in second.events] == ["e4", "e5", "e6"]
    assert second.next_page_token == ""
    await log.close()
