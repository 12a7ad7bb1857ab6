"""Conversion between the session and preference messages and their domain records."""

from __future__ import annotations

from collections.abc import Sequence

from techno.memory.v1 import memory_pb2
from techno_core.timestamps import to_timestamp
from techno_memory.domain.idempotency import IdempotencyRecord
from techno_memory.domain.sessions import Erasure, NewMessage, Preferences, PrincipalExport, Session


def messages_from_proto(messages: Sequence[memory_pb2.SessionMessage]) -> list[NewMessage]:
    """A sent created_at is ignored: this service stamps every message with its own clock."""
    return [NewMessage(role=message.role, content=message.content) for message in messages]


def session_to_proto(session: Session) -> memory_pb2.Session:
    return memory_pb2.Session(
        session_id=session.session_id,
        principal_id=session.principal_id,
        created_at=to_timestamp(session.created_at),
        expires_at=to_timestamp(session.expires_at),
        messages=[
            memory_pb2.SessionMessage(role=m.role, content=m.content, created_at=to_timestamp(m.created_at))
            for m in session.messages
        ],
    )


def preferences_from_proto(message: memory_pb2.Preferences) -> Preferences:
    return Preferences(tone=message.tone, format=message.format, language=message.language)


def preferences_to_proto(preferences: Preferences) -> memory_pb2.Preferences:
    return memory_pb2.Preferences(tone=preferences.tone, format=preferences.format, language=preferences.language)


def idempotency_record_to_proto(record: IdempotencyRecord) -> memory_pb2.IdempotencyRecord:
    return memory_pb2.IdempotencyRecord(
        idempotency_key=record.key,
        request_hash=record.request_hash,
        completed=record.response is not None,
        response=record.response or b"",
        created_at=to_timestamp(record.created_at),
        expires_at=to_timestamp(record.expires_at),
    )


def export_to_proto(export: PrincipalExport) -> memory_pb2.ExportPrincipalDataResponse:
    return memory_pb2.ExportPrincipalDataResponse(
        sessions=[session_to_proto(session) for session in export.sessions],
        preferences=preferences_to_proto(export.preferences),
        idempotency_records=[idempotency_record_to_proto(record) for record in export.idempotency_records],
        next_page_token=export.next_page_token,
    )


def erasure_to_proto(erasure: Erasure) -> memory_pb2.DeletePrincipalDataResponse:
    return memory_pb2.DeletePrincipalDataResponse(
        sessions_deleted=erasure.sessions_deleted,
        preferences_deleted=erasure.preferences_deleted,
        idempotency_records_deleted=erasure.idempotency_records_deleted,
    )
