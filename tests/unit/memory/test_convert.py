"""Conversion between the memory protos and the domain records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf import struct_pb2

from techno.memory.v1 import memory_pb2
from techno_core.errors import InvalidArgument
from techno_core.timestamps import to_timestamp
from techno_memory.domain.records import ApiKey, AuditEvent, AuditEventKind, KeyListing
from techno_memory.entrypoints.convert import (
    event_to_proto,
    events_from_proto,
    key_to_proto,
    listing_to_proto,
    new_key_from_proto,
    updated_since_from_proto,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
OCCURRED = datetime(2025, 3, 4, 5, 6, 7, 890_000, tzinfo=UTC)


def message(**changes: Any) -> memory_pb2.AuditEvent:
    attributes = struct_pb2.Struct()
    attributes.update({"policy_version": "v3", "tokens": 12, "nested": {"ok": True}, "list": [1, "a"]})
    fields: dict[str, Any] = {
        "event_id": "e-1",
        "trace_id": TRACE_ID,
        "kind": memory_pb2.AUDIT_EVENT_KIND_OUTCOME,
        "occurred_at": to_timestamp(OCCURRED),
        "service": "executor",
        "principal_id": "key_1",
        "action": "summarize",
        "context_id": "ctx",
        "result": "SUCCEEDED",
        "reason_codes": ["ALLOWED"],
        "attributes": attributes,
    }
    return memory_pb2.AuditEvent(**(fields | changes))


def test_event_round_trips_between_proto_and_domain() -> None:
    [event] = events_from_proto([message()])
    assert event == AuditEvent(
        event_id="e-1",
        trace_id=TRACE_ID,
        kind=AuditEventKind.OUTCOME,
        occurred_at=OCCURRED,
        service="executor",
        principal_id="key_1",
        action="summarize",
        context_id="ctx",
        result="SUCCEEDED",
        reason_codes=("ALLOWED",),
        # Struct numbers are doubles: an integer comes back as a float.
        attributes={"policy_version": "v3", "tokens": 12.0, "nested": {"ok": True}, "list": [1.0, "a"]},
    )
    assert event.occurred_at.tzinfo is UTC
    assert event_to_proto(event) == message()


def test_unset_kind_and_timestamp_are_reported_with_the_other_violations() -> None:
    bad = message(kind=memory_pb2.AUDIT_EVENT_KIND_UNSPECIFIED, trace_id="ABC", event_id="")
    bad.ClearField("occurred_at")
    with pytest.raises(InvalidArgument) as raised:
        events_from_proto([message(), bad])
    fields = {violation.field for violation in raised.value.violations}
    assert fields == {"events[1].kind", "events[1].occurred_at", "events[1].trace_id", "events[1].event_id"}


def test_api_key_to_proto_sets_revoked_at_and_expires_at_only_when_set() -> None:
    created = datetime(2025, 1, 1, tzinfo=UTC)
    key = ApiKey("key_1", "tk_ab12", "a" * 64, "ci", "default", created, updated_at=created)
    valid = key_to_proto(key)
    assert not valid.HasField("revoked_at")
    assert not valid.HasField("expires_at")
    assert valid.created_at.ToDatetime(tzinfo=UTC) == created
    assert valid.updated_at.ToDatetime(tzinfo=UTC) == created
    assert list(valid.scopes) == ["process"]
    revoked_at, expires_at = created + timedelta(hours=1), created + timedelta(days=30)
    revoked = key_to_proto(
        ApiKey(
            "key_1",
            "tk_ab12",
            "a" * 64,
            "ci",
            "default",
            created,
            revoked_at,
            scopes=("process", "admin"),
            expires_at=expires_at,
            updated_at=revoked_at,
        )
    )
    assert revoked.revoked_at.ToDatetime(tzinfo=UTC) == revoked_at
    assert revoked.expires_at.ToDatetime(tzinfo=UTC) == expires_at
    assert revoked.updated_at.ToDatetime(tzinfo=UTC) == revoked_at
    assert list(revoked.scopes) == ["process", "admin"]


def test_new_key_from_request() -> None:
    request = memory_pb2.CreateApiKeyRequest(key_id="k", prefix="p", key_hash="h", name="n", profile="default")
    key = new_key_from_proto(request)
    assert (key.key_id, key.prefix, key.key_hash, key.name, key.profile) == ("k", "p", "h", "n", "default")
    assert (key.scopes, key.expires_at) == ((), None)  # the use case fills in the default scopes


def test_new_key_from_request_with_scopes_and_expiry() -> None:
    expires_at = datetime(2030, 1, 1, 8, 30, 0, 123_000, tzinfo=UTC)
    request = memory_pb2.CreateApiKeyRequest(
        key_id="k", scopes=["audit:read", "admin"], expires_at=to_timestamp(expires_at)
    )
    key = new_key_from_proto(request)
    assert key.scopes == ("audit:read", "admin")
    assert key.expires_at == expires_at
    assert key.expires_at.tzinfo is UTC


def test_an_out_of_range_timestamp_is_invalid_argument() -> None:
    request = memory_pb2.CreateApiKeyRequest(key_id="k")
    request.expires_at.nanos = -5
    with pytest.raises(InvalidArgument) as raised:
        new_key_from_proto(request)
    assert raised.value.reason == "INVALID_API_KEY"
    assert [v.field for v in raised.value.violations] == ["expires_at"]

    listing = memory_pb2.ListApiKeysRequest()
    listing.updated_since.seconds = 2**62
    with pytest.raises(InvalidArgument) as raised:
        updated_since_from_proto(listing)
    assert raised.value.reason == "INVALID_KEY_LISTING"
    assert [v.field for v in raised.value.violations] == ["updated_since"]


def test_updated_since_is_none_when_unset() -> None:
    assert updated_since_from_proto(memory_pb2.ListApiKeysRequest()) is None
    since = datetime(2025, 6, 1, tzinfo=UTC)
    assert updated_since_from_proto(memory_pb2.ListApiKeysRequest(updated_since=to_timestamp(since))) == since


def test_listing_carries_read_at() -> None:
    created = datetime(2025, 1, 1, tzinfo=UTC)
    read_at = datetime(2025, 6, 1, tzinfo=UTC)
    key = ApiKey("key_1", "tk_ab12", "a" * 64, "ci", "default", created, updated_at=created)
    response = listing_to_proto(KeyListing(keys=(key,), read_at=read_at))
    assert response.read_at.ToDatetime(tzinfo=UTC) == read_at
    assert [k.key_id for k in response.api_keys] == ["key_1"]
    assert listing_to_proto(KeyListing(keys=(), read_at=read_at)).HasField("read_at")


def test_every_proto_event_kind_but_unspecified_round_trips() -> None:
    from google.protobuf import timestamp_pb2

    from techno.memory.v1 import memory_pb2
    from techno_memory.entrypoints.convert import event_from_proto, event_to_proto

    for name in memory_pb2.AuditEventKind.keys():  # noqa: SIM118 (an enum wrapper, not a dict)
        if name == "AUDIT_EVENT_KIND_UNSPECIFIED":
            continue
        stamp = timestamp_pb2.Timestamp(seconds=1_800_000_000)
        message = memory_pb2.AuditEvent(event_id="e", trace_id="a" * 32, kind=name, occurred_at=stamp, service="s")
        number = memory_pb2.AuditEventKind.Value(name)
        event, violations = event_from_proto(message, "events[0]")
        assert violations == [], name
        assert event_to_proto(event).kind == number
