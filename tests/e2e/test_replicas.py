"""Replicas side by side: 1 edge, 2 gates, 2 executors and 2 memory services on one PostgreSQL and Redis, mutual
TLS on. Under steady load, one replica of each gRPC service in turn is killed (SIGKILL) and restarted.

What must hold: a request that fails is a 503 with a reason code and its trace id, and failures stay within the
moment of the kill (the requests in flight on the dead replica); the restarted replica takes traffic again soon
after it reports SERVING; afterwards every 200 has its DECISION and OUTCOME and the hash chain verifies. Limits
and idempotency stay exact across the gate replicas.

The figures (failures per kill, time from SERVING to the first call served) are printed for the closing note;
the assertions are about correctness, with generous bounds on time so a loaded CI machine cannot flake them.
"""

from __future__ import annotations

import asyncio
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from techno.gate.v1 import gate_pb2, gate_pb2_grpc
from techno_core.identity import Identity
from techno_stack.stack import Ports, Replica, Stack, StackConfig

from ..tls import connect
from .support import SUMMARIZE, eventually

POLICY = Path(__file__).with_name("policy.yaml")
WORKERS = 8
# The RPC whose count shows that a replica serves the load again.
SERVED_RPC = {"gate": "Process", "executor": "Execute", "memory": "AppendAuditEvents"}
# Generous: the design target is 1 s (reconnect back-off capped below it); this bound only catches "never".
REJOIN_BOUND_SECONDS = 5.0


@dataclass(frozen=True)
class Result:
    started: float
    finished: float
    status: int
    trace_id: str
    reasons: tuple[str, ...]


@dataclass
class Load:
    """Closed-loop load: ``WORKERS`` clients each sending the next request when the last one is answered."""

    url: str
    key: str
    results: list[Result] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self._tasks = [asyncio.get_running_loop().create_task(self._worker()) for _ in range(WORKERS)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def successes_after(self, moment: float) -> int:
        return sum(1 for r in self.results if r.status == 200 and r.started > moment)

    async def _worker(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                response = await client.post("/v1/process", json=SUMMARIZE, headers={"X-API-Key": self.key})
                body = response.json()
                error = body.get("error", {}) if response.status_code != 200 else {}
                self.results.append(
                    Result(
                        started,
                        time.monotonic(),
                        response.status_code,
                        response.headers.get("x-trace-id", ""),
                        tuple(error.get("reason_codes", ())),
                    )
                )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def replicated(
    create_postgres_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    config = StackConfig(
        state_dir=tmp_path_factory.mktemp("replicas"),
        ports=Ports.free(),
        database_url=create_postgres_database(),
        replicas={"gate": 2, "executor": 2, "memory": 2},
        extra_env={
            "TECHNO_GATE_POLICY_FILE": str(POLICY),
            "TECHNO_GATE_LIMITS_BACKEND": "redis",
            "TECHNO_GATE_LIMITS_KEY_PREFIX": f"techno:e2e-replicas:{uuid.uuid4().hex}:",
            "TECHNO_HEALTH_CHECK_INTERVAL_SECONDS": "0.5",
        },
    )
    stack = Stack(config)
    await stack.start()
    try:
        yield stack
    finally:
        await stack.stop()


def served(replica: Replica) -> float:
    """How many calls of its main RPC the replica has answered (its Prometheus counter, summed over codes)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{replica.metrics_port}/metrics", timeout=2) as response:
        text = response.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == "grpc_server_handled":
            total += sum(s.value for s in family.samples if s.labels.get("grpc_method") == SERVED_RPC[replica.kind])
    return total


async def create_key(stack: Stack, profile: str) -> tuple[str, str]:
    command = [sys.executable, "-m", "techno_gate.keys_cli", "--memory", stack.env["TECHNO_MEMORY_TARGET"]]
    process = await asyncio.create_subprocess_exec(
        *command, "create", "--name", f"replicas-{profile}", "--profile", profile,
        env=stack.operator_env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return err.decode().split()[1], out.decode().strip()


async def known_to_every_gate(stack: Stack, secret: str) -> None:
    """Wait until each gate replica has the key in its cache (each refreshes on its own)."""
    for replica in stack.replicas_of("gate"):
        async with connect(
            replica.address, identity=Identity.EDGE, server=Identity.GATE, directory=stack.config.tls_dir
        ) as channel:
            stub = gate_pb2_grpc.GateServiceStub(channel)

            async def knows(stub: gate_pb2_grpc.GateServiceStub = stub) -> bool:
                try:
                    await stub.ListActions(gate_pb2.ListActionsRequest(), metadata=[("x-api-key", secret)], timeout=2)
                except Exception:
                    return False
                return True

            await eventually(knows)


@dataclass
class Kill:
    name: str
    killed_at: float
    serving_at: float
    rejoined_at: float


async def kill_and_restart(stack: Stack, load: Load, replica: Replica) -> Kill:
    await eventually(lambda: _true(load.successes_after(time.monotonic() - 1) > WORKERS))  # steady load first
    killed_at = time.monotonic()
    await stack.kill(replica.name)
    # The survivors carry the load while it is down.
    await eventually(lambda: _true(load.successes_after(killed_at + 0.5) >= 3 * WORKERS), within=15)
    await stack.restart(replica.name)
    serving_at = time.monotonic()

    async def rejoined() -> bool:
        return await asyncio.to_thread(served, replica) > 0

    await eventually(rejoined, within=REJOIN_BOUND_SECONDS)
    return Kill(replica.name, killed_at, serving_at, time.monotonic())


async def _true(value: bool) -> bool:
    return value


def audit_kinds_by_trace(database_url: str) -> dict[str, set[str]]:
    kinds: dict[str, set[str]] = {}
    with psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://")) as connection:
        for trace_id, kind, result in connection.execute("SELECT trace_id, kind, result FROM audit_events"):
            kinds.setdefault(trace_id, set()).add(f"{kind}:{result}")
    return kinds


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
        await eventually(lambda: _true(load.successes_after(time.monotonic() - 1) > WORKERS))
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

    kinds = audit_kinds_by_trace(stack.config.database_url)
    incomplete = [
        r.trace_id for r in successes if not {"DECISION:ALLOW", "OUTCOME:SUCCEEDED"} <= kinds.get(r.trace_id, set())
    ]
    assert not incomplete, f"{len(incomplete)} successes without DECISION and OUTCOME, e.g. {incomplete[:3]}"
    verify = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "techno_memory", "verify",
        env={**stack.env, "TECHNO_MEMORY_DATABASE_URL": stack.config.database_url},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    report, _ = await verify.communicate()
    assert verify.returncode == 0, report.decode()


# One stack for the module (starting seven processes is most of the time): the limits test runs first, then the
# kills.
pytestmark = [pytest.mark.postgres, pytest.mark.asyncio(loop_scope="module")]
