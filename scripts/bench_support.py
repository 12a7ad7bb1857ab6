"""What the benchmarks share: the whole stack on free loopback ports, with a policy whose limits never bind,
and the command-line options that choose its database and environment."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
from bare_chain import CALLS
from bare_chain import identity_channel as identity_channel  # the benchmarks' mTLS channel, made in one place

from techno_stack.stack import Ports, Stack, StackConfig, open_log, terminate

POLICY = Path(__file__).with_name("bench_policy.yaml")
POSTGRES_ADMIN_URL = os.environ.get("TECHNO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
CHAIN = Path(__file__).with_name("bare_chain.py")
READY_TIMEOUT_SECONDS = 30.0


def add_stack_options(parser: argparse.ArgumentParser, *, default_database: str = "SQLite in a temp dir") -> None:
    parser.add_argument("--database-url", default="", help=f"memory's database (default: {default_database})")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="extra environment for every service"
    )


def database_name(url: str) -> str:
    return url.split("://", 1)[0] if url else "sqlite"


@contextlib.asynccontextmanager
async def bench_stack(database_url: str, extra_env: dict[str, str]) -> AsyncIterator[tuple[Stack, Path]]:
    """The started stack and a scratch directory; stopped and removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="techno-bench-") as tmp:
        env = {"TECHNO_GATE_POLICY_FILE": str(POLICY), **extra_env}
        config = StackConfig(state_dir=Path(tmp), ports=Ports.free(), database_url=database_url, extra_env=env)
        stack = Stack(config)
        await stack.start()
        try:
            yield stack, Path(tmp)
        finally:
            await stack.stop()


def wrk(
    url: str, key: str, *, connections: int, seconds: int, script: Path, timeout_seconds: float = 10.0
) -> dict[str, float]:
    """One wrk run (one thread) with the Lua ``script`` that prints its figures as a ``BENCH {json}`` line
    (``bench.LUA``); ``key`` is sent as the API key. A request unanswered after ``timeout_seconds`` counts as a
    socket error."""
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        f"{timeout_seconds:g}s",
        "-s",
        str(script),
    ]
    finished = subprocess.run(
        [*command, url], capture_output=True, text=True, env={"TECHNO_BENCH_KEY": key}, check=True
    )
    line = next(x for x in finished.stderr.splitlines() if x.startswith("BENCH "))
    figures: dict[str, float] = json.loads(line.removeprefix("BENCH "))
    figures.update(_socket_errors(finished.stdout))
    return figures


def _socket_errors(report: str) -> dict[str, float]:
    """The kinds of wrk's socket errors, from its report line ``Socket errors: connect 0, read 3, write 0, timeout
    7`` (absent when there were none): ``connect_errors``, ``read_errors``, ``write_errors``, ``timeout_errors``."""
    kinds = {"connect": 0.0, "read": 0.0, "write": 0.0, "timeout": 0.0}
    for line in report.splitlines():
        if line.strip().startswith("Socket errors:"):
            for part in line.split(":", 1)[1].split(","):
                kind, count = part.split()
                kinds[kind] = float(count)
    return {f"{kind}_errors": count for kind, count in kinds.items()}


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time so far of the processes ``pids`` (Linux ``/proc/<pid>/stat``), in seconds."""
    return sum(process_cpu_seconds(pid) for pid in pids)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of one process, in seconds; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15 of stat(5))


def resident_mib(pid: int, field: str = "VmRSS") -> float:
    """A memory figure of ``/proc/<pid>/status`` in MiB: ``VmRSS`` (resident now) or ``VmHWM`` (its peak so
    far); 0 if the process is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except FileNotFoundError:
        return 0.0
    for line in lines:
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024  # kB
    return 0.0


def raise_descriptor_limit() -> int:
    """The soft limit of open files raised to the hard one (wrk at thousands of connections, and the servers it
    starts, inherit it); returns the new soft limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


@contextlib.contextmanager
def postgres_database(admin_url: str = POSTGRES_ADMIN_URL) -> Iterator[str]:
    """A fresh, empty PostgreSQL database as a ``postgresql+psycopg://`` URL (its name is the URL's last part);
    dropped afterwards."""
    name = f"techno_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as error:
        raise SystemExit(f"bench: PostgreSQL is required at {admin_url}: {error}") from error
    try:
        yield f"{admin_url.rpartition('/')[0]}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def bench_database(database_url: str) -> Iterator[tuple[str, str]]:
    """The memory's database: ``database_url`` if given, else a fresh PostgreSQL one made for the run. Yields
    its URL and, when made here, its name (whose backends the benchmarks count)."""
    if database_url:
        yield database_url, ""
        return
    with postgres_database() as url:
        yield url, url.rpartition("/")[2]


def postgres_backends(admin_url: str, database: str) -> list[int]:
    """The process ids of the PostgreSQL backends connected to ``database`` (the memory service's pool)."""
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
        rows = admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,)).fetchall()
    return [int(row[0]) for row in rows]


def service_pids(stack: Stack) -> list[int]:
    return [service.process.pid for service in stack.services if service.process is not None]


@contextlib.asynccontextmanager
async def bare_role(
    role: str,
    port: int,
    tls_dir: Path,
    log_dir: Path,
    *,
    calls: dict[str, int],
    latency_ms: int = 0,
    durable: str = "",
    name: str = "chain",
) -> AsyncIterator[asyncio.subprocess.Process]:
    """One process of the bare chain (``bare_chain.py``) serving ``role`` on ``port`` once it says READY; it calls
    the roles it calls (``CALLS``) on their ports in ``calls``. With ``durable`` (a database URL) it is the floor:
    ``a`` calls in the governed shape and ``b`` commits to that database. Its stderr goes to
    ``log_dir/<name>-<role>.log``. Stopped (SIGTERM) afterwards."""
    command = [sys.executable, str(CHAIN), role, "--port", str(port), "--tls-dir", str(tls_dir)]
    command += [arg for callee in CALLS[role] for arg in ("--call", f"127.0.0.1:{calls[callee]}")]
    if role == "c":
        command += ["--latency-ms", str(latency_ms)]
    if durable and role == "a":
        command.append("--governed")
    if durable and role == "b":
        command += ["--durable", durable]
    log_path = log_dir / f"{name}-{role}.log"
    with open_log(log_path) as log:
        process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE, stderr=log)
    try:
        await _ready(process, log_path)
        yield process
    finally:
        await terminate(process, 5.0)


async def _ready(process: asyncio.subprocess.Process, log_path: Path) -> None:
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), READY_TIMEOUT_SECONDS)
    except TimeoutError:
        line = b""
    if line.strip() != b"READY":  # the scratch directory goes at the end of the run: show the log's end now
        raise SystemExit(f"bench: {log_path.stem} did not start; its log ends:\n{_tail(log_path)}")


def _tail(path: Path, characters: int = 2000) -> str:
    return path.read_text(errors="replace")[-characters:]
