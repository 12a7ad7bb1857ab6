"""What the benchmarks share: the whole stack on free loopback ports, with a policy whose limits never bind,
and the command-line options that choose its database and environment."""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from techno_core.identity import Identity
from techno_core.tls import CertificateFiles, channel_credentials
from techno_stack.stack import Ports, Stack, StackConfig

POLICY = Path(__file__).with_name("bench_policy.yaml")


def add_stack_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", default="", help="memory's database (default: SQLite in a temp dir)")
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


def identity_channel(tls_dir: Path, address: str, *, server: Identity, as_: Identity) -> grpc.aio.Channel:
    """A mutual TLS channel to the service ``server`` at ``address``, presenting the certificate of ``as_`` from the
    development PKI in ``tls_dir`` (a stack's ``config.tls_dir``), as the services call each other."""
    files = CertificateFiles(tls_dir / f"{as_}.crt", tls_dir / f"{as_}.key", tls_dir / "ca.crt")
    options = [("grpc.ssl_target_name_override", server.value)]
    return grpc.aio.secure_channel(address, channel_credentials(files.read()), options=options)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time so far of the processes ``pids`` (Linux ``/proc/<pid>/stat``), in seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat(5))
    return total / ticks


def service_pids(stack: Stack) -> list[int]:
    return [service.process.pid for service in stack.services if service.process is not None]
