"""Audit queries by principal and by time range (keyset indexes), and the idempotency records.

The two indexes are built inside the migration's transaction, which blocks appends to audit_events while they
are built: on a large trail, run ``CREATE INDEX CONCURRENTLY`` with these names and columns first, and this
migration then finds them (``if_not_exists``).

Revision ID: 0005
Revises: 0004
Create Date: 2025-04-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out rather than imported from the models: a migration must keep meaning what it meant when written.
_ID = 128
_KEY = 255
_HASH = 64


def upgrade() -> None:
    op.create_index("ix_audit_events_principal_id_id", "audit_events", ["principal_id", "id"], if_not_exists=True)
    op.create_index("ix_audit_events_occurred_at_id", "audit_events", ["occurred_at", "id"], if_not_exists=True)
    op.create_table(
        "idempotency_keys",
        sa.Column("principal_id", sa.String(_ID), nullable=False),
        sa.Column("idempotency_key", sa.String(_KEY), nullable=False),
        sa.Column("request_hash", sa.String(_HASH), nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("principal_id", "idempotency_key", name="pk_idempotency_keys"),
    )
    op.create_index("ix_idempotency_keys_expires_at", "idempotency_keys", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_expires_at", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
    op.drop_index("ix_audit_events_occurred_at_id", table_name="audit_events")
    op.drop_index("ix_audit_events_principal_id_id", table_name="audit_events")
