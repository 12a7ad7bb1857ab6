"""``make bench-stream``: time to first token of ``POST /v1/process:stream`` (Server-Sent Events) through the stack.

Starts the four services (PostgreSQL: a fresh database, dropped afterwards; internal mutual TLS as shipped; the
fake provider streaming its answer in pieces of ``TECHNO_FAKE_STREAM_CHUNK_CHARS`` characters with
``--chunk-delay-ms`` between them), then opens chat streams from a separate client process (httpx, async, so the
load generator does not share the services' CPU accounting or event loops) at each concurrency: each worker opens
a stream, reads it to its ``done`` event, and opens the next. It prints, per concurrency, the streams completed
per second, the time to the first ``chunk`` event (p50, p99) and to the ``done`` event, the chunks per stream,
the streams that failed (a non-200 status, an ``error`` event, or no ``done``), and the services' CPU per stream.

The time to first token covers the whole governed path: the edge, the gate's checks and its decision committed
to memory, the executor and the provider's first piece. With ``--chunk-delay-ms 0`` (the default) it is all
Techno's own work, which is the figure to watch.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import multiprocessing
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
from bench_support import (
    add_stack_options,
    bench_database,
    bench_stack,
    cpu_seconds,
    database_name,
    service_pids,
)

MESSAGE = (
    "Techno governs every AI action. Each request is authenticated, checked against the policy, limited, and "
    "recorded before the model answers. The answer streams back piece by piece as the model writes it."
)
STREAM_TIMEOUT_SECONDS = 30.0  # the edge's default deadline


# --- the client: runs in its own process -------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientPlan:
    url: str
    key: str
    connections: int
    seconds: float


@dataclass
class ClientResult:
    ttft_ms: list[float] = field(default_factory=list)  # request sent → first chunk event
    total_ms: list[float] = field(default_factory=list)  # request sent → done event
    chunks: list[int] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)  # what went wrong → streams
    seconds: float = 0.0


async def _one_stream(client: httpx.AsyncClient, plan: ClientPlan, result: ClientResult) -> None:
    body = {"action": "chat", "contextId": "bench", "payload": {"message": MESSAGE}}
    headers = {"X-API-Key": plan.key, "Accept": "text/event-stream"}
    start = time.perf_counter()
    first: float | None = None
    chunks = 0
    event = ""
    async with client.stream("POST", plan.url, json=body, headers=headers) as response:
        if response.status_code != 200:
            await response.aread()
            result.failures[f"HTTP {response.status_code}"] += 1
            return
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                event = line.removeprefix("event:").strip()
            elif line.startswith("data:") and event == "chunk":
                chunks += 1
                first = first if first is not None else time.perf_counter()
            elif line.startswith("data:") and event == "error":
                result.failures["error event"] += 1
                return
            elif line.startswith("data:") and event == "done":
                done = time.perf_counter()
                result.total_ms.append((done - start) * 1000)
                result.ttft_ms.append(((first or done) - start) * 1000)
                result.chunks.append(chunks)
                return
    result.failures["no done event"] += 1


async def _drive(plan: ClientPlan) -> ClientResult:
    result = ClientResult()
    limits = httpx.Limits(max_connections=plan.connections, max_keepalive_connections=plan.connections)
    timeout = httpx.Timeout(STREAM_TIMEOUT_SECONDS)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        started = time.perf_counter()
        stop_at = started + plan.seconds

        async def worker() -> None:
            while time.perf_counter() < stop_at:
                try:
                    await _one_stream(client, plan, result)
                except httpx.HTTPError as error:
                    result.failures[type(error).__name__] += 1

        await asyncio.gather(*(worker() for _ in range(plan.connections)))
        result.seconds = time.perf_counter() - started
    return result


def client_main(plan: ClientPlan) -> ClientResult:
    """The entry point of the client process."""
    return asyncio.run(_drive(plan))


# --- the run -----------------------------------------------------------------------------------------------------


@dataclass
class Row:
    connections: int
    result: ClientResult
    cpu_us_per_stream: float


def _percentile(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[round(q * 100) - 1]


async def run(options: argparse.Namespace, database_url: str) -> list[Row]:
    env = {
        "TECHNO_LOG_LEVEL": "INFO",
        "TECHNO_FAKE_STREAM_CHUNK_DELAY_MS": str(options.chunk_delay_ms),
        **dict(item.split("=", 1) for item in options.env),
    }
    rows = []
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        loop = asyncio.get_running_loop()
        async with bench_stack(database_url, env) as (stack, _):
            key = stack.config.key_file.read_text().strip()
            url = f"{stack.edge_url}/v1/process:stream"
            pids = service_pids(stack)
            for connections in options.connections:
                warmup = ClientPlan(url, key, connections, options.warmup)
                await loop.run_in_executor(pool, client_main, warmup)
                before = cpu_seconds(pids)
                result = await loop.run_in_executor(
                    pool, client_main, ClientPlan(url, key, connections, options.seconds)
                )
                streams = max(1, len(result.total_ms))
                rows.append(Row(connections, result, (cpu_seconds(pids) - before) * 1e6 / streams))
    return rows


def report(rows: list[Row]) -> None:
    print(
        f"{'streams':>9}{'streams/s':>11}{'TTFT p50':>10}{'TTFT p99':>10}{'total p50':>11}{'total p99':>11}"
        f"{'chunks':>8}{'failed':>8}{'CPU µs/stream':>15}"
    )
    for row in rows:
        r = row.result
        rate = len(r.total_ms) / r.seconds if r.seconds else 0.0
        chunks = statistics.mean(r.chunks) if r.chunks else 0.0
        print(
            f"{'c=' + str(row.connections):>9}{rate:>11,.1f}{_percentile(r.ttft_ms, 0.5):>8.1f}ms"
            f"{_percentile(r.ttft_ms, 0.99):>8.1f}ms{_percentile(r.total_ms, 0.5):>9.1f}ms"
            f"{_percentile(r.total_ms, 0.99):>9.1f}ms{chunks:>8.1f}{sum(r.failures.values()):>8}"
            f"{row.cpu_us_per_stream:>15,.0f}"
        )
        for what, count in r.failures.most_common():
            print(f"{'':>9}  {count} failed: {what}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument(
        "--connections", type=lambda text: [int(c) for c in text.split(",")], default=[1, 64],
        help="concurrent streams, comma-separated (default 1,64)",
    )  # fmt: skip
    parser.add_argument("--seconds", type=float, default=10, help="measured seconds per concurrency (default 10)")
    parser.add_argument("--warmup", type=float, default=3, help="warm-up seconds per concurrency (default 3)")
    parser.add_argument("--chunk-delay-ms", type=int, default=0, help="the fake provider's pause between pieces")
    add_stack_options(parser, default_database="a fresh PostgreSQL database, dropped afterwards")
    options = parser.parse_args()
    with bench_database(options.database_url) as (database_url, _):
        print(
            f"POST /v1/process:stream (chat, SSE) through edge → gate → memory + executor, "
            f"{database_name(database_url)}, internal mTLS, {options.seconds:g} s per row after {options.warmup:g} s "
            f"warm-up, fake provider pieces {options.chunk_delay_ms} ms apart; client: httpx in its own process",
            flush=True,
        )
        rows = asyncio.run(run(options, database_url))
    report(rows)
    if any(row.result.failures or not row.result.total_ms for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
