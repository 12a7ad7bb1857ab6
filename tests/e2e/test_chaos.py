"""Chaos under load, on PostgreSQL: 1 edge, 2 gates, 1 executor, 1 memory (its reconciler's grace set short).

1. A gate is killed (SIGKILL) and restarted while every client sends an Idempotency-Key and retries each 503
   (and 504, and 409 "still running") with the same key, as the 503's message tells it to: every key runs at most
   once. A key whose first attempt was cut ends with a 200 (its run, or a replay of it), or, when the kill came
   after its request was allowed and before its response was stored, with 409 ``IDEMPOTENCY_OUTCOME_UNKNOWN``
   naming the earlier trace (the client stops there): never with a second run.
2. Memory is killed and restarted, then PostgreSQL itself is restarted, under steady load: afterwards every 200
   has its DECISION ALLOW and OUTCOME SUCCEEDED (outcomes memory refused meanwhile were kept in the gates'
   outboxes and delivered late), every DECISION ALLOW has an OUTCOME (the reconciler closes those whose outcome
   was lost as UNKNOWN) and ``python -m techno_memory verify`` passes.

Restarting PostgreSQL disturbs every other test using it at that moment: CI runs the suite serially. The figures
(failures, outcomes delivered late, decisions reconciled, keys answered OUTCOME_UNKNOWN) are printed for the
closing note (``pytest -s``); nothing waits a fixed time.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio

from techno_stack.stack import Stack
from tests.postgres_cluster import ensure_running, pg_ctlcluster, require_cluster_tools, wait_until_ready

from .chaos import (
    WORKERS,
    Load,
    Result,
    audit_kinds_by_trace,
    create_key,
    kill_and_restart,
    known_to_every_gate,
    libpq,
    metric,
    open_decisions,
    outboxes_drained,
    outcome_counts,
    steady,
    verify_chain,
)
from .support import eventually, started_stack

# Short, so the test sees decisions closed; in production it is minutes (above the longest execution plus the
# outbox's retries).
RECONCILE_AFTER_SECONDS = 6
# A short deadline keeps an abandoned Idempotency-Key's lease (deadline + 5 s) short.
REQUEST_TIMEOUT_SECONDS = 2.0


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chaos_stack(
    create_postgres_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    require_cluster_tools()
    database_url = create_postgres_database()  # its own: the test restarts the server under it
    try:
        async with started_stack(
            tmp_path_factory.mktemp("chaos"),
            database_url,
            replicas={"gate": 2},
            env={
                "TECHNO_HEALTH_CHECK_INTERVAL_SECONDS": "0.5",
                "TECHNO_MEMORY_RECONCILE_AFTER_SECONDS": str(RECONCILE_AFTER_SECONDS),
                "TECHNO_MEMORY_RECONCILE_INTERVAL_SECONDS": "0.5",
            },
        ) as stack:
            yield stack
    finally:
        ensure_running(libpq(database_url))


async def all_decisions_closed(stack: Stack) -> None:
    """Every gate's outbox is drained and every DECISION ALLOW has an OUTCOME (the reconciler runs every 0.5 s
    and closes a decision RECONCILE_AFTER_SECONDS after it was recorded)."""
    await outboxes_drained(stack)

    async def closed() -> bool:
        return not await asyncio.to_thread(open_decisions, stack.config.database_url)

    await eventually(closed, within=RECONCILE_AFTER_SECONDS + 20)


async def test_a_client_retrying_with_the_same_idempotency_key_through_a_gate_kill(chaos_stack: Stack) -> None:
    stack = chaos_stack
    _, secret = await create_key(stack, "default")
    await known_to_every_gate(stack, secret)
    load = Load(stack.edge_url, secret, retry_with_same_key=True, request_timeout_seconds=REQUEST_TIMEOUT_SECONDS)
    load.start()
    try:
        kill = await kill_and_restart(stack, load, stack.replicas_of("gate")[1])
        await steady(load)
    finally:
        await load.stop()  # each client finishes its current key first
    await all_decisions_closed(stack)

    assert not load.unfinished_keys
    attempts: dict[str, list[Result]] = {}
    for result in load.results:
        attempts.setdefault(result.key, []).append(result)
    unknown = {key for key, tries in attempts.items() if tries[-1].reasons == ("IDEMPOTENCY_OUTCOME_UNKNOWN",)}
    unanswered = {key: tries for key, tries in attempts.items() if tries[-1].status != 200 and key not in unknown}
    assert not unanswered, {k: [(r.status, r.reasons) for r in v] for k, v in unanswered.items()}  # a 200, or …
    assert all(attempts[key][-1].status == 409 for key in unknown)  # … 409 OUTCOME_UNKNOWN, and no retry after it
    failures = [r for r in load.results if r.status != 200]
    assert {(r.status, r.reasons) for r in failures} <= {
        (503, ("UPSTREAM_UNAVAILABLE",)),
        (409, ("IDEMPOTENCY_KEY_IN_PROGRESS",)),
        (409, ("IDEMPOTENCY_OUTCOME_UNKNOWN",)),  # the dead gate's request was allowed: it may have run
        (504, ("DEADLINE_EXCEEDED",)),  # the survivor waited for the dead gate's claim until the deadline
    }, failures
    # The 503s are the requests in flight on the killed gate (and the 409s their retries waiting for the lease).
    assert all(kill.killed_at - 1.0 <= r.finished for r in failures), (failures, kill)

    kinds = audit_kinds_by_trace(stack.config.database_url)
    ran: dict[str, list[str]] = {}  # key → the traces of its requests that were allowed (ran or may have run)
    for key, tries in attempts.items():
        traces = {r.trace_id for r in tries} | {tries[-1].body_trace_id}
        ran[key] = [t for t in traces if "DECISION:ALLOW" in kinds.get(t, set())]
    untouched = [key for key, tries in attempts.items() if len(tries) == 1]
    cut = [key for key, tries in attempts.items() if any(r.status == 503 for r in tries)]
    assert len(untouched) > 10 * WORKERS
    assert all(len(ran[key]) == 1 for key in untouched)  # without a failure, one request ran once
    twice = {key: ran[key] for key in attempts if len(ran[key]) > 1}
    assert not twice, twice  # the guarantee: a key never runs a second time, whatever was cut
    assert unknown <= set(cut), unknown  # only a kill leaves a request whose outcome is unknown
    for key in cut:
        if key in unknown:
            # The 409 names the one request that was allowed and may have run; nothing ran after it.
            (earlier,) = ran[key]
            assert earlier in attempts[key][-1].message, (key, attempts[key][-1])
            assert not kinds.get(attempts[key][-1].trace_id), key  # the refused repeat decided and ran nothing
            continue
        final = attempts[key][-1].body_trace_id
        assert "OUTCOME:SUCCEEDED" in kinds[final], key  # the 200 the client got is the run that succeeded
        assert ran[key] == [final], (key, ran[key])  # its one run: a replay, or the run of a retry of a request
        # that never reached its decision
    unknown_outcomes = sorted(k for key in unknown for k in kinds[ran[key][0]] if k.startswith("OUTCOME"))
    executed_503 = [r for r in failures if r.status == 503 and "OUTCOME:SUCCEEDED" in kinds.get(r.trace_id, set())]
    replayed = [
        key for key in cut if key not in unknown and attempts[key][-1].body_trace_id == attempts[key][0].trace_id
    ]
    print(  # the figures for the closing note (pytest -s shows them)
        f"gate kill: {len(attempts)} keys, {len(cut)} cut by the kill ({len(failures)} failed attempts: "
        f"{dict(Counter(r.status for r in failures))}); 503s that had executed: {len(executed_503)}; "
        f"cut keys answered by a replay of their first run: {len(replayed)}; answered 409 OUTCOME_UNKNOWN: "
        f"{len(unknown)} (their first runs' outcomes: {unknown_outcomes}); run a second time: 0"
    )


async def test_killing_memory_and_restarting_postgresql_under_load_loses_no_outcome(chaos_stack: Stack) -> None:
    stack = chaos_stack
    _, secret = await create_key(stack, "default")
    await known_to_every_gate(stack, secret)
    load = Load(stack.edge_url, secret)
    load.start()
    try:
        memory_kill = await kill_and_restart(stack, load, stack.replicas_of("memory")[0], survivors_carry=False)
        await steady(load)
        restarted_at = time.monotonic()
        restart = await asyncio.to_thread(pg_ctlcluster, "restart")
        assert restart.returncode == 0, f"pg_ctlcluster restart failed: {restart.stderr.strip()}"
        await asyncio.to_thread(wait_until_ready, libpq(stack.config.database_url))
        await eventually(lambda: load.successes_after(time.monotonic() - 1) > WORKERS, within=30)
    finally:
        await load.stop()
    await all_decisions_closed(stack)

    successes = [r for r in load.results if r.status == 200]
    failures = [r for r in load.results if r.status != 200]
    assert len(successes) > 10 * WORKERS
    for failure in failures:
        assert failure.status == 503, failure
        assert failure.reasons, failure
        assert len(failure.trace_id) == 32, failure
    kinds = audit_kinds_by_trace(stack.config.database_url)
    incomplete = [
        r.trace_id for r in successes if not {"DECISION:ALLOW", "OUTCOME:SUCCEEDED"} <= kinds.get(r.trace_id, set())
    ]
    assert not incomplete, f"{len(incomplete)} successes without DECISION and OUTCOME, e.g. {incomplete[:3]}"
    assert not open_decisions(stack.config.database_url)
    await verify_chain(stack)

    gates = stack.replicas_of("gate")
    delivered = sum(metric(gate, "gate_outbox_delivered_total") for gate in gates)
    dropped = sum(metric(gate, "gate_outbox_dropped_total") for gate in gates)
    reasons = Counter(reason for f in failures for reason in f.reasons)
    during_memory = sum(1 for f in failures if f.finished < restarted_at)
    print(  # the figures for the closing note (pytest -s shows them)
        f"memory kill + PostgreSQL restart: {len(successes)} successes, {len(failures)} failures "
        f"({during_memory} around the memory kill at {memory_kill.killed_at:.1f}, the rest around the PostgreSQL "
        f"restart) {dict(reasons)}; outcomes delivered late by the outbox: {delivered:g}, dropped: {dropped:g}; "
        f"outcomes by result: {outcome_counts(stack.config.database_url)}"
    )


# One stack for the module; the gate kill runs first, then memory and PostgreSQL.
pytestmark = [pytest.mark.postgres, pytest.mark.asyncio(loop_scope="module")]
