"""Conversions between aware datetimes and protobuf Timestamps, where an unset field means "no value"."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from techno_core.errors import FieldViolation, InvalidArgument


def to_timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    """None stays None, so the field is left unset."""
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def from_timestamp(message: Message, field: str) -> datetime | None:
    """The field as an aware UTC datetime, or None when it is unset."""
    if not message.HasField(field):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(message, field)
    return stamp.ToDatetime(tzinfo=UTC)


def requested_time(message: Message, field: str, *, reason: str) -> datetime | None:
    """``from_timestamp`` for a field a caller sent. A timestamp outside the range protobuf defines (years 1 to
    9999, nanos below a second; possible over gRPC, REST parses RFC 3339) is the caller's ``InvalidArgument``
    with ``reason``, not an internal error."""
    try:
        return from_timestamp(message, field)
    except ValueError as error:
        raise InvalidArgument(
            reason=reason, message=f"{field} is not a valid timestamp", violations=[FieldViolation(field, str(error))]
        ) from error
