"""The audit chain's hash and its verifier, as plain domain code."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from techno_memory.domain.chain import (
    ALTERED,
    GENESIS_HASH,
    NOT_FIRST,
    RELINKED,
    ChainVerifier,
    canonical_encoding,
    canonical_json,
    chain,
    event_hash,
    utc_iso,
)
from techno_memory.domain.records import AuditEvent, AuditEventKind

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def event(n: int = 0, **fields: object) -> AuditEvent:
    defaults: dict[str, object] = {
        "event_id": f"evt-{n}",
        "trace_id": "0" * 31 + "1",
        "kind": AuditEventKind.DECISION,
        "occurred_at": T0 + timedelta(seconds=n),
        "service": "gate",
        "principal_id": "key_1",
        "action": "summarize",
        "context_id": "ctx-1",
        "result": "ALLOW",
        "reason_codes": ("ALLOWED",),
        "attributes": {"policy_version": "v1", "latency_ms": 12.0},
    }
    return AuditEvent(**(defaults | fields))  # type: ignore[arg-type]


def test_the_encoding_is_the_documented_json_array() -> None:
    encoded = canonical_encoding(event(), GENESIS_HASH)
    assert encoded == (
        b'["techno-audit-v1","evt-0","00000000000000000000000000000001","DECISION","2025-06-01T12:00:00.000000Z",'
        b'"gate","key_1","summarize","ctx-1","ALLOW",["ALLOWED"],{"latency_ms":12,"policy_version":"v1"},'
        b'"' + GENESIS_HASH.encode() + b'"]'
    )
    assert event_hash(event(), GENESIS_HASH) == hashlib.sha256(encoded).hexdigest()
    assert len(event_hash(event(), GENESIS_HASH)) == 64


def test_the_hash_ignores_what_the_databases_may_change() -> None:
    # Key order, 12.0 given back as 12, another time zone for the same instant, a list for the tuple.
    a = event(attributes={"b": {"y": 1.0, "x": [1.5, 2.0]}, "a": 12.0})
    b = event(attributes={"a": 12, "b": {"x": [1.5, 2], "y": 1}}, reason_codes=["ALLOWED"])
    c = replace(a, occurred_at=T0.astimezone(timezone(timedelta(hours=2))))
    assert event_hash(a, GENESIS_HASH) == event_hash(b, GENESIS_HASH) == event_hash(c, GENESIS_HASH)
    # A double too large for an exact integer: the same as its integer read back from a JSONB numeric.
    assert canonical_json(1e300) == canonical_json(10**300) == "1e+300"
    assert canonical_json({"é": "ü"}) == '{"\\u00e9":"\\u00fc"}'


@pytest.mark.parametrize(
    "change",
    [
        {"event_id": "evt-x"},
        {"trace_id": "f" * 32},
        {"kind": AuditEventKind.OUTCOME},
        {"occurred_at": T0 + timedelta(microseconds=1)},
        {"service": "executor"},
        {"principal_id": "key_2"},
        {"action": "translate"},
        {"context_id": "ctx-2"},
        {"result": "DENY"},
        {"reason_codes": ("DENIED",)},
        {"reason_codes": ()},
        {"attributes": {"policy_version": "v2", "latency_ms": 12.0}},
        {"attributes": {"policy_version": "v1", "latency_ms": 12.5}},
    ],
)
def test_every_content_field_is_covered(change: dict[str, object]) -> None:
    assert event_hash(replace(event(), **change), GENESIS_HASH) != event_hash(event(), GENESIS_HASH)  # type: ignore[arg-type]


def test_recorded_at_is_not_covered_and_prev_hash_is() -> None:
    assert event_hash(replace(event(), recorded_at=T0), GENESIS_HASH) == event_hash(event(), GENESIS_HASH)
    assert event_hash(event(), "1" * 64) != event_hash(event(), GENESIS_HASH)


def test_no_field_can_bleed_into_the_next() -> None:
    assert event_hash(event(action="ab", context_id="c"), GENESIS_HASH) != event_hash(
        event(action="a", context_id="bc"), GENESIS_HASH
    )


def test_utc_iso_refuses_naive_datetimes() -> None:
    assert utc_iso(datetime(999, 1, 2, tzinfo=UTC)) == "0999-01-02T00:00:00.000000Z"
    with pytest.raises(ValueError, match="naive"):
        utc_iso(datetime(2025, 1, 1))


def verify(links: list[tuple[int, AuditEvent, str, str]]) -> ChainVerifier:
    verifier = ChainVerifier()
    for row_id, stored, prev_hash, stored_hash in links:
        if not verifier.check(row_id, stored, prev_hash, stored_hash):
            break
    return verifier


def stored(count: int) -> list[tuple[int, AuditEvent, str, str]]:
    return [
        (n + 1, link.event, link.prev_hash, link.hash)
        for n, link in enumerate(chain([event(n) for n in range(count)], GENESIS_HASH))
    ]


def test_a_chain_links_each_event_to_the_one_before() -> None:
    links = chain([event(n) for n in range(3)], GENESIS_HASH)
    assert links[0].prev_hash == GENESIS_HASH
    assert [link.prev_hash for link in links[1:]] == [link.hash for link in links[:-1]]
    # Extending a chain gives what chaining everything at once gives.
    assert chain([event(2)], links[1].hash) == links[2:]


def test_an_intact_chain_verifies() -> None:
    report = verify(stored(5)).report()
    assert report.intact
    assert report.verified == 5
    assert report.head == stored(5)[-1][3]
    assert report.summary() == f"verified 5 events; chain intact (head {report.head})"
    empty = ChainVerifier().report()
    assert empty.intact
    assert empty.verified == 0
    assert empty.head == GENESIS_HASH


def test_altered_content_is_caught() -> None:
    links = stored(5)
    row_id, original, prev_hash, stored_hash = links[2]
    links[2] = (row_id, replace(original, result="DENY"), prev_hash, stored_hash)
    report = verify(links).report()
    assert (report.broken_at_id, report.broken_event_id, report.problem, report.verified) == (3, "evt-2", ALTERED, 2)
    assert report.summary().startswith("chain broken at event id=3 event_id=evt-2: content altered")


def test_a_removed_event_is_caught() -> None:
    links = stored(5)
    del links[2]
    report = verify(links).report()
    assert (report.broken_at_id, report.problem, report.verified) == (4, RELINKED, 2)


def test_removed_first_events_are_caught() -> None:
    report = verify(stored(5)[1:]).report()
    assert (report.broken_at_id, report.problem, report.verified) == (2, NOT_FIRST, 0)


def test_reordered_events_are_caught() -> None:
    links = stored(5)
    # The rows' contents swapped, ids kept.
    (id1, *first), (id2, *second) = links[1], links[2]
    links[1], links[2] = (id1, *second), (id2, *first)  # type: ignore[assignment]
    report = verify(links).report()
    assert (report.broken_at_id, report.problem, report.verified) == (2, RELINKED, 1)


def test_a_rehashed_alteration_shows_at_the_next_event() -> None:
    links = stored(5)
    row_id, original, prev_hash, _ = links[2]
    altered = replace(original, result="DENY")
    links[2] = (row_id, altered, prev_hash, event_hash(altered, prev_hash))
    report = verify(links).report()
    assert (report.broken_at_id, report.problem) == (4, RELINKED)


def test_the_verifier_stops_at_the_first_broken_link() -> None:
    verifier = ChainVerifier()
    links = stored(3)
    assert not verifier.check(1, *links[1][1:])
    assert not verifier.check(2, *links[0][1:])
    verifier.unreadable(3, "evt-x", "bad kind")
    assert verifier.report().broken_at_id == 1
