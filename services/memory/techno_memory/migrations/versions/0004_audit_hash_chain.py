"""The audit trail becomes tamper-evident and append-only: a hash chain over its events, and on PostgreSQL
triggers that refuse UPDATE, DELETE and TRUNCATE of audit_events.

Revision ID: 0004
Revises: 0003
Create Date: 2025-03-15
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# The one definition of the hash (imported, unlike the schema, which is written out below): the events stored
# before this revision must be chained exactly as the service chains new ones. That definition is frozen.
from techno_memory.domain.chain import GENESIS_HASH, event_hash
from techno_memory.domain.records import AuditEvent, AuditEventKind

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_HASH = 64
_BATCH = 1000
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

_audit_events = sa.table(
    "audit_events",
    sa.column("id", sa.BigInteger()),
    sa.column("event_id", sa.String()),
    sa.column("trace_id", sa.String()),
    sa.column("kind", sa.String()),
    sa.column("occurred_at", sa.DateTime(timezone=True)),
    sa.column("service", sa.String()),
    sa.column("principal_id", sa.String()),
    sa.column("action", sa.String()),
    sa.column("context_id", sa.String()),
    sa.column("result", sa.String()),
    sa.column("reason_codes", _JSON),
    sa.column("attributes", _JSON),
    sa.column("prev_hash", sa.String()),
    sa.column("hash", sa.String()),
)

_REFUSE_FUNCTION = "audit_events_refuse_change"
_ROW_TRIGGER = "audit_events_append_only"
_TRUNCATE_TRIGGER = "audit_events_no_truncate"


def _utc(moment: datetime) -> datetime:
    # SQLite gives back the UTC wall time it was given, without a zone.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _event(row: Any) -> AuditEvent:
    return AuditEvent(
        event_id=row.event_id,
        trace_id=row.trace_id,
        kind=AuditEventKind(row.kind),
        occurred_at=_utc(row.occurred_at),
        service=row.service,
        principal_id=row.principal_id,
        action=row.action,
        context_id=row.context_id,
        result=row.result,
        reason_codes=tuple(row.reason_codes),
        attributes=dict(row.attributes),
    )


def _chain_existing_events() -> None:
    """Chain the events already stored, in id order, a batch at a time."""
    connection = op.get_bind()
    table = _audit_events
    update = (
        table.update()
        .where(table.c.id == sa.bindparam("row_id"))
        .values(prev_hash=sa.bindparam("new_prev_hash"), hash=sa.bindparam("new_hash"))
    )
    head, last_id = GENESIS_HASH, None
    while True:
        query = sa.select(table).order_by(table.c.id).limit(_BATCH)
        if last_id is not None:
            query = query.where(table.c.id > last_id)
        rows = connection.execute(query).all()
        if not rows:
            return
        values = []
        for row in rows:
            linked = event_hash(_event(row), head)
            values.append({"row_id": row.id, "new_prev_hash": head, "new_hash": linked})
            head = linked
        connection.execute(update, values)
        last_id = rows[-1].id


def upgrade() -> None:
    # Added nullable, filled, then made NOT NULL (as in 0002): batch mode rebuilds the table on SQLite.
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("prev_hash", sa.String(_HASH), nullable=True))
        batch.add_column(sa.Column("hash", sa.String(_HASH), nullable=True))
    _chain_existing_events()
    with op.batch_alter_table("audit_events") as batch:
        batch.alter_column("prev_hash", existing_type=sa.String(_HASH), nullable=False)
        batch.alter_column("hash", existing_type=sa.String(_HASH), nullable=False)
        batch.create_unique_constraint("uq_audit_events_prev_hash", ["prev_hash"])
    if op.get_bind().dialect.name == "postgresql":
        # Append-only at the database too: neither this service nor anyone with its credentials can change or
        # remove an event. (Only the table's owner or a superuser can disable the triggers: the chain then still
        # shows what they changed.)
        op.execute(
            f"""
            CREATE FUNCTION {_REFUSE_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
                    USING ERRCODE = 'insufficient_privilege';
            END
            $$
            """
        )
        op.execute(
            f"CREATE TRIGGER {_ROW_TRIGGER} BEFORE UPDATE OR DELETE ON audit_events "
            f"FOR EACH ROW EXECUTE FUNCTION {_REFUSE_FUNCTION}()"
        )
        op.execute(
            f"CREATE TRIGGER {_TRUNCATE_TRIGGER} BEFORE TRUNCATE ON audit_events "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {_REFUSE_FUNCTION}()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {_TRUNCATE_TRIGGER} ON audit_events")
        op.execute(f"DROP TRIGGER IF EXISTS {_ROW_TRIGGER} ON audit_events")
        op.execute(f"DROP FUNCTION IF EXISTS {_REFUSE_FUNCTION}()")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_constraint("uq_audit_events_prev_hash", type_="unique")
        batch.drop_column("hash")
        batch.drop_column("prev_hash")
