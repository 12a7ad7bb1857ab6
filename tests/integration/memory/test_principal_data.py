"""Erasure and export of a principal's data account for every table: each is either erased and exported, or
declared kept with a reason (``techno_memory.adapters.tables``). A row of the principal left in an erased table,
or a table declared nowhere, fails here."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import pytest
from google.protobuf import duration_pb2
from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from techno.memory.v1 import memory_pb2, memory_pb2_grpc
from techno_memory.adapters.database import create_database_engine
from techno_memory.adapters.tables import ERASED_AND_EXPORTED, KEPT_ON_ERASURE, Base

from .test_audit_trail import audit_event, new_trace_id

Stub = memory_pb2_grpc.MemoryServiceStub
ALICE, BOB = "key_alice", "key_bob"
RESPONSE = b"\x00the stored response\xff"


def test_every_table_is_erased_and_exported_or_kept_for_a_stated_reason() -> None:
    tables = set(Base.metadata.tables)
    undeclared = tables - ERASED_AND_EXPORTED - set(KEPT_ON_ERASURE)
    assert not undeclared, f"say what erasure and export do with {sorted(undeclared)} in techno_memory.adapters.tables"
    assert not ERASED_AND_EXPORTED & set(KEPT_ON_ERASURE)
    assert ERASED_AND_EXPORTED | set(KEPT_ON_ERASURE) == tables  # nothing declared that does not exist
    assert all(len(reason) > 40 for reason in KEPT_ON_ERASURE.values())


def rows_of(table: Table, principal_id: str) -> object:
    """A count of ``table``'s rows belonging to the principal: by its principal_id column, or through the
    foreign key to a table that has one (a session's messages)."""
    if "principal_id" in table.c:
        return select(func.count()).select_from(table).where(table.c.principal_id == principal_id)
    (key,) = table.foreign_keys
    parent = key.column.table
    owned = select(key.column).where(parent.c.principal_id == principal_id)
    return select(func.count()).select_from(table).where(key.parent.in_(owned))


@pytest.fixture
async def engine(migrated_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_database_engine(migrated_url, pool_size=1, tracer_provider=None)
    yield engine
    await engine.dispose()


async def counts(engine: AsyncEngine, principal_id: str, names: set[str]) -> dict[str, int]:
    async with engine.connect() as connection:
        return {
            name: int((await connection.execute(rows_of(Base.metadata.tables[name], principal_id))).scalar_one())  # type: ignore[call-overload]
            for name in sorted(names)
        }


async def give_data(stub: Stub, principal_id: str) -> None:
    """Something of the principal's in every erased table, and in the audit trail."""
    session = (await stub.CreateSession(memory_pb2.CreateSessionRequest(principal_id=principal_id))).session
    message = memory_pb2.SessionMessage(role="user", content=f"{principal_id}'s question")
    await stub.AppendSessionMessages(
        memory_pb2.AppendSessionMessagesRequest(
            principal_id=principal_id, session_id=session.session_id, messages=[message]
        )
    )
    preferences = memory_pb2.Preferences(tone="friendly")
    await stub.SetPreferences(memory_pb2.SetPreferencesRequest(principal_id=principal_id, preferences=preferences))
    for key, done in (("done-1", True), ("running-1", False)):
        lease = duration_pb2.Duration(seconds=30)
        claim = memory_pb2.ClaimIdempotencyKeyRequest(
            principal_id=principal_id, idempotency_key=key, request_hash=hashlib.sha256(b"r").hexdigest(), lease=lease
        )
        await stub.ClaimIdempotencyKey(claim)
        if done:
            completion = memory_pb2.CompleteIdempotencyKeyRequest(
                principal_id=principal_id, idempotency_key=key, response=RESPONSE
            )
            await stub.CompleteIdempotencyKey(completion)
    event = audit_event(new_trace_id(), principal_id=principal_id)
    await stub.AppendAuditEvents(memory_pb2.AppendAuditEventsRequest(events=[event]))


async def test_erasure_leaves_nothing_of_the_principal_in_an_erased_table_and_export_shows_it_all(
    stub: Stub, engine: AsyncEngine
) -> None:
    await give_data(stub, ALICE)
    await give_data(stub, BOB)
    before = await counts(engine, ALICE, set(ERASED_AND_EXPORTED) | {"audit_events"})
    assert all(before.values()), before  # every erased table holds something of hers: the test covers them all

    export = await stub.ExportPrincipalData(memory_pb2.ExportPrincipalDataRequest(principal_id=ALICE))
    assert [m.content for s in export.sessions for m in s.messages] == ["key_alice's question"]
    assert export.preferences.tone == "friendly"
    records = {r.idempotency_key: (r.completed, r.response) for r in export.idempotency_records}
    assert records == {"done-1": (True, RESPONSE), "running-1": (False, b"")}
    assert all(r.created_at.seconds and r.expires_at.seconds for r in export.idempotency_records)

    erased = await stub.DeletePrincipalData(memory_pb2.DeletePrincipalDataRequest(principal_id=ALICE))
    assert (erased.sessions_deleted, erased.preferences_deleted, erased.idempotency_records_deleted) == (1, True, 2)
    assert await counts(engine, ALICE, set(ERASED_AND_EXPORTED)) == dict.fromkeys(sorted(ERASED_AND_EXPORTED), 0)
    assert (await counts(engine, ALICE, {"audit_events"}))["audit_events"] == before["audit_events"]  # kept
    assert all((await counts(engine, BOB, set(ERASED_AND_EXPORTED))).values())  # another's data untouched

    export = await stub.ExportPrincipalData(memory_pb2.ExportPrincipalDataRequest(principal_id=ALICE))
    assert (list(export.sessions), list(export.idempotency_records)) == ([], [])
