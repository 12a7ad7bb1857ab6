"""The server's interceptor chain alone: CPU time per unary call of a real grpc.aio server over mutual TLS.

A child process serves the executor's ``Execute`` through ``techno_core.server.GrpcApp`` (so with the chain
the services run: trace context not recorded, metrics, authorization, error mapping) from a servicer that answers
at once; this process calls it as the gate over loopback, from ``--concurrency`` tasks, and reads the child's CPU
time (``/proc``) around ``--calls`` calls. ``--bare`` serves with no interceptors at all: the difference is what
the chain costs. To compare two versions of ``techno_core``, run it with ``--core`` naming the other's ``core``
directory (it goes first on the child's ``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench_support import identity_channel, process_cpu_seconds

from techno.executor.v1 import executor_pb2, executor_pb2_grpc
from techno_core.identity import Identity
from techno_stack.certs import ensure_development_pki

ROOT = Path(__file__).resolve().parent.parent


class Answering(executor_pb2_grpc.ExecutorServiceServicer):
    async def Execute(self, request: executor_pb2.ExecuteRequest, context: Any) -> executor_pb2.ExecuteResponse:
        return executor_pb2.ExecuteResponse(executor_id="x", provider="fake")


async def serve(tls_dir: Path, bare: bool) -> None:
    import grpc
    from opentelemetry.sdk.trace import TracerProvider
    from prometheus_client import CollectorRegistry

    import techno_core
    from techno_core import tracing
    from techno_core.authorization import callers
    from techno_core.server import Endpoint, GrpcApp, ServerOptions, ServiceDefinition
    from techno_core.tls import CertificateFiles
    from techno_core.transport import Transport

    service = "techno.executor.v1.ExecutorService"
    definition = ServiceDefinition(
        name="bench",
        registrations=[lambda server: executor_pb2_grpc.add_ExecutorServiceServicer_to_server(Answering(), server)],
        service_names=[service],
        callers=callers({"Execute": frozenset({Identity.GATE})}, service),
    )
    files = CertificateFiles(tls_dir / "executor.crt", tls_dir / "executor.key", tls_dir / "ca.crt")
    options = ServerOptions(Transport(files))
    app = GrpcApp(
        definition,
        Endpoint("127.0.0.1", 0, 0),
        TracerProvider(sampler=tracing.NOT_RECORDING),
        CollectorRegistry(),
        options,
    )
    if bare:
        app._grpc_server = lambda: grpc.aio.server(options=options.grpc_options())  # type: ignore[method-assign]
    await app.start()
    print(app.port, techno_core.__file__, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # until the parent is done
    await app.stop()


async def drive(tls_dir: Path, port: int, pid: int, calls: int, concurrency: int) -> float:
    """CPU µs of the server per call over ``calls`` calls (after a warm-up)."""
    async with identity_channel(tls_dir, f"127.0.0.1:{port}", server=Identity.EXECUTOR, as_=Identity.GATE) as channel:
        stub = executor_pb2_grpc.ExecutorServiceStub(channel)
        request = executor_pb2.ExecuteRequest(action="summarize")

        async def worker(count: int) -> None:
            for _ in range(count):
                await stub.Execute(request, timeout=10)

        await asyncio.gather(*(worker(200) for _ in range(concurrency)))
        before = process_cpu_seconds(pid)
        await asyncio.gather(*(worker(calls // concurrency) for _ in range(concurrency)))
        return (process_cpu_seconds(pid) - before) * 1e6 / (calls // concurrency * concurrency)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--bare", action="store_true", help="no interceptors: the baseline")
    parser.add_argument("--core", type=Path, help="a core directory to import techno_core from instead")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)  # the child: the PKI directory
    arguments = parser.parse_args()
    if arguments.serve is not None:
        asyncio.run(serve(arguments.serve, arguments.bare))
        return
    with tempfile.TemporaryDirectory(prefix="techno-chain-bench-") as directory:
        tls_dir = ensure_development_pki(Path(directory) / "tls")
        env = dict(os.environ)
        if arguments.core is not None:
            env["PYTHONPATH"] = os.pathsep.join([str(arguments.core), env.get("PYTHONPATH", "")])
        command = [sys.executable, __file__, "--serve", str(tls_dir), *(["--bare"] if arguments.bare else [])]
        child = subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        assert child.stdin is not None
        port, core = child.stdout.readline().split()
        try:
            per_call = asyncio.run(drive(tls_dir, int(port), child.pid, arguments.calls, arguments.concurrency))
        finally:
            child.stdin.write("\n")
            child.stdin.close()
            child.wait(timeout=30)
        chain = "bare" if arguments.bare else "chain"
        print(f"{chain} ({Path(core).parent}): {per_call:.1f} µs server CPU per call over {arguments.calls} calls")


if __name__ == "__main__":
    main()
