"""``make bench-gate``: what the gate adds to a request (authentication, validation, policy, limits, the two
audit writes), as latency percentiles.

Starts the stack on free loopback ports, then sends the same summarize request with one gRPC client at a fixed
concurrency twice: straight to the executor, and through the gate. The difference of the two distributions'
percentiles is the gate's overhead (the client and executor costs are the same in both).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from bench_support import add_stack_options, bench_stack, database_name, identity_channel
from google.protobuf import struct_pb2

from techno.executor.v1 import executor_pb2, executor_pb2_grpc
from techno.gate.v1 import gate_pb2, gate_pb2_grpc
from techno_core.identity import Identity


def _percentile(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=1000, method="inclusive")[round(q * 1000) - 1]


async def _drive(call: Callable[[], Awaitable[object]], *, requests: int, concurrency: int) -> list[float]:
    latencies: list[float] = []
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            start = time.perf_counter()
            await call()
            latencies.append((time.perf_counter() - start) * 1000)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


async def _bench(
    requests: int, concurrency: int, database_url: str, extra_env: dict[str, str]
) -> dict[str, list[float]]:
    payload = struct_pb2.Struct()
    payload.update({"text": "Techno governs every AI action."})
    async with bench_stack(database_url, extra_env) as (stack, _):
        key = stack.config.key_file.read_text().strip()
        ports, tls = stack.config.ports, stack.config.tls_dir
        # Mutual TLS, as the hops run: the executor called as the gate calls it, the gate as the edge does.
        async with (
            identity_channel(
                tls, f"127.0.0.1:{ports.executor}", server=Identity.EXECUTOR, as_=Identity.GATE
            ) as executor_channel,
            identity_channel(tls, f"127.0.0.1:{ports.gate}", server=Identity.GATE, as_=Identity.EDGE) as gate_channel,
        ):
            executor = executor_pb2_grpc.ExecutorServiceStub(executor_channel)
            gate = gate_pb2_grpc.GateServiceStub(gate_channel)
            execute = executor_pb2.ExecuteRequest(action="summarize", context_id="bench", payload=payload)
            process = gate_pb2.ProcessRequest(action="summarize", context_id="bench", payload=payload)

            async def direct() -> object:
                return await executor.Execute(execute, timeout=10)

            async def governed() -> object:
                return await gate.Process(process, metadata=[("x-api-key", key)], timeout=10)

            results = {}
            for name, call in (("executor", direct), ("gate", governed)):
                await _drive(call, requests=requests // 5, concurrency=concurrency)  # warm-up
                results[name] = await _drive(call, requests=requests, concurrency=concurrency)
            return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=1)
    add_stack_options(parser)
    args = parser.parse_args()
    extra_env = dict(item.split("=", 1) for item in args.env)
    results = asyncio.run(_bench(args.requests, args.concurrency, args.database_url, extra_env))
    database = database_name(args.database_url)
    print(f"{args.requests} Process requests, concurrency {args.concurrency}, {database}, fake provider")
    figures = {name: (_percentile(s, 0.5), _percentile(s, 0.99)) for name, s in results.items()}
    for name, (p50, p99) in figures.items():
        print(f"  {name:9s} p50 {p50:6.2f} ms   p99 {p99:6.2f} ms")
    overhead = [g - e for g, e in zip(figures["gate"], figures["executor"], strict=True)]
    print(f"  gate adds p50 {overhead[0]:6.2f} ms   p99 {overhead[1]:6.2f} ms")


if __name__ == "__main__":
    main()
