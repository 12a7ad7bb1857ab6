"""Conversation sessions, their messages, and principals' explicit preferences.

Revision ID: 0003
Revises: 0002
Create Date: 2025-03-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out rather than imported from the models: a migration must keep meaning what it meant when written.
_ID = 128
_LANGUAGE = 35


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("session_id", sa.String(_ID), nullable=False),
        sa.Column("principal_id", sa.String(_ID), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("session_id", name="pk_sessions"),
    )
    op.create_index("ix_sessions_principal_id", "sessions", ["principal_id"])
    op.create_index("ix_sessions_expires_at", "sessions", ["expires_at"])
    op.create_table(
        "session_messages",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("session_id", sa.String(_ID), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_session_messages"),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.session_id"],
            name="fk_session_messages_session_id_sessions",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_session_messages_session_id", "session_messages", ["session_id"])
    op.create_table(
        "preferences",
        sa.Column("principal_id", sa.String(_ID), nullable=False),
        sa.Column("tone", sa.String(32), nullable=False),
        sa.Column("format", sa.String(32), nullable=False),
        sa.Column("language", sa.String(_LANGUAGE), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("principal_id", name="pk_preferences"),
    )


def downgrade() -> None:
    op.drop_table("preferences")
    op.drop_index("ix_session_messages_session_id", table_name="session_messages")
    op.drop_table("session_messages")
    op.drop_index("ix_sessions_expires_at", table_name="sessions")
    op.drop_index("ix_sessions_principal_id", table_name="sessions")
    op.drop_table("sessions")
