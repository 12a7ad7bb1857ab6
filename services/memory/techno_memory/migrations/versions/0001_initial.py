"""Initial schema: API keys and the audit trail.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out rather than imported from the models: a migration must keep meaning what it meant when written.
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_ID = 128
_TEXT = 1024


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(_ID), nullable=False),
        sa.Column("prefix", sa.String(_ID), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("name", sa.String(_TEXT), nullable=False),
        sa.Column("profile", sa.String(_ID), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key_id", name="pk_api_keys"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(_ID), nullable=False),
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("service", sa.String(_ID), nullable=False),
        sa.Column("principal_id", sa.String(_ID), nullable=False),
        sa.Column("action", sa.String(_TEXT), nullable=False),
        sa.Column("context_id", sa.String(_TEXT), nullable=False),
        sa.Column("result", sa.String(_TEXT), nullable=False),
        sa.Column("reason_codes", _JSON, nullable=False),
        sa.Column("attributes", _JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
        sa.UniqueConstraint("event_id", name="uq_audit_events_event_id"),
    )
    op.create_index("ix_audit_events_trace_id", "audit_events", ["trace_id"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_trace_id", table_name="audit_events")
    op.drop_table("audit_events")
    op.drop_table("api_keys")
