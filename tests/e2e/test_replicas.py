"""Replicas side by side: 1 edge, 2 gates, 2 executors and 2 memory services on one PostgreSQL and Redis, mutual
TLS on. Under steady load, one replica of each gRPC service in turn is killed (SIGKILL) and restarted.

What must hold: a request that fails is a 503 with a reason code and its trace id, and failures stay within the
moment of the kill (the requests in flight on the dead replica); the restarted replica takes traffic again soon
after it reports SERVING; afterwards (once the gates' outboxes are drained) every 200 has its DECISION and
OUTCOME and the hash chain verifies. Limits and idempotency stay exact across the gate replicas.

The figures (failures per kill, time from SERVING to the first call served) are printed for the closing note;
the assertions are about correctness, with generous bounds on time so a loaded CI machine cannot flake them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import psycopg
import pytest
import pytest_asyncio

from techno_stack.stack import Stack

from .chaos import (
    WORKERS,
    Kill,
    Load,
    audit_kinds_by_trace,
    create_key,
    kill_and_restart,
    known_to_every_gate,
    outboxes_drained,
    verify_chain,
)
from .support import SUMMARIZE, eventually, started_stack


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def replicated(
    create_postgres_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    async with started_stack(
        tmp_path_factory.mktemp("replicas"),
        create_postgres_database(),
        replicas={"gate": 2, "executor": 2, "memory": 2},
        env={
            "TECHNO_GATE_LIMITS_BACKEND": "redis",
            "TECHNO_GATE_LIMITS_KEY_PREFIX": f"techno:e2e-replicas:{uuid.uuid4().hex}:",
            "TECHNO_HEALTH_CHECK_INTERVAL_SECONDS": "0.5",
        },
    ) as stack:
        yield stack


async def test_limits_and_idempotency_stay_exact_across_gate_replicas(replicated: Stack) -> None:
    stack = replicated
    _, tiny = await create_key(stack, "tiny")  # a burst of 5, then one a minute
    await known_to_every_gate(stack, tiny)
    async with httpx.AsyncClient(base_url=stack.edge_url, timeout=30) as client:
        statuses = await asyncio.gather(
            *(client.post("/v1/process", json=SUMMARIZE, headers={"X-API-Key": tiny}) for _ in range(20))
        )
        assert sorted(r.status_code for r in statuses) == [200] * 5 + [429] * 15

        key_id, secret = await create_key(stack, "default")
        await known_to_every_gate(stack, secret)
        headers = {"X-API-Key": secret, "Idempotency-Key": str(uuid.uuid4())}
        duplicates = await asyncio.gather(
            *(client.post("/v1/process", json=SUMMARIZE, headers=headers) for _ in range(10))
        )
    assert {r.status_code for r in duplicates} == {200}
    assert len({r.content for r in duplicates}) == 1
    with psycopg.connect(stack.config.database_url.replace("postgresql+psycopg://", "postgresql://")) as connection:
        decisions = connection.execute(
            "SELECT count(*) FROM audit_events WHERE principal_id = %s AND kind = 'DECISION'", (key_id,)
        ).fetchone()
    assert decisions == (1,)


async def test_killing_one_replica_of_each_service_loses_nothing(replicated: Stack) -> None:
    stack = replicated
    _, secret = await create_key(stack, "default")
    await known_to_every_gate(stack, secret)
    load = Load(stack.edge_url, secret)
    load.start()
    kills: list[Kill] = []
    try:
        for kind in ("gate", "executor", "memory"):  # one after the other, not a comprehension: each awaits the last
            kills.append(await kill_and_restart(stack, load, stack.replicas_of(kind)[1]))  # noqa: PERF401
        await eventually(lambda: load.successes_after(time.monotonic() - 1) > WORKERS)
    finally:
        await load.stop()

    failures = [r for r in load.results if r.status != 200]
    for failure in failures:
        assert failure.status == 503, failure
        assert failure.reasons, failure
        assert len(failure.trace_id) == 32, failure
        # Only requests in flight around a kill may fail.
        assert any(k.killed_at - 1.0 <= failure.finished <= k.killed_at + 2.0 for k in kills), (failure, kills)
    for kill in kills:
        lost = [f for f in failures if kill.killed_at - 1.0 <= f.finished <= kill.killed_at + 2.0]
        print(  # the figures for the closing note (pytest -s shows them)
            f"{kill.name}: {len(lost)} failed {sorted({r for f in lost for r in f.reasons})}; "
            f"serving→first call {kill.rejoined_at - kill.serving_at:.2f}s"
        )
    successes = [r for r in load.results if r.status == 200]
    assert len(successes) > 10 * WORKERS

    await outboxes_drained(stack)  # an outcome memory refused during the kill is delivered late, not lost
    kinds = audit_kinds_by_trace(stack.config.database_url)
    incomplete = [
        r.trace_id for r in successes if not {"DECISION:ALLOW", "OUTCOME:SUCCEEDED"} <= kinds.get(r.trace_id, set())
    ]
    assert not incomplete, f"{len(incomplete)} successes without DECISION and OUTCOME, e.g. {incomplete[:3]}"
    await verify_chain(stack)


# One stack for the module (starting seven processes is most of the time): the limits test runs first, then the
# kills.
pytestmark = [pytest.mark.postgres, pytest.mark.asyncio(loop_scope="module")]
