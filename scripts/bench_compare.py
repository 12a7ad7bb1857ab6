"""``make bench-compare``: the whole stack against a bare chain of the same shape, side by side in one run.

Starts the four services (PostgreSQL: a fresh database, dropped afterwards; internal mutual TLS as shipped) and
the bare chain of ``bare_chain.py`` (uvicorn → grpc.aio A → B then C: the same libraries, loop, HTTP settings
and mTLS, no logic), then drives both with wrk at each concurrency, alternating between them so that whatever
else loads the machine weighs on both alike. It prints one table (requests/s, p50, p99, non-2xx and socket
errors, CPU µs per request of every process and their total, peak resident memory of every process during the
row) and the targets of issue #12 with PASS or MISS:

- P1: at c=64 the stack's throughput ≥ 85 % of the chain's, its p99 ≤ 1.2 times the chain's;
- P3: at c=1 the stack's p50 ≤ 5 ms and p99 ≤ 10 ms;
- P2 (``--provider-latency``): fake provider latency 200 ms (the chain's C waits as long); at c=150 ≥ 90 % of
  the ideal 750 requests/s and p99 ≤ 260 ms; at c=2,000 no errors (the edge's connection budget is raised to
  fit them: by default it sheds above 1,000 connections, on purpose);
- P4: peak RSS of every service ≤ 120 MiB over the whole run; ``--soak-minutes`` adds a long run at c=64, over
  which no service's resident size may grow by more than 5 % (its last tenth against its first).

``--floor`` adds a third system, the *floor*: the bare chain in the governed path's own shape (A calls B, C,
then B again, and B commits each call to PostgreSQL before answering; ``bare_chain.py``), still with no logic.
Its c=1 row is the least any implementation of the governed path on these libraries takes on this machine, so it
says whether P3's absolute bounds are reachable here; the stack's c=64 throughput is also shown against it.

P5, durable audit appends, is ``make bench-audit`` (scripts/bench_audit.py). docs/benchmarks.md explains how to
read the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import LUA
from bench_support import (
    POSTGRES_ADMIN_URL,
    add_stack_options,
    bare_role,
    bench_database,
    bench_stack,
    database_name,
    postgres_backends,
    postgres_database,
    process_cpu_seconds,
    raise_descriptor_limit,
    resident_mib,
    wrk,
)

from techno_stack.certs import ensure_development_pki
from techno_stack.stack import free_port

# The processes of each system in the table's column order; the chain's stand in for the stack's (http → edge,
# A → gate, C → executor, B → memory).
STACK_PROCESSES = ("edge", "gate", "executor", "memory")
CHAIN_PROCESSES = ("http", "a", "c", "b")
RSS_SAMPLE_SECONDS = 0.25
PROVIDER_LATENCY_MS = 200
P2_CONNECTIONS = (150, 2000)
EDGE_DEADLINE_SECONDS = 30.0  # TECHNO_EDGE_REQUEST_TIMEOUT_SECONDS's default

# The targets of issue #12.
P1_THROUGHPUT_RATIO = 0.85
P1_P99_RATIO = 1.2
P3_P50_MS = 5.0
P3_P99_MS = 10.0
P2_IDEAL_SHARE = 0.90
P2_P99_MS = 260.0
P4_RSS_MIB = 120.0
P4_SOAK_GROWTH = 0.05


@dataclass
class System:
    """One system under test, started: where wrk sends requests and the processes whose CPU and memory count."""

    name: str  # "stack", "chain" or "floor"
    url: str
    key: str
    pids: dict[str, int]  # column name → process id
    extra_pids: Callable[[], dict[str, int]] = dict  # processes that come and go (PostgreSQL backends)


@dataclass
class Row:
    system: str
    label: str  # "c=64", or "c=150 +200ms" with provider latency
    connections: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    errors: int  # connect, read, write and timeout errors of wrk's sockets
    error_kinds: dict[str, int]  # the non-2xx by status and the socket errors by kind, those that happened
    cpu_us: dict[str, float]  # per process (and "pg" for PostgreSQL's backends), µs per request
    rss_mib: dict[str, float]  # per process, the largest resident size sampled during the row
    round: int = 0  # which of ``--rounds`` (1…N) when there are several; 0 for a row measured once
    rss_growth: dict[str, float] = field(default_factory=dict)  # per process: last tenth's peak / first tenth's - 1

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_total_us(self) -> float:
        return sum(self.cpu_us.values())


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    peak_rss_mib: dict[str, float] = field(default_factory=dict)  # "stack edge" → VmHWM over its life
    rounds: int = 1  # ``--rounds``: how many times each concurrency was measured on both systems
    notes: list[str] = field(default_factory=list)

    def row(self, system: str, label: str) -> Row | None:
        return next((r for r in self.rows if r.system == system and r.label == label), None)

    def pairs(self, label: str, reference: str = "chain") -> list[tuple[Row, Row]]:
        """(reference, stack) rows of ``label`` measured in the same round, in round order."""
        references = {r.round: r for r in self.rows if r.system == reference and r.label == label}
        return [
            (references[r.round], r)
            for r in self.rows
            if r.system == "stack" and r.label == label and r.round in references
        ]


# --- the bare chain ---------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def bare_chain(
    tls_dir: Path, log_dir: Path, *, latency_ms: int = 0, floor_database: str = ""
) -> AsyncIterator[System]:
    """The four processes of the bare chain on free loopback ports, started leaves first; stopped front first, as
    the stack stops. With ``floor_database`` (a PostgreSQL URL) it is the floor, committing to that database,
    whose backends are its ``pg`` column."""
    name, durable, backends = "chain", "", _NO_BACKENDS
    if floor_database:
        name, durable = "floor", floor_database.replace("postgresql+psycopg://", "postgresql://", 1)
        backends = _backends_of(floor_database.rpartition("/")[2])
    ports = {role: free_port() for role in ("c", "b", "a", "http")}
    async with contextlib.AsyncExitStack() as started:
        pids = {}
        for role, port in ports.items():
            process = bare_role(
                role, port, tls_dir, log_dir, calls=ports, latency_ms=latency_ms, durable=durable, name=name
            )
            pids[role] = (await started.enter_async_context(process)).pid
        url = f"http://127.0.0.1:{ports['http']}"
        yield System(name, url, "", {role: pids[role] for role in CHAIN_PROCESSES}, backends)


_NO_BACKENDS: Callable[[], dict[str, int]] = dict  # a system without PostgreSQL: its pg column stays empty


def _backends_of(database: str) -> Callable[[], dict[str, int]]:
    """The PostgreSQL backends connected to ``database`` now, named for the ``pg`` column."""

    def backends() -> dict[str, int]:
        return {f"pg{pid}": pid for pid in postgres_backends(POSTGRES_ADMIN_URL, database)}

    return backends


# --- the stack ----------------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def full_stack(database_url: str, env: dict[str, str], pg_database: str) -> AsyncIterator[System]:
    async with bench_stack(database_url, env) as (stack, _):
        pids = {s.name: s.process.pid for s in stack.services if s.process is not None}
        backends = _backends_of(pg_database) if pg_database else _NO_BACKENDS
        key = stack.config.key_file.read_text().strip()
        yield System("stack", stack.edge_url, key, {name: pids[name] for name in STACK_PROCESSES}, backends)


# --- measuring ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    warmup_seconds: int
    seconds: int
    script: Path  # wrk's Lua script (bench.LUA)
    timeout_seconds: float = 10.0  # wrk counts a request unanswered for this long as a socket error


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    return {name: process_cpu_seconds(pid) for name, pid in pids.items()}


async def _sample_rss(
    pids: dict[str, int], peaks: dict[str, float], series: dict[str, list[float]], stop: asyncio.Event
) -> None:
    while not stop.is_set():
        for name, pid in pids.items():
            mib = resident_mib(pid)
            peaks[name] = max(peaks.get(name, 0.0), mib)
            series.setdefault(name, []).append(mib)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RSS_SAMPLE_SECONDS)


async def measure(system: System, connections: int, plan: Plan, label: str) -> Row:
    """Warm up at ``connections``, then one measured wrk run; CPU is every process's user + system time over the
    measured run divided by the requests it completed."""
    url = f"{system.url}/v1/process"
    if plan.warmup_seconds:
        await asyncio.to_thread(
            wrk, url, system.key, connections=connections, seconds=plan.warmup_seconds, script=plan.script
        )
    extra = system.extra_pids()
    before = _cpu(system.pids) | _cpu(extra)
    peaks: dict[str, float] = {}
    series: dict[str, list[float]] = {}
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample_rss(system.pids, peaks, series, stop))
    try:
        figures = await asyncio.to_thread(
            wrk,
            url,
            system.key,
            connections=connections,
            seconds=plan.seconds,
            script=plan.script,
            timeout_seconds=plan.timeout_seconds,
        )
    finally:
        stop.set()
        await sampler
    extra |= system.extra_pids()  # backends opened during the run started at 0 s of CPU
    after = _cpu(system.pids) | _cpu(extra)
    requests = int(figures["requests"])
    per_request = 1e6 / max(1, requests)
    cpu = {name: (after[name] - before[name]) * per_request for name in system.pids}
    if extra:
        cpu["pg"] = sum(after[name] - before.get(name, 0.0) for name in extra) * per_request
    return Row(
        system=system.name,
        label=label,
        connections=connections,
        requests=requests,
        seconds=figures["seconds"],
        p50_ms=figures["p50_ms"],
        p99_ms=figures["p99_ms"],
        non_2xx=int(figures["non_2xx"]),
        errors=int(figures["errors"]),
        error_kinds=_error_kinds(figures),
        cpu_us=cpu,
        rss_mib=peaks,
        rss_growth=rss_growth(series),
    )


def _error_kinds(figures: dict[str, float]) -> dict[str, int]:
    """The non-2xx answers by status (``HTTP 503``) and the socket errors by kind (``timeout``), those that
    happened."""
    statuses = {
        f"HTTP {name.removeprefix('status_')}": int(count)
        for name, count in figures.items()
        if name.startswith("status_") and count
    }
    sockets = {kind: int(figures.get(f"{kind}_errors", 0)) for kind in ("connect", "read", "write", "timeout")}
    return statuses | {kind: count for kind, count in sockets.items() if count}


def rss_growth(series: dict[str, list[float]]) -> dict[str, float]:
    """Per process, how much its resident size grew over the row: the peak of the last tenth of the samples
    against the peak of the first tenth (peaks of a stretch, so one sample taken mid-collection does not decide).
    P4's soak reads it; too few samples (a row shorter than ~5 s) give none."""
    growth = {}
    for name, samples in series.items():
        tenth = len(samples) // 10
        if tenth:
            growth[name] = max(samples[-tenth:]) / max(samples[:tenth]) - 1
    return growth


def record_peaks(results: Results, system: System, suffix: str = "") -> None:
    """Each process's peak resident size over its whole life (``VmHWM``), taken before it stops."""
    for name, pid in system.pids.items():
        results.peak_rss_mib[f"{system.name}{suffix} {name}"] = resident_mib(pid, "VmHWM")


async def run(options: argparse.Namespace, database_url: str, pg_database: str) -> Results:
    results = Results(rounds=options.rounds)
    env = {"TECHNO_LOG_LEVEL": "INFO", **dict(item.split("=", 1) for item in options.env)}
    plan = Plan(options.warmup, options.seconds, options.scratch / "process.lua")
    plan.script.write_text(LUA)
    async with full_stack(database_url, env, pg_database) as stack, contextlib.AsyncExitStack() as others:
        systems = [await others.enter_async_context(bare_chain(options.scratch / "tls", options.scratch))]
        if options.floor:
            floor_database = others.enter_context(postgres_database())
            floor = bare_chain(options.scratch / "tls", options.scratch, floor_database=floor_database)
            systems.append(await others.enter_async_context(floor))
        systems.append(stack)
        for connections in options.connections:
            for round_ in range(1, options.rounds + 1):
                for system in systems:
                    row = await measure(system, connections, plan, f"c={connections}")
                    row.round = round_ if options.rounds > 1 else 0
                    results.rows.append(row)
                    print_progress(row)
        if options.soak_minutes:
            soak = Plan(0, int(options.soak_minutes * 60), plan.script)
            results.rows.append(await measure(stack, 64, soak, f"soak {options.soak_minutes:g}min"))
            print_progress(results.rows[-1])
        for system in systems:
            record_peaks(results, system)
    if options.provider_latency:
        await run_provider_latency(options, database_url, pg_database, env, results)
    return results


async def run_provider_latency(
    options: argparse.Namespace, database_url: str, pg_database: str, env: dict[str, str], results: Results
) -> None:
    """P2: the fake provider (and the chain's C) answer after 200 ms; c=150 and c=2,000."""
    env = {
        **env,
        "TECHNO_FAKE_LATENCY_MS": str(PROVIDER_LATENCY_MS),
        # The edge sheds connections above its budget (1,000 by default); c=2,000 is meant to be served.
        "TECHNO_EDGE_MAX_CONNECTIONS": str(max(P2_CONNECTIONS) + 500),
    }
    budget = env["TECHNO_EDGE_MAX_CONNECTIONS"]
    results.notes.append(
        f"P2 rows: fake provider latency {PROVIDER_LATENCY_MS} ms, TECHNO_EDGE_MAX_CONNECTIONS={budget}"
    )
    script = options.scratch / "process.lua"
    # No warm-up at c=2,000: the c=150 row warmed both systems, and a warm-up's unanswered requests would still
    # be queued when the measured run starts. Each of its requests waits for ~2,000 others, so the row must last
    # several times that queue to count more than the first wave; and wrk waits as long as the edge's upstream
    # deadline, so a slow answer counts as an answer and only a refusal or a failure as an error.
    plans = {
        P2_CONNECTIONS[0]: Plan(2, options.p2_seconds, script),
        P2_CONNECTIONS[1]: Plan(0, options.p2_seconds, script, timeout_seconds=EDGE_DEADLINE_SECONDS),
    }
    async with full_stack(database_url, env, pg_database) as stack:
        async with bare_chain(options.scratch / "tls", options.scratch, latency_ms=PROVIDER_LATENCY_MS) as chain:
            for connections, plan in plans.items():
                for system in (chain, stack):
                    label = f"c={connections} +{PROVIDER_LATENCY_MS}ms"
                    results.rows.append(await measure(system, connections, plan, label))
                    print_progress(results.rows[-1])
            record_peaks(results, chain, " (P2)")
        record_peaks(results, stack, " (P2)")


# --- the report ---------------------------------------------------------------------------------------------------


def print_progress(row: Row) -> None:
    print(f"  … {row.system} {_label(row)}: {row.rate:,.0f} requests/s", file=sys.stderr, flush=True)


def _label(row: Row) -> str:
    """The row's load, with its round when it is one of several (``c=64 #2``)."""
    return f"{row.label} #{row.round}" if row.round else row.label


def print_table(results: Results) -> None:
    cpu_head = "".join(f"{name:>7}" for name in ("edge|h", "gate|A", "exec|C", "mem|B", "pg", "total"))
    rss_head = "".join(f"{name:>7}" for name in ("edge|h", "gate|A", "exec|C", "mem|B"))
    print()
    print(f"{'':<24}{'':>9}{'':>9}{'':>9}{'':>9}  {'CPU µs per request':<42}  peak RSS MiB during the row")
    print(f"{'system':<6} {'load':<17}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'non2xx/err':>11}{cpu_head}  {rss_head}")
    for row in results.rows:
        names = STACK_PROCESSES if row.system == "stack" else CHAIN_PROCESSES
        cpu = "".join(_cell(row.cpu_us.get(n), row) for n in (*names, "pg")) + _cell(row.cpu_total_us, row)
        rss = "".join(f"{row.rss_mib.get(n, 0.0):>7.1f}" for n in names)
        errors = f"{row.non_2xx}/{row.errors}"
        print(
            f"{row.system:<6} {_label(row):<17}{row.rate:>9,.0f}{_ms(row.p50_ms)}{_ms(row.p99_ms)}"
            f"{errors:>11}{cpu}  {rss}"
        )
    for row in results.rows:
        if row.error_kinds:
            kinds = ", ".join(f"{kind} {count:,}" for kind, count in row.error_kinds.items())
            print(f"  ({row.system} {_label(row)} errors: {kinds})")
    for note in results.notes:
        print(f"  ({note})")


def _ms(value: float) -> str:
    return f"{value:>9.2f}" if value < 1000 else f"{value:>9,.0f}"


def _cell(cpu_us: float | None, row: Row) -> str:
    """CPU per request, or "-" where there is none (no PostgreSQL in the chain, no request completed)."""
    return f"{'-':>7}" if cpu_us is None or not row.requests else f"{cpu_us:>7,.0f}"


@dataclass(frozen=True)
class Verdict:
    target: str
    figure: str
    bound: str
    passed: bool | None  # None: not measured in this run


def _median(values: list[float]) -> tuple[float, str]:
    """The median, and how it reads: ``0.56`` for one value, ``0.56 (0.51-0.57)`` for several (their range)."""
    middle = statistics.median(values)
    return middle, "" if len(values) == 1 else f" ({min(values):.2f}-{max(values):.2f})"


def verdicts(results: Results) -> list[Verdict]:
    """The targets, each from the median over the rounds (a ratio per round: the chain and the stack measured
    one after the other, so a slow spell of the machine weighs on both sides of it)."""
    out: list[Verdict] = []
    pairs = [(chain, stack) for chain, stack in results.pairs("c=64") if chain.rate and chain.p99_ms]
    if pairs:
        ratio, spread = _median([stack.rate / chain.rate for chain, stack in pairs])
        out.append(
            Verdict(
                "P1 c=64 throughput stack/chain",
                f"{ratio:.2f}{spread}",
                f"≥ {P1_THROUGHPUT_RATIO}",
                ratio >= P1_THROUGHPUT_RATIO,
            )
        )
        p99, spread = _median([stack.p99_ms / chain.p99_ms for chain, stack in pairs])
        out.append(Verdict("P1 c=64 p99 stack/chain", f"{p99:.2f}{spread}", f"≤ {P1_P99_RATIO}", p99 <= P1_P99_RATIO))
    else:
        out.append(Verdict("P1 c=64 stack/chain", "not measured", "", None))
    stack1 = [row for row in results.rows if row.system == "stack" and row.label == "c=1"]
    if stack1:
        p50, _ = _median([row.p50_ms for row in stack1])
        p99, _ = _median([row.p99_ms for row in stack1])
        out.append(Verdict("P3 c=1 p50", f"{p50:.2f} ms", f"≤ {P3_P50_MS:g} ms", p50 <= P3_P50_MS))
        out.append(Verdict("P3 c=1 p99", f"{p99:.2f} ms", f"≤ {P3_P99_MS:g} ms", p99 <= P3_P99_MS))
    out += _floor_verdicts(results)
    out += _p2_verdicts(results)
    rss = {name: mib for name, mib in results.peak_rss_mib.items() if name.startswith("stack")}
    if rss:
        name, mib = max(rss.items(), key=lambda item: item[1])
        out.append(Verdict(f"P4 peak RSS ({name})", f"{mib:.1f} MiB", f"≤ {P4_RSS_MIB:g} MiB", mib <= P4_RSS_MIB))
    out += _soak_verdicts(results)
    out.append(Verdict("P5 audit appends", "make bench-audit", "", None))
    return out


def _floor_verdicts(results: Results) -> list[Verdict]:
    """What the floor says (no PASS or MISS: it is a reference, not a target): its c=1 percentiles against P3's
    bounds (above them, P3 is out of reach on this machine for any implementation on these libraries), and the
    stack's c=64 throughput against it."""
    out = []
    floor1 = [row for row in results.rows if row.system == "floor" and row.label == "c=1"]
    if floor1:
        for name, bound, figures in (
            ("p50", P3_P50_MS, [row.p50_ms for row in floor1]),
            ("p99", P3_P99_MS, [row.p99_ms for row in floor1]),
        ):
            figure, _ = _median(figures)
            where = "within" if figure <= bound else "above"
            out.append(Verdict(f"floor c=1 {name} (no logic)", f"{figure:.2f} ms", f"{where} P3's {bound:g} ms", None))
    pairs = [(floor, stack) for floor, stack in results.pairs("c=64", "floor") if floor.rate]
    if pairs:
        ratio, spread = _median([stack.rate / floor.rate for floor, stack in pairs])
        out.append(Verdict("c=64 throughput stack/floor", f"{ratio:.2f}{spread}", "(reference)", None))
    return out


def _soak_verdicts(results: Results) -> list[Verdict]:
    soak = next((row for row in results.rows if row.label.startswith("soak")), None)
    if soak is None or not soak.rss_growth:
        return [Verdict("P4 soak RSS growth", "not measured", "--soak-minutes 10", None)]
    name, growth = max(soak.rss_growth.items(), key=lambda item: item[1])
    return [
        Verdict(
            f"P4 {soak.label} RSS growth ({name})",
            f"{growth:+.1%}",
            f"≤ {P4_SOAK_GROWTH:.0%}",
            growth <= P4_SOAK_GROWTH,
        )
    ]


def _p2_verdicts(results: Results) -> list[Verdict]:
    low, high = (results.row("stack", f"c={c} +{PROVIDER_LATENCY_MS}ms") for c in P2_CONNECTIONS)
    if low is None or high is None:
        return [Verdict("P2 provider latency 200 ms", "not measured", "--provider-latency", None)]
    ideal = P2_CONNECTIONS[0] / (PROVIDER_LATENCY_MS / 1000)
    share = low.rate / ideal
    failures = high.non_2xx + high.errors
    served = f"{failures} of {high.requests:,}"
    return [
        Verdict(
            f"P2 c={P2_CONNECTIONS[0]} throughput / ideal {ideal:.0f}",
            f"{share:.0%} ({low.rate:,.0f}/s)",
            f"≥ {P2_IDEAL_SHARE:.0%}",
            share >= P2_IDEAL_SHARE,
        ),
        Verdict(
            f"P2 c={P2_CONNECTIONS[0]} p99", f"{low.p99_ms:.1f} ms", f"≤ {P2_P99_MS:g} ms", low.p99_ms <= P2_P99_MS
        ),
        Verdict(f"P2 c={P2_CONNECTIONS[1]} errors", served, "= 0", failures == 0 and high.requests > 0),
    ]


def print_targets(results: Results) -> None:
    rounds = f", median of {results.rounds} rounds (their range)" if results.rounds > 1 else ""
    print(f"\ntargets (issue #12), from this run{rounds}")
    for v in verdicts(results):
        status = "" if v.passed is None else ("PASS" if v.passed else "MISS")
        print(f"  {v.target:<40}{v.figure:>18}  {v.bound:<18}{status}")
    peaks = "  ".join(f"{name} {mib:.0f}" for name, mib in results.peak_rss_mib.items())
    print(f"  peak RSS MiB over each process's life: {peaks}")


def as_json(results: Results, header: dict[str, object]) -> dict[str, object]:
    rows = [dataclasses.asdict(row) | {"rate": row.rate, "cpu_total_us": row.cpu_total_us} for row in results.rows]
    targets = [dataclasses.asdict(v) for v in verdicts(results)]
    return {**header, "rows": rows, "peak_rss_mib": results.peak_rss_mib, "targets": targets, "notes": results.notes}


# --- the command ------------------------------------------------------------------------------------------------


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--seconds", type=int, default=10, help="measured seconds per row (default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up seconds before each row (default 3)")
    parser.add_argument(
        "--connections", type=lambda text: [int(c) for c in text.split(",")], default=[1, 16, 64],
        help="concurrencies, comma-separated (default 1,16,64)",
    )  # fmt: skip
    parser.add_argument(
        "--rounds", type=int, default=1,
        help="measure each concurrency this many times, chain then stack each time; targets from the median",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="the CI smoke run: 1 s rows at c=1 and 16, no P2")
    parser.add_argument(
        "--provider-latency", action="store_true", help="add the P2 rows (fake provider 200 ms, c=150 and 2,000)"
    )
    parser.add_argument("--p2-seconds", type=int, default=15, help="measured seconds of each P2 row (default 15)")
    parser.add_argument("--soak-minutes", type=float, default=0, help="add a c=64 run this long (P4 soak)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file ('-': standard output)")
    parser.add_argument(
        "--floor", action="store_true",
        help="also measure the floor: the bare chain in the governed shape, committing to PostgreSQL",
    )  # fmt: skip
    add_stack_options(parser, default_database="a fresh PostgreSQL database, dropped afterwards")
    options = parser.parse_args(argv)
    if options.rounds < 1:
        parser.error("--rounds must be at least 1")
    if options.quick:
        options.seconds, options.warmup, options.connections, options.provider_latency = 1, 1, [1, 16], False
    return options


def main() -> None:
    options = parse()
    if shutil.which("wrk") is None:
        sys.exit("bench: wrk is required (make bench-compare installs it; or apt-get install wrk)")
    descriptors = raise_descriptor_limit()
    with bench_database(options.database_url) as (database_url, pg_database), contextlib.ExitStack() as scratch:
        options.scratch = Path(scratch.enter_context(tempfile.TemporaryDirectory(prefix="techno-compare-")))
        ensure_development_pki(options.scratch / "tls")
        header = {
            "database": database_name(database_url),
            "seconds": options.seconds,
            "warmup_seconds": options.warmup,
            "connections": options.connections,
            "rounds": options.rounds,
            "floor": options.floor,
            "open_files_limit": descriptors,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        print(
            f"POST /v1/process: the stack (edge → gate → memory + executor, {header['database']}, internal mTLS) "
            f"against the bare chain (uvicorn → A → B, C; mTLS)"
            + (" and the floor (A → B, C, B; B commits to PostgreSQL)" if options.floor else "")
            + f", {options.seconds} s per row after "
            f"{options.warmup} s warm-up, wrk -t1" + (f", {options.rounds} rounds" if options.rounds > 1 else "")
        )
        results = asyncio.run(run(options, database_url, pg_database))
    print_table(results)
    print_targets(results)
    if options.json is not None:
        document = json.dumps(as_json(results, header), indent=2)
        if str(options.json) == "-":
            print(document)
        else:
            options.json.write_text(document + "\n")


if __name__ == "__main__":
    main()
