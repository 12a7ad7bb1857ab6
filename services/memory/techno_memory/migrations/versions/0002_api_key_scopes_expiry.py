"""API key scopes, expiry and last-change time (for the gates' incremental refresh).

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out rather than imported from the models: a migration must keep meaning what it meant when written.
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
# Keys created before scopes existed could only process requests: that is what they keep.
_EXISTING_SCOPES = ["process"]

# Just the columns the backfill touches, typed so the JSON list is serialised by SQLAlchemy on each database.
_api_keys = sa.table(
    "api_keys",
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("revoked_at", sa.DateTime(timezone=True)),
    sa.column("scopes", _JSON),
    sa.column("updated_at", sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    # Added nullable, filled, then made NOT NULL: existing rows need values no constant server default can give
    # (updated_at comes from each row's own times). Batch mode rebuilds the table on SQLite, which cannot
    # ALTER a column's nullability; on PostgreSQL it issues plain ALTERs.
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("scopes", _JSON, nullable=True))
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        _api_keys.update().values(
            scopes=_EXISTING_SCOPES,
            # The last change of an existing key: its revocation if any, else its creation.
            updated_at=sa.func.coalesce(_api_keys.c.revoked_at, _api_keys.c.created_at),
        )
    )
    with op.batch_alter_table("api_keys") as batch:
        batch.alter_column("scopes", existing_type=_JSON, nullable=False)
        batch.alter_column("updated_at", existing_type=sa.DateTime(timezone=True), nullable=False)
        batch.create_index("ix_api_keys_updated_at", ["updated_at"])


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_index("ix_api_keys_updated_at")
        batch.drop_column("updated_at")
        batch.drop_column("expires_at")
        batch.drop_column("scopes")
