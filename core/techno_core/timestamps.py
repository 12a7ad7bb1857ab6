"""Conversions between aware datetimes and protobuf Timestamps, where an unset field means "no value"."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message


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
