"""The database schema as SQLAlchemy models. Changing it needs a new migration in ``techno_memory/migrations``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from techno_memory.domain.chain import HASH_LENGTH
from techno_memory.domain.idempotency_validation import MAX_KEY_LENGTH
from techno_memory.domain.session_validation import MAX_LANGUAGE_LENGTH
from techno_memory.domain.validation import MAX_ID_LENGTH, MAX_TEXT_LENGTH

# Explicit constraint names, so migrations can refer to them identically on every database.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# JSONB on PostgreSQL (indexable, compact); plain JSON text elsewhere.
JsonDocument = JSON().with_variant(JSONB(), "postgresql")


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every database. SQLite has no time zones: values are stored as UTC wall
    time and given back their UTC zone when read, so callers never see a naive datetime."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass an aware one")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(String(MAX_ID_LENGTH), primary_key=True)
    prefix: Mapped[str] = mapped_column(String(MAX_ID_LENGTH))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(MAX_TEXT_LENGTH))
    profile: Mapped[str] = mapped_column(String(MAX_ID_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # A JSON list rather than a join table: a key has at most a handful of scopes, always read with the key.
    scopes: Mapped[list[str]] = mapped_column(JsonDocument)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # Indexed: the gates' incremental refresh selects by it every few seconds.
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)


class AuditEventRow(Base):
    __tablename__ = "audit_events"
    # Audit queries page by id (keyset) within a principal or a time range: each index gives those rows in id
    # order. (trace_id has its own index: a trace is a handful of events.)
    __table_args__ = (
        Index("ix_audit_events_principal_id_id", "principal_id", "id"),
        Index("ix_audit_events_occurred_at_id", "occurred_at", "id"),
    )

    # The append order. SQLite only auto-increments an INTEGER PRIMARY KEY, hence the variant.
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(MAX_ID_LENGTH), unique=True)
    trace_id: Mapped[str] = mapped_column(String(32), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime())
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime())
    service: Mapped[str] = mapped_column(String(MAX_ID_LENGTH))
    principal_id: Mapped[str] = mapped_column(String(MAX_ID_LENGTH))
    action: Mapped[str] = mapped_column(String(MAX_TEXT_LENGTH))
    context_id: Mapped[str] = mapped_column(String(MAX_TEXT_LENGTH))
    result: Mapped[str] = mapped_column(String(MAX_TEXT_LENGTH))
    reason_codes: Mapped[list[str]] = mapped_column(JsonDocument)
    attributes: Mapped[dict[str, Any]] = mapped_column(JsonDocument)
    # The hash chain (``techno_memory.domain.chain``): the hash of the event before this one, and this one's.
    # prev_hash is unique: two events can never follow the same one, so even a writer that skipped the chain's
    # lock could not fork it.
    prev_hash: Mapped[str] = mapped_column(String(HASH_LENGTH), unique=True)
    hash: Mapped[str] = mapped_column(String(HASH_LENGTH))


class SessionRow(Base):
    __tablename__ = "sessions"

    session_id: Mapped[str] = mapped_column(String(MAX_ID_LENGTH), primary_key=True)
    # Indexed: export and erasure select a principal's sessions.
    principal_id: Mapped[str] = mapped_column(String(MAX_ID_LENGTH), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # Indexed: the sweeper selects the expired ones.
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)


class SessionMessageRow(Base):
    __tablename__ = "session_messages"

    # The order of the conversation (created_at is shared by the messages of one append).
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    # The database deletes a session's messages with it, whoever deletes the session (sweeper, erasure).
    session_id: Mapped[str] = mapped_column(
        String(MAX_ID_LENGTH), ForeignKey("sessions.session_id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class PreferencesRow(Base):
    __tablename__ = "preferences"

    principal_id: Mapped[str] = mapped_column(String(MAX_ID_LENGTH), primary_key=True)
    tone: Mapped[str] = mapped_column(String(32))
    format: Mapped[str] = mapped_column(String(32))
    language: Mapped[str] = mapped_column(String(MAX_LANGUAGE_LENGTH))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class IdempotencyKeyRow(Base):
    """One ``Idempotency-Key`` of a principal (see ``techno_memory.application.idempotency``). The composite
    primary key is what admits exactly one claim of a key."""

    __tablename__ = "idempotency_keys"

    principal_id: Mapped[str] = mapped_column(String(MAX_ID_LENGTH), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(MAX_KEY_LENGTH), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    # NULL until the execution completes.
    response: Mapped[bytes | None] = mapped_column(LargeBinary())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # Indexed: the sweeper selects the expired ones.
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    lease_expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # The W3C trace id of the holder's request (NULL without one): when the lease runs out without a response,
    # the audit trail of this trace says whether that request may have run (migration 0006).
    trace_id: Mapped[str | None] = mapped_column(String(32))


# What erasing and exporting a principal's data (``PrincipalData``) does with each table. Every table is in
# exactly one of the two; tests/integration/memory/test_principal_data.py fails on a table in neither, so a new
# table holding something of a person's cannot be forgotten by erasure and export.
ERASED_AND_EXPORTED = frozenset({"sessions", "session_messages", "preferences", "idempotency_keys"})
KEPT_ON_ERASURE = {
    "audit_events": "evidence of what the gateway decided and did: append-only and hash-chained (removing a row "
    "would break the chain), kept under its own retention; it holds ids, actions and reason codes, no payloads",
    "api_keys": "the credential, not data about its use: id, hash, name, profile and scopes; an operator revokes "
    "it (the gate then refuses it), and its id stays referenced by the audit trail",
}
