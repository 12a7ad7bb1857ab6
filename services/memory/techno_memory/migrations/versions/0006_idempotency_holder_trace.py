"""The trace id of an idempotency claim's holder, so that a claim whose lease ran out without a response can be
judged by the audit trail (was the holder's request allowed, and did it fail?) instead of being taken over blindly.

Nullable: records claimed before this migration, or without a trace, have none and are taken over as before.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out rather than imported from the models: a migration must keep meaning what it meant when written.
_TRACE_ID = 32


def upgrade() -> None:
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.add_column(sa.Column("trace_id", sa.String(_TRACE_ID), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_column("trace_id")
