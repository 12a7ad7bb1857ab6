"""``python -m techno_stack``: start the whole gateway on embedded defaults, print how to call it, and stop
everything cleanly on Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from techno_stack.stack import Ports, Stack, StackConfig, StackError


def _banner(stack: Stack) -> str:
    p = stack.config.ports
    return f"""
Techno is running (SQLite at {stack.env["TECHNO_MEMORY_DATABASE_URL"]}, fake provider).
  REST edge     {stack.edge_url}      (OpenAPI: {stack.edge_url}/openapi.json, metrics: {stack.edge_url}/metrics)
  gRPC gate     127.0.0.1:{p.gate}     metrics http://127.0.0.1:{p.gate_metrics}/metrics
  executor      127.0.0.1:{p.executor}     metrics http://127.0.0.1:{p.executor_metrics}/metrics
  memory        127.0.0.1:{p.memory}     metrics http://127.0.0.1:{p.memory_metrics}/metrics
  logs          {stack.config.log_dir}/
  API key       saved in {stack.config.key_file}

Try it:
  curl -s {stack.edge_url}/v1/process \\
    -H "X-API-Key: $(cat {stack.config.key_file})" -H 'Content-Type: application/json' \\
    -d '{{"action": "summarize", "contextId": "demo", "payload": {{"text": "Techno governs every AI action."}}}}'

Press Ctrl-C to stop.
"""


async def _serve(config: StackConfig) -> int:
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
    print(_banner(stack), flush=True)
    while not stop.is_set():
        with_exit = stack.exited()
        if with_exit:
            print(f"techno: {', '.join(with_exit)} exited; stopping (see {config.log_dir})", file=sys.stderr)
            break
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except TimeoutError:
            continue
    print("stopping…", flush=True)
    await stack.stop()
    print("stopped.")
    return 0 if stop.is_set() else 1


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m techno_stack", description=__doc__)
    parser.add_argument("--edge-port", type=int, default=8080)
    args = parser.parse_args()
    sys.exit(asyncio.run(_serve(StackConfig(ports=Ports(edge=args.edge_port)))))


if __name__ == "__main__":
    main()
