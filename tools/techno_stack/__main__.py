"""``python -m techno_stack``: start the whole gateway on embedded defaults, with Prometheus, Alertmanager and
an alert receiver next to it when they are installed; print how to call it, and stop everything cleanly on
Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from techno_stack.observability import INSTALL_HINT, Observability, missing_binaries
from techno_stack.stack import Ports, Stack, StackConfig, StackError


def _monitoring_lines(observability: Observability | None) -> str:
    if observability is None:
        return ""
    log_dir = observability.stack.log_dir
    return f"""  Prometheus    {observability.prometheus_url}      (alerts: {observability.prometheus_url}/alerts)
  Alertmanager  {observability.alertmanager_url}
  alerts        delivered to {observability.webhook_url}, logged in {log_dir}/alert-receiver.log
"""


def _banner(stack: Stack, observability: Observability | None) -> str:
    p = stack.config.ports
    return f"""
Techno is running (SQLite at {stack.env["TECHNO_MEMORY_DATABASE_URL"]}, fake provider).
  REST edge     {stack.edge_url}      (OpenAPI: {stack.edge_url}/openapi.json, metrics: {stack.edge_url}/metrics)
  gRPC gate     127.0.0.1:{p.gate}     metrics http://127.0.0.1:{p.gate_metrics}/metrics
  executor      127.0.0.1:{p.executor}     metrics http://127.0.0.1:{p.executor_metrics}/metrics
  memory        127.0.0.1:{p.memory}     metrics http://127.0.0.1:{p.memory_metrics}/metrics
{_monitoring_lines(observability)}  logs          {stack.config.log_dir}/
  API key       saved in {stack.config.key_file}
  mutual TLS    every gRPC port requires a client certificate of the development CA in {stack.config.tls_dir}/
                (health only, plaintext: 127.0.0.1:{p.gate_health}, :{p.executor_health}, :{p.memory_health})

Try it:
  curl -s {stack.edge_url}/v1/process \\
    -H "X-API-Key: $(cat {stack.config.key_file})" -H 'Content-Type: application/json' \\
    -d '{{"action": "summarize", "contextId": "demo", "payload": {{"text": "Techno governs every AI action."}}}}'

Press Ctrl-C to stop.
"""


async def _start_monitoring(config: StackConfig) -> Observability | None:
    """Prometheus, Alertmanager and the alert receiver when installed; the stack runs without them otherwise."""
    missing = missing_binaries()
    if missing:
        print(f"note: {', '.join(missing)} not installed, so no Prometheus/Alertmanager ({INSTALL_HINT})")
        return None
    observability = Observability(config)
    try:
        await observability.start()
    except StackError as error:
        print(f"note: running without Prometheus and Alertmanager: {error}", file=sys.stderr)
        return None
    return observability


async def _serve(config: StackConfig, *, monitoring: bool) -> int:
    stack = Stack(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stack.start()
    except StackError as error:
        print(f"techno: {error}", file=sys.stderr)
        return 1
    observability = await _start_monitoring(config) if monitoring else None
    print(_banner(stack, observability), flush=True)
    while not stop.is_set():
        with_exit = stack.exited() + (observability.exited() if observability else [])
        if with_exit:
            print(f"techno: {', '.join(with_exit)} exited; stopping (see {config.log_dir})", file=sys.stderr)
            break
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except TimeoutError:
            continue
    print("stopping…", flush=True)
    if observability is not None:
        await observability.stop()
    await stack.stop()
    print("stopped.")
    return 0 if stop.is_set() else 1


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m techno_stack", description=__doc__)
    parser.add_argument("--edge-port", type=int, default=8080)
    parser.add_argument(
        "--no-monitoring",
        action="store_true",
        help="do not start Prometheus (9090), Alertmanager (9093) and the alert receiver (9095)",
    )
    args = parser.parse_args()
    config = StackConfig(ports=Ports(edge=args.edge_port))
    sys.exit(asyncio.run(_serve(config, monitoring=not args.no_monitoring)))


if __name__ == "__main__":
    main()
