"""``make bench``: requests/s, latency percentiles and CPU per request of POST /v1/process through the stack.

Starts the four services (fake provider, no added latency, SQLite in a temporary directory) on free loopback
ports, warms up, then drives the edge with wrk at a fixed concurrency and prints the figures. wrk is used
because a Python load generator would take the CPU it is trying to measure on a 2-core machine. CPU per request
is the four services' user + system time over the measured run, divided by the requests.

``--compare-tls`` (``make bench-tls``) runs the same benchmark twice in one go, internal hops on mutual TLS (as
shipped) and on the loopback plaintext opt-out, and prints the cost of mTLS per request.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys

from bench_support import add_stack_options, bench_stack, cpu_seconds, database_name, service_pids, wrk

LUA = r"""
wrk.method = "POST"
wrk.body = '{"action": "summarize", "contextId": "bench", "payload": {"text": "Techno governs every AI action."}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = os.getenv("TECHNO_BENCH_KEY")
-- Answers by status, counted in the thread that got them and summed in done() (which runs apart from them).
local threads = {}
setup = function(thread)
  table.insert(threads, thread)
end
statuses = {}
response = function(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
done = function(summary, latency, requests)
  local out = string.format(
    '{"requests": %d, "seconds": %.3f, "errors": %d, "p50_ms": %.2f, "p95_ms": %.2f, "p99_ms": %.2f, '
      .. '"max_ms": %.2f, "non_2xx": %d',
    summary.requests, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, summary.errors.status)
  local counts = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      counts[status] = (counts[status] or 0) + count
    end
  end
  for status, count in pairs(counts) do
    if status < 200 or status > 299 then  -- the non-2xx answers by status: "status_503": 2
      out = out .. string.format(', "status_%d": %d', status, count)
    end
  end
  io.stderr:write("BENCH " .. out .. "}\n")
end
"""


async def _bench(connections: int, seconds: int, extra_env: dict[str, str], database_url: str) -> dict[str, float]:
    async with bench_stack(database_url, extra_env) as (stack, scratch):
        key = stack.config.key_file.read_text().strip()
        script = scratch / "process.lua"
        script.write_text(LUA)
        url = f"{stack.edge_url}/v1/process"
        await asyncio.to_thread(wrk, url, key, connections=connections, seconds=3, script=script)  # warm-up
        pids = service_pids(stack)
        cpu_before = cpu_seconds(pids)
        figures = await asyncio.to_thread(wrk, url, key, connections=connections, seconds=seconds, script=script)
        figures["cpu_us_per_request"] = (cpu_seconds(pids) - cpu_before) * 1e6 / max(1.0, figures["requests"])
        return figures


def _report(label: str, figures: dict[str, float]) -> None:
    rate = figures["requests"] / figures["seconds"]
    print(
        f"  {label:<10} requests/s {rate:>7,.0f}   p50 {figures['p50_ms']:6.2f} ms   p95 {figures['p95_ms']:6.2f} ms   "
        f"p99 {figures['p99_ms']:6.2f} ms   CPU {figures['cpu_us_per_request']:6,.0f} µs/request   "
        f"({figures['requests']:.0f} requests, {figures['non_2xx']:.0f} non-2xx, {figures['errors']:.0f} socket errors)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections (default 32)")
    parser.add_argument("--seconds", type=int, default=15, help="measured duration (default 15)")
    parser.add_argument("--fake-latency-ms", type=int, default=0, help="latency of the fake provider")
    parser.add_argument(
        "--compare-tls", action="store_true", help="run twice: internal mTLS (as shipped), then plaintext on loopback"
    )
    add_stack_options(parser)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench: wrk is required (apt-get install wrk)")
    env = {"TECHNO_FAKE_LATENCY_MS": str(args.fake_latency_ms), "TECHNO_LOG_LEVEL": "INFO"}
    env.update(item.split("=", 1) for item in args.env)
    print(
        f"POST /v1/process through edge → gate → memory + executor, {args.connections} connections, "
        f"{args.seconds}s, {database_name(args.database_url)}, fake provider latency {args.fake_latency_ms} ms"
    )
    mtls = asyncio.run(_bench(args.connections, args.seconds, env, args.database_url))
    _report("mTLS", mtls)
    if args.compare_tls:
        plain = asyncio.run(
            _bench(args.connections, args.seconds, {**env, "TECHNO_INSECURE_PLAINTEXT": "true"}, args.database_url)
        )
        _report("plaintext", plain)
        extra = mtls["cpu_us_per_request"] - plain["cpu_us_per_request"]
        share = extra / plain["cpu_us_per_request"] if plain["cpu_us_per_request"] else 0.0
        rates = (mtls["requests"] / mtls["seconds"]) / (plain["requests"] / plain["seconds"])
        print(
            f"  mTLS costs {extra:,.0f} µs of CPU per request ({share:+.1%}); "
            f"throughput ratio mTLS/plaintext {rates:.2f}"
        )


if __name__ == "__main__":
    main()
