"""Helpers of the chaos tests (processes killed or restarted under load): a closed-loop load that stops by itself,
killing and restarting a replica, reading a replica's metrics, and reading the audit trail straight from
PostgreSQL."""

from __future__ import annotations

import asyncio
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field

import httpx
import psycopg
from prometheus_client.parser import text_string_to_metric_families

from techno.gate.v1 import gate_pb2, gate_pb2_grpc
from techno_core.identity import Identity
from techno_stack.stack import Replica, Stack

from ..rest_errors import reasons_of
from ..tls import connect
from .support import SUMMARIZE, eventually

WORKERS = 8
# The RPC whose count shows that a replica serves the load again.
SERVED_RPC = {"gate": "Process", "executor": "Execute", "memory": "AppendAuditEvents"}
# Generous: the design target is 1 s (reconnect back-off capped below it); this bound only catches "never".
REJOIN_BOUND_SECONDS = 5.0
# A load stops by itself after this, whatever the test does (it never outlives a broken test for long).
LOAD_LIMIT_SECONDS = 120.0
# What a retrying client sends again with the same Idempotency-Key: an unavailable upstream and a deadline
# exceeded (the request may have run), and "still running" (the first attempt holds the key until its lease ends).
RETRIED_STATUSES = frozenset({503, 504, 409})
# … but not this 409: the first attempt may have run and its response is lost; the key never runs it again.
OUTCOME_UNKNOWN = "IDEMPOTENCY_OUTCOME_UNKNOWN"


@dataclass(frozen=True)
class Result:
    started: float
    finished: float
    status: int
    trace_id: str  # the attempt's (the X-Trace-Id header); a replayed 200 carries the first run's in its body
    reasons: tuple[str, ...]
    key: str = ""  # the Idempotency-Key, when sent
    body_trace_id: str = ""
    message: str = ""  # the error's


@dataclass
class Load:
    """Closed-loop load: ``WORKERS`` clients each sending the next request when the last one is answered.

    With ``retry_with_same_key`` every request carries a fresh Idempotency-Key, and a client answered 503, 504 or
    409 sends the same request with the same key again (after a short pause, or the Retry-After) until it gets a
    200, or the 409 ``IDEMPOTENCY_OUTCOME_UNKNOWN`` that says retrying cannot help: how a client retries safely.
    ``stop`` then lets each client finish its current key."""

    url: str
    key: str
    retry_with_same_key: bool = False
    request_timeout_seconds: float | None = None
    results: list[Result] = field(default_factory=list)
    unfinished_keys: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self._tasks = [asyncio.get_running_loop().create_task(self._worker()) for _ in range(WORKERS)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def successes_after(self, moment: float) -> int:
        return sum(1 for r in self.results if r.status == 200 and r.started > moment)

    def failures_after(self, moment: float) -> int:
        return sum(1 for r in self.results if r.status != 200 and r.started > moment)

    async def _worker(self) -> None:
        limit = time.monotonic() + LOAD_LIMIT_SECONDS
        headers = {"X-API-Key": self.key}
        if self.request_timeout_seconds is not None:
            headers["X-Request-Timeout"] = f"{self.request_timeout_seconds:g}"
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set() and time.monotonic() < limit:
                if not self.retry_with_same_key:
                    await self._send(client, headers)
                    continue
                key = str(uuid.uuid4())
                while time.monotonic() < limit:
                    result, retry_after = await self._send(client, {**headers, "Idempotency-Key": key})
                    if result.status not in RETRIED_STATUSES or OUTCOME_UNKNOWN in result.reasons:
                        break
                    await asyncio.sleep(retry_after)  # a client's back-off between its attempts
                else:
                    self.unfinished_keys.append(key)

    async def _send(self, client: httpx.AsyncClient, headers: dict[str, str]) -> tuple[Result, float]:
        started = time.monotonic()
        try:
            response = await client.post("/v1/process", json=SUMMARIZE, headers=headers)
        except httpx.TransportError:  # the edge itself never goes away in these tests; count it as a failure
            result = Result(started, time.monotonic(), 0, "", ("TRANSPORT",), headers.get("Idempotency-Key", ""))
            self.results.append(result)
            return result, 0.1
        body = response.json()
        error = body.get("error", {}) if response.status_code != 200 else {}
        result = Result(
            started,
            time.monotonic(),
            response.status_code,
            response.headers.get("x-trace-id", ""),
            tuple(reasons_of(error)) if error else (),
            headers.get("Idempotency-Key", ""),
            body.get("traceId", "") if response.status_code == 200 else "",
            str(error.get("message", "")),
        )
        self.results.append(result)
        return result, min(float(response.headers.get("retry-after", "0.1")), 1.0)


def metric(replica: Replica, name: str, **labels: str) -> float:
    """The sum of a replica's samples of ``name`` (its Prometheus exposition) matching ``labels``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{replica.metrics_port}/metrics", timeout=2) as response:
        text = response.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def served(replica: Replica) -> float:
    """How many calls of its main RPC the replica has answered (its Prometheus counter, summed over codes)."""
    return metric(replica, "grpc_server_handled_total", grpc_method=SERVED_RPC[replica.kind])


async def create_key(stack: Stack, profile: str) -> tuple[str, str]:
    command = [sys.executable, "-m", "techno_gate.keys_cli", "--memory", stack.env["TECHNO_MEMORY_TARGET"]]
    process = await asyncio.create_subprocess_exec(
        *command, "create", "--name", f"chaos-{profile}", "--profile", profile,
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


async def steady(load: Load) -> None:
    """The load is served: more than one success per client in the last second."""
    await eventually(lambda: load.successes_after(time.monotonic() - 1) > WORKERS, within=30)


@dataclass
class Kill:
    name: str
    killed_at: float
    serving_at: float
    rejoined_at: float


async def kill_and_restart(stack: Stack, load: Load, replica: Replica, *, survivors_carry: bool = True) -> Kill:
    """SIGKILL ``replica`` under steady load, wait until the load has gone on without it (served by the survivors,
    or at least answered when it had none), restart it and wait until it serves calls again."""
    await steady(load)
    killed_at = time.monotonic()
    await stack.kill(replica.name)
    if survivors_carry:
        await eventually(lambda: load.successes_after(killed_at + 0.5) >= 3 * WORKERS, within=15)
    else:  # every client has been answered without it
        await eventually(lambda: load.failures_after(killed_at) >= WORKERS, within=15)
    await stack.restart(replica.name)
    serving_at = time.monotonic()

    async def rejoined() -> bool:
        return await asyncio.to_thread(served, replica) > 0

    await eventually(rejoined, within=REJOIN_BOUND_SECONDS)
    return Kill(replica.name, killed_at, serving_at, time.monotonic())


async def outboxes_drained(stack: Stack, *, within: float = 30) -> None:
    """Every gate's outbox is empty: each outcome memory could not commit at first has been delivered since."""

    def empty() -> bool:
        return all(metric(gate, "gate_outbox_events") == 0 for gate in stack.replicas_of("gate"))

    async def drained() -> bool:
        return await asyncio.to_thread(empty)

    await eventually(drained, within=within)


def libpq(database_url: str) -> str:
    return database_url.replace("postgresql+psycopg://", "postgresql://")


def audit_kinds_by_trace(database_url: str) -> dict[str, set[str]]:
    """Every trace's events as ``KIND:RESULT``."""
    kinds: dict[str, set[str]] = {}
    with psycopg.connect(libpq(database_url)) as connection:
        for trace_id, kind, result in connection.execute("SELECT trace_id, kind, result FROM audit_events"):
            kinds.setdefault(trace_id, set()).add(f"{kind}:{result}")
    return kinds


def open_decisions(database_url: str) -> list[str]:
    """Event ids of the allowed decisions that no outcome closes (an outcome names its decision)."""
    with psycopg.connect(libpq(database_url)) as connection:
        rows = connection.execute(
            "SELECT d.event_id FROM audit_events d WHERE d.kind = 'DECISION' AND d.result = 'ALLOW' "
            "AND NOT EXISTS (SELECT 1 FROM audit_events o WHERE o.trace_id = d.trace_id AND o.kind = 'OUTCOME' "
            "AND o.attributes ->> 'decision_event_id' = d.event_id)"
        ).fetchall()
    return [row[0] for row in rows]


def outcome_counts(database_url: str) -> dict[str, int]:
    """OUTCOME events by result."""
    with psycopg.connect(libpq(database_url)) as connection:
        rows = connection.execute("SELECT result, count(*) FROM audit_events WHERE kind = 'OUTCOME' GROUP BY result")
        return dict(rows.fetchall())


async def verify_chain(stack: Stack) -> None:
    """``python -m techno_memory verify`` passes on the stack's database."""
    verify = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "techno_memory", "verify",
        env={**stack.env, "TECHNO_MEMORY_DATABASE_URL": stack.config.database_url},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    report, _ = await verify.communicate()
    assert verify.returncode == 0, report.decode()
