"""``make bench-audit``: sustained durable audit appends per second of the memory service (group commit).

Creates a throwaway database (PostgreSQL by default, or a temporary SQLite file with ``--sqlite``), migrates it,
starts ``python -m techno_memory`` on free loopback ports with mutual TLS (a development PKI made for the run; the
clients call as the gate), then drives AppendAuditEvents from separate client
processes (so the load generator does not share the service's process or event loop) at a fixed concurrency for a
fixed time. It prints the events acknowledged per second, the calls' latency percentiles, and, from the service's
own /metrics, the transactions per second and mean group-commit batch size, and the CPU time of memory's
PostgreSQL backends (a local server: read from ``/proc``) per append; then it checks that the hash chain verifies
and drops the database. ``--compare`` runs the same once more with ``TECHNO_MEMORY_MAX_BATCH=1``: one
transaction per event, the cost group commit saves.

After the load, the same service gets one caller sending one event at a time (``--single-seconds``): the latency
of an append that finds memory idle (no batching window may delay it) and the memory process's CPU time per
append, the cost every governed request pays twice (its DECISION and OUTCOME events). The load's appends/s is
judged against the P5 target (``--target``, 5,000/s with 64 callers sending one event each): PASS or MISS.

Then the transport's ceiling (``--ceiling-seconds``): the same client processes and callers, sending the same
request bytes over the same mutual TLS, to the bare chain's role ``b`` (``bare_chain.py``): one grpc.aio process
with no logic at all, answering every call at once. Its calls/s is what one Python process on these libraries
can take from this load on this machine, whatever it does with the calls; memory's appends/s is shown as a
share of it, a figure that means the same on a fast machine and a slow one.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import functools
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import grpc
import psycopg
from bare_chain import METHOD as BARE_METHOD
from bench_support import bare_role, postgres_database
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from techno.memory.v1 import memory_pb2, memory_pb2_grpc
from techno_core.health import READINESS
from techno_core.identity import Identity
from techno_core.tls import CertificateFiles, channel_credentials
from techno_memory.settings import MemorySettings
from techno_stack.certs import ensure_development_pki
from techno_stack.stack import free_port

T = TypeVar("T")

ADMIN_URL = os.environ.get("TECHNO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
START_TIMEOUT_SECONDS = 30.0
CALL_TIMEOUT_SECONDS = 10.0
VERIFY_TIMEOUT_SECONDS = 600.0
P5_APPENDS_PER_SECOND = 5000.0
IDLE_SECONDS = 3.0  # the idle service's own CPU use is measured this long before the one-caller phase

_APPENDED = "memory_audit_events_appended_total"
_BATCH_SUM = "memory_audit_append_batch_size_sum"
_BATCH_COUNT = "memory_audit_append_batch_size_count"
_FAILURES = "memory_audit_append_failures_total"


class BenchError(RuntimeError):
    """The benchmark could not run; the message says what failed (memory's log, if any, is printed before it)."""


# --- the client: runs in its own process ------------------------------------------------------------------------


@dataclass
class ClientResult:
    calls: int = 0
    events: int = 0  # acknowledged as newly stored by the responses
    errors: dict[str, int] = field(default_factory=dict)  # status code name -> count
    latencies_ms: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0  # this process's CPU time during the measured window


@dataclass(frozen=True)
class ClientPlan:
    target: str
    callers: int
    events_per_call: int
    tls_dir: Path  # the run's development PKI: clients present the gate's certificate, as the gate does
    bare: bool = False  # call the bare chain's one method (the transport's ceiling) instead of AppendAuditEvents


def _gate_channel(plan: ClientPlan) -> grpc.aio.Channel:
    tls = plan.tls_dir
    files = CertificateFiles(tls / f"{Identity.GATE}.crt", tls / f"{Identity.GATE}.key", tls / "ca.crt")
    options = [("grpc.ssl_target_name_override", Identity.MEMORY.value)]
    return grpc.aio.secure_channel(plan.target, channel_credentials(files.read()), options=options)


def _request(events_per_call: int) -> memory_pb2.AppendAuditEventsRequest:
    occurred_at = timestamp_pb2.Timestamp()
    occurred_at.GetCurrentTime()
    trace_id = uuid.uuid4().hex  # 32 lowercase hex digits, never all zero in practice
    return memory_pb2.AppendAuditEventsRequest(
        events=[
            memory_pb2.AuditEvent(
                event_id=str(uuid.uuid4()),
                trace_id=trace_id,
                kind=memory_pb2.AUDIT_EVENT_KIND_DECISION,
                occurred_at=occurred_at,
                service="bench",
                principal_id="bench-key",
                action="summarize",
                context_id="bench",
                result="ALLOW",
                reason_codes=["ALLOWED"],
            )
            for _ in range(events_per_call)
        ]
    )


async def _until(wall_time: float) -> None:
    await asyncio.sleep(max(0.0, wall_time - time.time()))


async def _drive(plan: ClientPlan, control: multiprocessing.connection.Connection) -> ClientResult:
    result = ClientResult()
    errors: collections.Counter[str] = collections.Counter()
    async with _gate_channel(plan) as channel:
        await asyncio.wait_for(channel.channel_ready(), START_TIMEOUT_SECONDS)
        append = _append_call(channel, plan)
        control.send("ready")
        start_at, end_at = await asyncio.to_thread(control.recv)

        async def caller() -> None:
            while time.time() < end_at:
                request = _request(plan.events_per_call)
                began = time.perf_counter()
                try:
                    appended = await append(request)
                except grpc.aio.AioRpcError as error:
                    if start_at <= time.time() < end_at:
                        errors[error.code().name] += 1
                    continue
                elapsed_ms = (time.perf_counter() - began) * 1000
                if start_at <= time.time() < end_at:  # counted when acknowledged inside the window
                    result.calls += 1
                    result.events += appended
                    result.latencies_ms.append(elapsed_ms)

        async def cpu_meter() -> None:
            await _until(start_at)
            began = time.process_time()
            await _until(end_at)
            result.cpu_seconds = time.process_time() - began

        await asyncio.gather(cpu_meter(), *(caller() for _ in range(plan.callers)))
    result.errors = dict(errors)
    return result


def _append_call(
    channel: grpc.aio.Channel, plan: ClientPlan
) -> Callable[[memory_pb2.AppendAuditEventsRequest], Awaitable[int]]:
    """Sends one request; returns how many of its events the answer says were stored. The bare chain stores
    nothing and answers bytes: each of its answers counts the request's events."""
    if plan.bare:
        bare = channel.unary_unary(BARE_METHOD, memory_pb2.AppendAuditEventsRequest.SerializeToString, None)

        async def call_bare(request: memory_pb2.AppendAuditEventsRequest) -> int:
            await bare(request, timeout=CALL_TIMEOUT_SECONDS)
            return len(request.events)

        return call_bare
    stub = memory_pb2_grpc.MemoryServiceStub(channel)

    async def call_memory(request: memory_pb2.AppendAuditEventsRequest) -> int:
        response = await stub.AppendAuditEvents(request, timeout=CALL_TIMEOUT_SECONDS)
        return int(response.appended)

    return call_memory


def _client_main(plan: ClientPlan, control: multiprocessing.connection.Connection) -> None:
    """Entry point of a client process: connect, say ready, receive the window, drive it, send the result."""
    try:
        control.send(asyncio.run(_drive(plan, control)))
    except BaseException as error:  # the parent reports it; a traceback from a child process helps nobody
        with contextlib.suppress(OSError):  # the parent may have gone (or closed its end) already
            control.send(BenchError(f"client process failed: {error!r}"))
    finally:
        control.close()


@dataclass
class ClientProcess:
    process: multiprocessing.process.BaseProcess
    control: multiprocessing.connection.Connection


def _receive(control: multiprocessing.connection.Connection, timeout: float, what: str) -> object:
    if not control.poll(timeout):
        raise BenchError(f"no {what} from a client process within {timeout:.0f}s")
    try:
        message: object = control.recv()
    except EOFError as error:
        raise BenchError(f"a client process exited before sending its {what}") from error
    if isinstance(message, BaseException):
        raise message
    return message


@contextlib.contextmanager
def client_processes(plans: list[ClientPlan]) -> Iterator[list[ClientProcess]]:
    """Started client processes (spawned: grpc does not survive fork), each waiting for its window."""
    context = multiprocessing.get_context("spawn")
    clients: list[ClientProcess] = []
    try:
        for plan in plans:
            parent_end, child_end = context.Pipe()
            process = context.Process(target=_client_main, args=(plan, child_end), daemon=True)
            process.start()
            child_end.close()
            clients.append(ClientProcess(process, parent_end))
        yield clients
    finally:
        for client in clients:
            client.control.close()  # a client still waiting for its window then sees EOF and exits
        for client in clients:
            client.process.join(5)
            if client.process.is_alive():
                client.process.kill()
                client.process.join()


# --- measurements of the service --------------------------------------------------------------------------------


def scrape(metrics_port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    wanted = {_APPENDED, _BATCH_SUM, _BATCH_COUNT, _FAILURES}
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in wanted
    }


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_seconds(pid: int) -> float | None:
    """user + system CPU time of ``pid`` (Linux ``/proc``; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14 and 15 of the line)


def machine_cpu_seconds() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine, summed over its cores (Linux ``/proc/stat``)."""
    try:
        line = Path("/proc/stat").read_text().splitlines()[0]
    except OSError:
        return None
    ticks = [int(value) for value in line.split()[1:9]]  # user nice system idle iowait irq softirq steal
    total = sum(ticks)
    return (total - ticks[3] - ticks[4]) / _TICKS, total / _TICKS


def postgres_backend_cpu(admin_url: str, database: str) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend connected to ``database`` (memory's connections), by process
    id; empty without a database or when the server is not on this machine (its backends are not ours to read)."""
    if not database:
        return {}
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
        rows = admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,)).fetchall()
    seconds = {}
    for (pid,) in rows:
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == "postgres":
                seconds[int(pid)] = process_cpu_seconds(int(pid))
    return {pid: cpu for pid, cpu in seconds.items() if cpu is not None}


@dataclass(frozen=True)
class Snapshot:
    at: float
    metrics: dict[str, float]
    service_cpu: float | None
    machine_cpu: tuple[float, float] | None
    postgres_cpu: dict[int, float]  # backend process id → CPU seconds (empty on SQLite or a remote server)


def snapshot(service: MemoryService) -> Snapshot:
    return Snapshot(
        time.time(),
        scrape(service.metrics_port),
        process_cpu_seconds(service.pid),
        machine_cpu_seconds(),
        postgres_backend_cpu(service.admin_url, service.database),
    )


def postgres_cpu_seconds(before: Snapshot, after: Snapshot) -> float | None:
    """CPU time of memory's PostgreSQL backends between the two snapshots (a backend opened in between counts
    from zero); None when they were not measured."""
    if not after.postgres_cpu:
        return None
    return sum(cpu - before.postgres_cpu.get(pid, 0.0) for pid, cpu in after.postgres_cpu.items())


# --- the database and the service -------------------------------------------------------------------------------


def postgres_durability(options: Options) -> str:
    """The server settings that decide what a commit costs, for the report."""
    values = []
    try:
        with psycopg.connect(options.admin_url, autocommit=True, connect_timeout=5) as admin:
            for setting in ("fsync", "synchronous_commit", "wal_sync_method"):
                row = admin.execute(f"SHOW {setting}").fetchone()
                values.append(f"{setting}={row[0] if row else '?'}")
    except psycopg.OperationalError as error:
        raise BenchError(f"PostgreSQL is required at {options.admin_url}: {error}") from error
    return ", ".join(values)


@contextlib.contextmanager
def database(sqlite: bool, admin_url: str, scratch: Path) -> Iterator[str]:
    if sqlite:
        yield f"sqlite+aiosqlite:///{scratch / 'memory.db'}"
    else:
        with postgres_database(admin_url) as url:
            yield url


def service_environment(database_url: str, extra: Mapping[str, str]) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TECHNO_")}
    env.update({"TECHNO_HOST": "127.0.0.1", "TECHNO_MEMORY_DATABASE_URL": database_url, "TECHNO_LOG_LEVEL": "INFO"})
    env.update(extra)
    return env


async def run_to_end(command: list[str], env: Mapping[str, str], log: Path, timeout: float) -> tuple[int, str]:
    """Run ``command``; its stderr is appended to ``log``. Returns its exit status and its stdout, or when it
    failed without printing anything, the last line of its stderr (a traceback's exception, a log line)."""
    process = await asyncio.create_subprocess_exec(
        *command, env=dict(env), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except BaseException:
        process.kill()
        await process.wait()
        raise
    with log.open("ab") as output:
        output.write(stderr)
    status, text = process.returncode or 0, stdout.decode().strip()
    if status != 0 and not text:
        text = next(iter(stderr.decode(errors="replace").strip().splitlines()[-1:]), "")
    return status, text


async def _serving(health_port: int) -> bool:
    """Readiness on the plaintext health-only port (the main port requires a client certificate)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{health_port}") as channel:
        try:
            request = health_pb2.HealthCheckRequest(service=READINESS)
            response = await health_pb2_grpc.HealthStub(channel).Check(request, timeout=1)
        except grpc.aio.AioRpcError:
            return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


@dataclass(frozen=True)
class MemoryService:
    pid: int
    port: int
    metrics_port: int
    admin_url: str = ""
    database: str = ""  # the PostgreSQL database, whose backends' CPU the report counts ("" on SQLite)


@contextlib.asynccontextmanager
async def memory_service(
    env: Mapping[str, str], log: Path, *, admin_url: str = "", database: str = ""
) -> AsyncIterator[MemoryService]:
    """``python -m techno_memory`` on free loopback ports, once its gRPC health says SERVING; SIGTERM after."""
    port, metrics_port, health_port = free_port(), free_port(), free_port()
    env = {
        **env,
        "TECHNO_MEMORY_PORT": str(port),
        "TECHNO_MEMORY_METRICS_PORT": str(metrics_port),
        "TECHNO_MEMORY_HEALTH_PORT": str(health_port),
    }
    with log.open("ab") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "techno_memory", env=env, stdout=output, stderr=output, start_new_session=True
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not await _serving(health_port):
            if process.returncode is not None:
                raise BenchError(f"memory exited with {process.returncode}; its log is above")
            if time.monotonic() > deadline:
                raise BenchError(f"memory not serving after {START_TIMEOUT_SECONDS:.0f}s; its log is above")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 0.1)
        yield MemoryService(process.pid, port, metrics_port, admin_url, database)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()


# --- one run ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    seconds: float
    warmup: float
    concurrency: int
    events_per_call: int
    processes: int
    sqlite: bool
    admin_url: str
    extra_env: dict[str, str]
    single_seconds: float = 0.0  # the one-caller phase after the load (0: none)
    ceiling_seconds: float = 0.0  # the transport's ceiling, measured after the load (0: not measured)
    target: float = P5_APPENDS_PER_SECOND


class ClientTotals:
    """What the client processes of one window saw, summed."""

    clients: list[ClientResult]

    @property
    def calls(self) -> int:
        return sum(c.calls for c in self.clients)

    @property
    def events(self) -> int:
        return sum(c.events for c in self.clients)

    @property
    def errors(self) -> dict[str, int]:
        total: collections.Counter[str] = collections.Counter()
        for client in self.clients:
            total.update(client.errors)
        return dict(total)


@dataclass
class Phase(ClientTotals):
    """One measured window: what the clients saw, and the service's metrics and CPU time around it."""

    window: float  # the clients' measured window
    clients: list[ClientResult]
    before: Snapshot
    after: Snapshot
    idle_cpu: float | None = None  # the service's CPU seconds per second with no calls (health checks, threads)

    @property
    def scraped_seconds(self) -> float:  # between the two scrapes of /metrics (about the same window)
        return self.after.at - self.before.at

    def service_cpu_seconds(self) -> float | None:
        if self.before.service_cpu is None or self.after.service_cpu is None:
            return None
        return self.after.service_cpu - self.before.service_cpu


@dataclass
class RunResult(ClientTotals):
    label: str
    window: float  # the clients' measured window
    scraped_seconds: float  # between the two scrapes of /metrics (about the same window)
    clients: list[ClientResult]
    before: Snapshot
    after: Snapshot
    verify_status: int
    verify_output: str
    single: Phase | None = None  # one caller, one event per call, after the load

    def delta(self, name: str) -> float:
        return self.after.metrics.get(name, 0.0) - self.before.metrics.get(name, 0.0)


def _plans(target: str, options: Options, tls_dir: Path) -> list[ClientPlan]:
    processes = max(1, min(options.processes, options.concurrency))
    shares = [options.concurrency // processes + (i < options.concurrency % processes) for i in range(processes)]
    return [ClientPlan(target, callers, options.events_per_call, tls_dir) for callers in shares]


async def measure(
    service: MemoryService, options: Options, tls_dir: Path
) -> tuple[list[ClientResult], Snapshot, Snapshot]:
    plans = _plans(f"127.0.0.1:{service.port}", options, tls_dir)
    return await _window(plans, options, functools.partial(snapshot, service))


async def _window(
    plans: list[ClientPlan], options: Options, observe: Callable[[], T]
) -> tuple[list[ClientResult], T, T]:
    """The clients of ``plans`` driven for ``options``' warm-up and measured seconds; ``observe`` (run in a thread)
    at the start and at the end of the measured window."""
    with client_processes(plans) as clients:
        for client in clients:
            await asyncio.to_thread(_receive, client.control, START_TIMEOUT_SECONDS, "readiness")
        start_at = time.time() + options.warmup
        end_at = start_at + options.seconds
        for client in clients:
            client.control.send((start_at, end_at))
        await _until(start_at)
        before = await asyncio.to_thread(observe)
        await _until(end_at)
        after = await asyncio.to_thread(observe)
        wait = CALL_TIMEOUT_SECONDS + 30
        results = [await asyncio.to_thread(_receive, c.control, wait, "result") for c in clients]
    return [r for r in results if isinstance(r, ClientResult)], before, after


@dataclass(frozen=True)
class Ceiling(ClientTotals):
    """The transport's ceiling: the same load on the bare chain's no-logic server (role b)."""

    window: float
    clients: list[ClientResult]
    server_cpu_seconds: float | None


async def measure_ceiling(options: Options) -> Ceiling:
    """``options``' load (callers, client processes, events per call), for ``ceiling_seconds``, on one bare
    chain process that presents memory's certificate from a PKI of its own."""
    ceiling = replace(options, seconds=options.ceiling_seconds)
    with tempfile.TemporaryDirectory(prefix="techno-bench-ceiling-") as tmp:
        scratch = Path(tmp)
        tls = ensure_development_pki(scratch / "tls")
        port = free_port()
        async with bare_role("b", port, tls, scratch, calls={}) as server:
            plans = [replace(plan, bare=True) for plan in _plans(f"127.0.0.1:{port}", ceiling, tls)]
            clients, before, after = await _window(plans, ceiling, functools.partial(process_cpu_seconds, server.pid))
    cpu = after - before if after is not None and before is not None else None
    return Ceiling(ceiling.seconds, clients, cpu)


async def run_once(label: str, max_batch: int | None, options: Options) -> RunResult:
    with tempfile.TemporaryDirectory(prefix="techno-bench-audit-") as tmp:
        scratch = Path(tmp)
        log = scratch / "memory.log"
        tls = ensure_development_pki(scratch / "tls")
        extra = {
            "TECHNO_TLS_CERT_FILE": str(tls / f"{Identity.MEMORY}.crt"),
            "TECHNO_TLS_KEY_FILE": str(tls / f"{Identity.MEMORY}.key"),
            "TECHNO_TLS_CA_FILE": str(tls / "ca.crt"),
            **options.extra_env,
        }
        if max_batch is not None:
            extra["TECHNO_MEMORY_MAX_BATCH"] = str(max_batch)
        try:
            with database(options.sqlite, options.admin_url, scratch) as url:
                env = service_environment(url, extra)
                command = [sys.executable, "-m", "techno_memory"]
                status, output = await run_to_end([*command, "migrate"], env, log, START_TIMEOUT_SECONDS * 4)
                if status != 0:
                    raise BenchError(f"migrate failed with {status}: {output}")
                name = "" if options.sqlite else url.rpartition("/")[2]
                async with memory_service(env, log, admin_url=options.admin_url, database=name) as service:
                    clients, before, after = await measure(service, options, tls)
                    single = await measure_single(service, options, tls)
                verify_status, verify_output = await run_to_end([*command, "verify"], env, log, VERIFY_TIMEOUT_SECONDS)
        except Exception:  # not when interrupted: then the log says nothing of interest
            tail = log.read_text(errors="replace").splitlines()[-20:] if log.exists() else []
            if tail:
                print("\n".join(["memory's log (last lines):", *tail]), file=sys.stderr)
            raise
    return RunResult(
        label, options.seconds, after.at - before.at, clients, before, after, verify_status, verify_output, single
    )


async def measure_single(service: MemoryService, options: Options, tls_dir: Path) -> Phase | None:
    """One caller, one event per call, on the service the load just left idle."""
    if options.single_seconds <= 0:
        return None
    single = replace(options, concurrency=1, processes=1, events_per_call=1, seconds=options.single_seconds, warmup=1)
    idle_from = await asyncio.to_thread(snapshot, service)
    await asyncio.sleep(IDLE_SECONDS)
    idle_to = await asyncio.to_thread(snapshot, service)
    idle_cpu = None
    if idle_from.service_cpu is not None and idle_to.service_cpu is not None:
        idle_cpu = (idle_to.service_cpu - idle_from.service_cpu) / (idle_to.at - idle_from.at)
    clients, before, after = await measure(service, single, tls_dir)
    return Phase(single.seconds, clients, before, after, idle_cpu)


# --- the report -------------------------------------------------------------------------------------------------


def _percentile(sorted_samples: list[float], q: float) -> float:
    if not sorted_samples:
        return float("nan")
    return sorted_samples[min(len(sorted_samples) - 1, max(0, round(q * len(sorted_samples)) - 1))]


def _cpu_line(result: RunResult) -> str:
    window = result.scraped_seconds
    parts = []
    if result.before.service_cpu is not None and result.after.service_cpu is not None:
        parts.append(f"memory {100 * (result.after.service_cpu - result.before.service_cpu) / window:.0f}%")
    postgres = postgres_cpu_seconds(result.before, result.after)
    if postgres is not None:
        per_event = f" ({1e6 * postgres / result.events:,.0f} µs per append)" if result.events else ""
        parts.append(f"PostgreSQL backends {100 * postgres / window:.0f}%{per_event}")
    clients = ", ".join(f"{100 * c.cpu_seconds / result.window:.0f}%" for c in result.clients)
    parts.append(f"client process(es) {clients}")
    if result.before.machine_cpu is not None and result.after.machine_cpu is not None:
        busy = result.after.machine_cpu[0] - result.before.machine_cpu[0]
        total = result.after.machine_cpu[1] - result.before.machine_cpu[1]
        cores = os.cpu_count() or 1
        parts.append(f"whole machine {100 * busy / total if total else 0:.0f}% of {cores} cores")
    return "  CPU (100% = one core)  " + "   ".join(parts)


def report(result: RunResult) -> None:
    window = result.window
    latencies = sorted(x for c in result.clients for x in c.latencies_ms)
    transactions = result.delta(_BATCH_COUNT)
    batched = result.delta(_BATCH_SUM)
    mean_batch = batched / transactions if transactions else float("nan")
    print(f"{result.label}")
    print(
        f"  appends/s       {result.events / window:10,.0f}   ({result.events:,} events acknowledged in "
        f"{window:.2f}s; service counted {result.delta(_APPENDED):,.0f} stored)"
    )
    print(f"  calls/s         {result.calls / window:10,.0f}   ({result.calls:,} calls)")
    print(
        f"  call latency    p50 {_percentile(latencies, 0.50):7.2f} ms   p95 {_percentile(latencies, 0.95):7.2f} ms"
        f"   p99 {_percentile(latencies, 0.99):7.2f} ms"
    )
    print(
        f"  transactions/s  {transactions / result.scraped_seconds:10,.0f}   "
        f"mean group-commit batch {mean_batch:,.1f} events   failed transactions {result.delta(_FAILURES):,.0f}"
    )
    print(_cpu_line(result))
    if result.errors:
        print(f"  errors          {result.errors}")
    outcome = "ok" if result.verify_status == 0 else f"FAILED (exit {result.verify_status})"
    print(f"  verify          {outcome}: {result.verify_output}")
    if result.single is not None:
        report_single(result.single)


def report_single(phase: Phase) -> None:
    latencies = sorted(x for c in phase.clients for x in c.latencies_ms)
    cpu = phase.service_cpu_seconds()
    per_append = "n/a"
    if cpu is not None and phase.events:
        per_append = f"{1e6 * cpu / phase.events:,.0f} µs"
        if phase.idle_cpu is not None:  # less what the service spends with no calls at all
            net = cpu - phase.idle_cpu * phase.scraped_seconds
            per_append += f" ({1e6 * net / phase.events:,.0f} µs above idle, idle {100 * phase.idle_cpu:.1f}%)"
    postgres = postgres_cpu_seconds(phase.before, phase.after)
    if postgres is not None and phase.events:
        per_append += f", PostgreSQL {1e6 * postgres / phase.events:,.0f} µs"
    print(
        f"  one caller      {phase.events / phase.window:10,.0f} appends/s   p50 {_percentile(latencies, 0.50):6.2f} ms"
        f"   p99 {_percentile(latencies, 0.99):6.2f} ms   memory CPU per append {per_append}"
    )


def report_ceiling(ceiling: Ceiling, result: RunResult) -> None:
    latencies = sorted(x for c in ceiling.clients for x in c.latencies_ms)
    rate = ceiling.events / ceiling.window
    cpu = "n/a"
    if ceiling.server_cpu_seconds is not None and ceiling.calls:
        cpu = f"{1e6 * ceiling.server_cpu_seconds / ceiling.calls:,.0f} µs per call"
    print("transport ceiling: the same callers and request bytes over the same mTLS to one bare grpc.aio process")
    print("(bare_chain.py b: no logic, answers at once)")
    print(f"  events/s        {rate:10,.0f}   ({ceiling.calls:,} calls, {sum(ceiling.errors.values()):,} failed)")
    print(
        f"  call latency    p50 {_percentile(latencies, 0.50):7.2f} ms   p99 {_percentile(latencies, 0.99):7.2f} ms"
        f"   server CPU {cpu}"
    )
    if rate:
        print(f"  memory's durable appends/s are {result.events / result.window / rate:.2f} of the ceiling")


def verdict(result: RunResult, options: Options, ceiling: Ceiling | None = None) -> str:
    """P5: appends/s at the target, with the chain verified afterwards; where the ceiling was measured, how the
    target compares with it."""
    rate = result.events / result.window
    met = rate >= options.target and _ok(result)
    against = ""
    if ceiling is not None and ceiling.events:
        against = f", {options.target / (ceiling.events / ceiling.window):.1f}x the transport ceiling"
    return (
        f"P5 {'PASS' if met else 'MISS'}: {rate:,.0f} durable appends/s (target {options.target:,.0f}/s{against}), "
        + ("chain verified" if result.verify_status == 0 else "chain NOT verified")
    )


def _ok(result: RunResult) -> bool:
    single_errors = result.single is not None and any(c.errors for c in result.single.clients)
    return result.verify_status == 0 and not result.errors and not single_errors and result.events > 0


async def bench(options: Options, compare: bool) -> list[RunResult]:
    # SIGTERM (make or CI stopping us) unwinds like Ctrl-C: clients, service and database are cleaned up.
    task = asyncio.current_task()
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    results = [await run_once(f"group commit (max batch {_max_batch_label(options)})", None, options)]
    report(results[0])
    ceiling = await measure_ceiling(options) if options.ceiling_seconds > 0 else None
    if ceiling is not None:
        print()
        report_ceiling(ceiling, results[0])
    print(f"  {verdict(results[0], options, ceiling)}")
    if compare:
        print()
        single_off = replace(options, single_seconds=0)  # the idle case is the same without group commit
        results.append(await run_once("no group commit (TECHNO_MEMORY_MAX_BATCH=1)", 1, single_off))
        report(results[1])
        grouped, single = (r.events / r.window for r in results)
        print()
        print(f"group commit: {grouped / single:.1f}x the appends/s of one transaction per event")
    return results


def _max_batch_label(options: Options) -> str:
    default = MemorySettings.model_fields["memory_max_batch"].default
    return options.extra_env.get("TECHNO_MEMORY_MAX_BATCH", str(default))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--seconds", type=float, default=10, help="measured duration (default 10)")
    parser.add_argument("--warmup", type=float, default=2, help="unmeasured load before it (default 2)")
    parser.add_argument("--concurrency", type=int, default=64, help="concurrent callers in all (default 64)")
    parser.add_argument("--events-per-call", type=int, default=1, help="events per AppendAuditEvents (default 1)")
    parser.add_argument("--processes", type=int, default=1, help="client processes sharing the callers (default 1)")
    parser.add_argument("--sqlite", action="store_true", help="a temporary SQLite file instead of PostgreSQL")
    parser.add_argument("--compare", action="store_true", help="also run with TECHNO_MEMORY_MAX_BATCH=1")
    parser.add_argument(
        "--single-seconds", type=float, default=5, help="one-caller phase after the load (default 5; 0: none)"
    )
    parser.add_argument(
        "--ceiling-seconds",
        type=float,
        default=10,
        help="the same load on a bare grpc.aio process after the run, the transport's ceiling (default 10; 0: none)",
    )
    parser.add_argument(
        "--target", type=float, default=P5_APPENDS_PER_SECOND, help="appends/s for PASS (default 5000, P5)"
    )
    parser.add_argument("--postgres-admin-url", default=ADMIN_URL, help="where to create the throwaway database")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="extra environment for the service"
    )
    args = parser.parse_args()
    if args.seconds <= 0 or args.concurrency < 1 or args.processes < 1 or not 1 <= args.events_per_call <= 1000:
        parser.error("--seconds must be > 0, --concurrency and --processes >= 1, --events-per-call within 1..1000")
    options = Options(
        seconds=args.seconds,
        warmup=max(0.0, args.warmup),
        concurrency=args.concurrency,
        events_per_call=args.events_per_call,
        processes=args.processes,
        sqlite=args.sqlite,
        admin_url=args.postgres_admin_url,
        extra_env=dict(item.split("=", 1) for item in args.env),
        single_seconds=max(0.0, args.single_seconds),
        ceiling_seconds=max(0.0, args.ceiling_seconds),
        target=args.target,
    )
    try:
        backend = "SQLite (temporary file)" if options.sqlite else f"PostgreSQL ({postgres_durability(options)})"
        print(
            f"AppendAuditEvents on {backend}: {options.concurrency} concurrent callers in "
            f"{len(_plans('', options, Path()))} client process(es), {options.events_per_call} event(s) per call, "
            f"{options.seconds:g}s after {options.warmup:g}s warm-up\n",
            flush=True,
        )
        results = asyncio.run(bench(options, args.compare))
    except BenchError as error:
        sys.exit(f"bench-audit: {error}")
    except (asyncio.CancelledError, KeyboardInterrupt):
        sys.exit("bench-audit: stopped")
    if not all(_ok(result) for result in results):
        sys.exit("bench-audit: errors, no acknowledged events or a broken chain (see above)")


if __name__ == "__main__":
    main()
