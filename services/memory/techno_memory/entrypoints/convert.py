"""Conversion between protobuf messages and domain records, with the checks only the wire format needs
(an unset enum or timestamp). Everything else is checked by the domain rules, all reported together."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from google.protobuf import struct_pb2

from techno.memory.v1 import memory_pb2
from techno_core.errors import FieldViolation
from techno_core.structs import struct_dict
from techno_core.timestamps import requested_time, to_timestamp
from techno_memory.domain.audit_query import INVALID_AUDIT_QUERY, AuditFilter, AuditPage, AuditQuery
from techno_memory.domain.records import ApiKey, AuditEvent, AuditEventKind, KeyListing, NewApiKey
from techno_memory.domain.validation import INVALID_API_KEY, INVALID_KEY_LISTING, validate_events

_KIND_FROM_PROTO = {
    memory_pb2.AUDIT_EVENT_KIND_DECISION: AuditEventKind.DECISION,
    memory_pb2.AUDIT_EVENT_KIND_OUTCOME: AuditEventKind.OUTCOME,
    memory_pb2.AUDIT_EVENT_KIND_BREAKER: AuditEventKind.BREAKER,
    memory_pb2.AUDIT_EVENT_KIND_ADMIN: AuditEventKind.ADMIN,
}
_KIND_TO_PROTO = {kind: value for value, kind in _KIND_FROM_PROTO.items()}
# Stands in for a missing timestamp while the rest of the event is checked; such an event is always refused.
_UNSET_TIME = datetime.fromtimestamp(0, UTC)


def event_from_proto(message: memory_pb2.AuditEvent, path: str) -> tuple[AuditEvent, list[FieldViolation]]:
    """The event, and the violations the domain record cannot express (unset kind or occurred_at)."""
    violations = []
    kind = _KIND_FROM_PROTO.get(message.kind)
    if kind is None:
        violations.append(FieldViolation(f"{path}.kind", "must be a known AUDIT_EVENT_KIND_* other than UNSPECIFIED"))
    if not message.HasField("occurred_at"):
        violations.append(FieldViolation(f"{path}.occurred_at", "required"))
    event = AuditEvent(
        event_id=message.event_id,
        trace_id=message.trace_id,
        kind=kind or AuditEventKind.DECISION,
        occurred_at=message.occurred_at.ToDatetime(tzinfo=UTC) if message.HasField("occurred_at") else _UNSET_TIME,
        service=message.service,
        principal_id=message.principal_id,
        action=message.action,
        context_id=message.context_id,
        result=message.result,
        reason_codes=tuple(message.reason_codes),
        attributes=struct_dict(message.attributes),
    )
    return event, violations


def events_from_proto(messages: Sequence[memory_pb2.AuditEvent]) -> list[AuditEvent]:
    """Decoded, valid events; ``InvalidArgument`` listing every violation otherwise."""
    events, violations = [], []
    for index, message in enumerate(messages):
        event, problems = event_from_proto(message, f"events[{index}]")
        events.append(event)
        violations += problems
    validate_events(events, extra=violations)
    return events


def event_to_proto(event: AuditEvent) -> memory_pb2.AuditEvent:
    """``recorded_at`` is set for a stored event (unset for one that was never stored)."""
    attributes = struct_pb2.Struct()
    attributes.update(event.attributes)
    return memory_pb2.AuditEvent(
        event_id=event.event_id,
        trace_id=event.trace_id,
        kind=_KIND_TO_PROTO[event.kind],
        occurred_at=to_timestamp(event.occurred_at),
        service=event.service,
        principal_id=event.principal_id,
        action=event.action,
        context_id=event.context_id,
        result=event.result,
        reason_codes=event.reason_codes,
        attributes=attributes,
        recorded_at=to_timestamp(event.recorded_at),
    )


def audit_query_from_proto(request: memory_pb2.ListAuditEventsRequest) -> AuditQuery:
    """Unset times are no bound; the domain checks the rest (``domain.audit_query.page_request``)."""
    filters = AuditFilter(
        trace_id=request.trace_id,
        principal_id=request.principal_id,
        start_time=requested_time(request, "start_time", reason=INVALID_AUDIT_QUERY),
        end_time=requested_time(request, "end_time", reason=INVALID_AUDIT_QUERY),
    )
    return AuditQuery(filters=filters, page_size=request.page_size, page_token=request.page_token)


def page_to_proto(page: AuditPage) -> memory_pb2.ListAuditEventsResponse:
    return memory_pb2.ListAuditEventsResponse(
        events=[event_to_proto(event) for event in page.events], next_page_token=page.next_page_token
    )


def new_key_from_proto(request: memory_pb2.CreateApiKeyRequest) -> NewApiKey:
    """Scopes are taken as sent (the use case fills in the default for none); an unset expires_at is no expiry."""
    return NewApiKey(
        key_id=request.key_id,
        prefix=request.prefix,
        key_hash=request.key_hash,
        name=request.name,
        profile=request.profile,
        scopes=tuple(request.scopes),
        expires_at=requested_time(request, "expires_at", reason=INVALID_API_KEY),
    )


def updated_since_from_proto(request: memory_pb2.ListApiKeysRequest) -> datetime | None:
    """None (every key) when unset."""
    return requested_time(request, "updated_since", reason=INVALID_KEY_LISTING)


def key_to_proto(key: ApiKey) -> memory_pb2.ApiKey:
    return memory_pb2.ApiKey(
        key_id=key.key_id,
        prefix=key.prefix,
        key_hash=key.key_hash,
        name=key.name,
        profile=key.profile,
        created_at=to_timestamp(key.created_at),
        scopes=key.scopes,
        updated_at=to_timestamp(key.updated_at),
        # None leaves these unset (not the epoch): "never", which the gate tells apart with HasField.
        revoked_at=to_timestamp(key.revoked_at),
        expires_at=to_timestamp(key.expires_at),
    )


def listing_to_proto(listing: KeyListing) -> memory_pb2.ListApiKeysResponse:
    return memory_pb2.ListApiKeysResponse(
        api_keys=[key_to_proto(key) for key in listing.keys], read_at=to_timestamp(listing.read_at)
    )
