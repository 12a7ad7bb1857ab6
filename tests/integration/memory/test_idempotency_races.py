"""Idempotency races played in a fixed order on PostgreSQL, so each runs the same way every time.

A claim that found an abandoned record is paused just before its takeover (its compare-and-set UPDATE), and the
competing change runs to completion in another transaction at that moment: another duplicate taking the record
over, or the original holder completing. The paused claim must then see the change and neither win a second
time nor wipe a stored response. (The concurrent tests in test_idempotency.py race freely, so they meet these
interleavings only by chance.)"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from techno_memory.adapters.database import create_database_engine
from techno_memory.adapters.idempotency_repository import SqlIdempotencyStore
from techno_memory.domain.idempotency import Claim, ClaimRequest, ClaimState, IdempotencyRecord

from .conftest import migrate

NOW = datetime(2030, 1, 1, tzinfo=UTC)
LEASE = timedelta(seconds=30)
RETENTION = timedelta(days=1)
ALICE = "key_alice"


class PausingStore(SqlIdempotencyStore):
    """The real store, with ``meanwhile`` run once right before a takeover's compare-and-set, while the claim's
    transaction is open and has read the abandoned record."""

    def __init__(self, engine: AsyncEngine, meanwhile: Callable[[], Awaitable[None]]) -> None:
        super().__init__(engine)
        self._meanwhile: Callable[[], Awaitable[None]] | None = meanwhile

    async def _take_over(self, connection: AsyncConnection, record: IdempotencyRecord, fresh: dict[str, Any]) -> bool:
        if self._meanwhile is not None:
            meanwhile, self._meanwhile = self._meanwhile, None
            await meanwhile()
        return await super()._take_over(connection, record, fresh)


def claim_at(now: datetime, request_hash: str = "hash-a", key: str = "key-1") -> ClaimRequest:
    return ClaimRequest(
        principal_id=ALICE,
        key=key,
        request_hash=request_hash,
        now=now,
        lease_expires_at=now + LEASE,
        expires_at=now + RETENTION,
    )


@pytest.fixture
async def engine(postgres_database: str) -> AsyncIterator[AsyncEngine]:
    await migrate(postgres_database, to="base")
    await migrate(postgres_database, to="head")
    engine = create_database_engine(postgres_database, pool_size=3, tracer_provider=None)
    yield engine
    await engine.dispose()


@pytest.fixture
async def abandoned(engine: AsyncEngine) -> datetime:
    """A claim made at NOW whose holder never finished; returns the first instant its lease is over."""
    assert await SqlIdempotencyStore(engine).claim(claim_at(NOW)) == Claim(ClaimState.CLAIMED)
    return NOW + LEASE


async def test_of_two_duplicates_taking_over_one_abandoned_claim_only_the_first_wins(
    engine: AsyncEngine, abandoned: datetime
) -> None:
    store = SqlIdempotencyStore(engine)
    first: list[Claim] = []

    async def first_duplicate_takes_over() -> None:
        first.append(await store.claim(claim_at(abandoned)))

    second = await PausingStore(engine, first_duplicate_takes_over).claim(claim_at(abandoned))
    assert (first, second) == ([Claim(ClaimState.CLAIMED)], Claim(ClaimState.IN_PROGRESS))
    assert await store.complete(ALICE, "key-1", b"first's", now=abandoned)
    assert await store.claim(claim_at(abandoned)) == Claim(ClaimState.COMPLETED, b"first's")


async def test_a_takeover_at_the_moment_the_holder_completes_keeps_the_response(
    engine: AsyncEngine, abandoned: datetime
) -> None:
    store = SqlIdempotencyStore(engine)

    async def holder_completes_late() -> None:  # it overran its lease, but did finish
        assert await store.complete(ALICE, "key-1", b"holder's", now=abandoned)

    duplicate = await PausingStore(engine, holder_completes_late).claim(claim_at(abandoned))
    assert duplicate == Claim(ClaimState.COMPLETED, b"holder's")
    assert await store.stored_response(ALICE, "key-1", now=abandoned) == b"holder's"
