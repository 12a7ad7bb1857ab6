"""Conversion between protobuf messages and domain records, with the checks only the wire format needs
(an unset enum or timestamp). Everything else is checked by the domain rules, all reported together."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from techno.memory.v1 import memory_pb2
from techno_core.errors import FieldViolation
from techno_memory.domain.records import ApiKey, AuditEvent, AuditEventKind, NewApiKey
from techno_memory.domain.validation import validate_events

_KIND_FROM_PROTO = {
    memory_pb2.AUDIT_EVENT_KIND_DECISION: AuditEventKind.DECISION,
    memory_pb2.AUDIT_EVENT_KIND_OUTCOME: AuditEventKind.OUTCOME,
}
_KIND_TO_PROTO = {kind: value for value, kind in _KIND_FROM_PROTO.items()}
# Stands in for a missing timestamp while the rest of the event is checked; such an event is always refused.
_UNSET_TIME = datetime.fromtimestamp(0, UTC)


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def event_from_proto(message: memory_pb2.AuditEvent, path: str) -> tuple[AuditEvent, list[FieldViolation]]:
    """The event, and the violations the domain record cannot express (unset kind or occurred_at)."""
    violations = []
    kind = _KIND_FROM_PROTO.get(message.kind)
    if kind is None:
        violations.append(FieldViolation(f"{path}.kind", "must be AUDIT_EVENT_KIND_DECISION or _OUTCOME"))
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
        attributes=json_format.MessageToDict(message.attributes),
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
    attributes = struct_pb2.Struct()
    attributes.update(event.attributes)
    return memory_pb2.AuditEvent(
        event_id=event.event_id,
        trace_id=event.trace_id,
        kind=_KIND_TO_PROTO[event.kind],
        occurred_at=timestamp(event.occurred_at),
        service=event.service,
        principal_id=event.principal_id,
        action=event.action,
        context_id=event.context_id,
        result=event.result,
        reason_codes=event.reason_codes,
        attributes=attributes,
    )


def new_key_from_proto(request: memory_pb2.CreateApiKeyRequest) -> NewApiKey:
    return NewApiKey(
        key_id=request.key_id,
        prefix=request.prefix,
        key_hash=request.key_hash,
        name=request.name,
        profile=request.profile,
    )


def key_to_proto(key: ApiKey) -> memory_pb2.ApiKey:
    message = memory_pb2.ApiKey(
        key_id=key.key_id,
        prefix=key.prefix,
        key_hash=key.key_hash,
        name=key.name,
        profile=key.profile,
        created_at=timestamp(key.created_at),
    )
    if key.revoked_at is not None:
        message.revoked_at.CopyFrom(timestamp(key.revoked_at))
    return message
