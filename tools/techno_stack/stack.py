"""Start, watch and stop the four services as child processes on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from techno_core.health import READINESS
from techno_core.identity import Identity
from techno_stack.certs import ensure_development_pki

ROOT = Path(__file__).resolve().parents[2]


_Check = Callable[[], Awaitable[bool]]


class StackError(RuntimeError):
    """A service did not start; the message names it and where its log is."""


def private_directory(path: Path) -> None:
    """``path`` (made if missing) readable by its owner only: services' logs say who called what."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)


def open_log(path: Path) -> BinaryIO:
    """A log file appended to, created (or made) 0600."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(descriptor, 0o600)
    return os.fdopen(descriptor, "ab")


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        # As the servers do: a port whose old connections linger in TIME_WAIT is free to listen on.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def terminate(process: asyncio.subprocess.Process, grace_seconds: float) -> None:
    """SIGTERM (a graceful drain), then SIGKILL if the process has not exited after ``grace_seconds``."""
    if process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), grace_seconds)
    except TimeoutError:
        process.kill()
        await process.wait()


@dataclass
class Ports:
    edge: int = 8080
    gate: int = 50051
    executor: int = 50052
    memory: int = 50053
    gate_metrics: int = 9101
    executor_metrics: int = 9102
    memory_metrics: int = 9103
    gate_health: int = 50061
    executor_health: int = 50062
    memory_health: int = 50063
    edge_health: int = 8090

    @classmethod
    def free(cls) -> Ports:
        return cls(*(free_port() for _ in dataclasses.fields(cls)))


# The gRPC services, in start order (each needs the ones before it), and their modules.
GRPC_SERVICES = {"memory": "techno_memory", "executor": "techno_executor", "gate": "techno_gate"}


@dataclass(frozen=True)
class Replica:
    """One process of a gRPC service: the first of each uses ``Ports``; the others get free ports."""

    kind: str
    index: int
    port: int
    metrics_port: int
    health_port: int

    @property
    def name(self) -> str:
        return self.kind if self.index == 1 else f"{self.kind}-{self.index}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        prefix = f"TECHNO_{self.kind.upper()}"
        return {
            f"{prefix}_PORT": str(self.port),
            f"{prefix}_METRICS_PORT": str(self.metrics_port),
            f"{prefix}_HEALTH_PORT": str(self.health_port),
        }


@dataclass
class StackConfig:
    state_dir: Path = ROOT / "var"
    ports: Ports = field(default_factory=Ports)
    database_url: str = ""  # default: the SQLite file in state_dir
    extra_env: Mapping[str, str] = field(default_factory=dict)
    start_timeout_seconds: float = 30.0
    # Processes per gRPC service (default 1); callers balance over all of them (round robin over every address).
    replicas: Mapping[str, int] = field(default_factory=dict)

    def replica_set(self) -> list[Replica]:
        replicas = []
        for kind in GRPC_SERVICES:
            p = self.ports
            replicas.append(
                Replica(kind, 1, getattr(p, kind), getattr(p, f"{kind}_metrics"), getattr(p, f"{kind}_health"))
            )
            extra = range(2, self.replicas.get(kind, 1) + 1)
            replicas.extend(Replica(kind, index, free_port(), free_port(), free_port()) for index in extra)
        return replicas

    @property
    def key_file(self) -> Path:
        return self.state_dir / "dev-api-key"

    @property
    def tls_dir(self) -> Path:
        """The development CA and one certificate per identity (``techno_stack.certs``)."""
        return self.state_dir / "tls"

    def identity_environment(self, identity: Identity) -> dict[str, str]:
        """The mutual TLS files of one process: its own certificate and key, and the development CA."""
        return {
            "TECHNO_TLS_CERT_FILE": str(self.tls_dir / f"{identity}.crt"),
            "TECHNO_TLS_KEY_FILE": str(self.tls_dir / f"{identity}.key"),
            "TECHNO_TLS_CA_FILE": str(self.tls_dir / "ca.crt"),
        }

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    def environment(self, replicas: list[Replica]) -> dict[str, str]:
        """What every process shares; targets name every replica (``ipv4:a,b`` when there are several)."""
        p = self.ports

        def target(kind: str) -> str:
            addresses = [replica.address for replica in replicas if replica.kind == kind]
            return addresses[0] if len(addresses) == 1 else "ipv4:" + ",".join(addresses)

        env = {key: value for key, value in os.environ.items() if not key.startswith("TECHNO_")}
        env.update(
            {
                "TECHNO_MEMORY_DATABASE_URL": self.database_url
                or f"sqlite+aiosqlite:///{self.state_dir / 'memory.db'}",
                "TECHNO_MEMORY_PORT": str(p.memory),
                "TECHNO_MEMORY_METRICS_PORT": str(p.memory_metrics),
                "TECHNO_EXECUTOR_PORT": str(p.executor),
                "TECHNO_EXECUTOR_METRICS_PORT": str(p.executor_metrics),
                "TECHNO_GATE_PORT": str(p.gate),
                "TECHNO_GATE_METRICS_PORT": str(p.gate_metrics),
                "TECHNO_GATE_HEALTH_PORT": str(p.gate_health),
                "TECHNO_EXECUTOR_HEALTH_PORT": str(p.executor_health),
                "TECHNO_MEMORY_HEALTH_PORT": str(p.memory_health),
                "TECHNO_GATE_POLICY_FILE": str(ROOT / "config" / "policy.yaml"),
                "TECHNO_EDGE_PORT": str(p.edge),
                "TECHNO_EDGE_HEALTH_PORT": str(p.edge_health),
                "TECHNO_MEMORY_TARGET": target("memory"),
                "TECHNO_EXECUTOR_TARGET": target("executor"),
                "TECHNO_GATE_TARGET": target("gate"),
            }
        )
        env.update(self.extra_env)
        return env


@dataclass
class Service:
    name: str
    module: str
    process: asyncio.subprocess.Process | None = None


class Stack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.replicas = {replica.name: replica for replica in config.replica_set()}
        self.env = config.environment(list(self.replicas.values()))
        self.services: list[Service] = []

    def replicas_of(self, kind: str) -> list[Replica]:
        return [replica for replica in self.replicas.values() if replica.kind == kind]

    @property
    def edge_url(self) -> str:
        return f"http://127.0.0.1:{self.config.ports.edge}"

    async def start(self) -> None:
        # Otherwise a health check could be answered by a stranger's process on our port.
        ports = [*dataclasses.astuple(self.config.ports)]
        ports += [port for r in self.replicas.values() for port in (r.port, r.metrics_port, r.health_port)]
        taken = [port for port in dict.fromkeys(ports) if not port_is_free(port)]
        if taken:
            raise StackError(f"ports already in use: {taken} (is another stack running?)")
        private_directory(self.config.log_dir)
        ensure_development_pki(self.config.tls_dir)
        await self._run_to_end("migrate", [sys.executable, "-m", "techno_memory", "migrate"])
        try:
            for kind, module in GRPC_SERVICES.items():
                for replica in self.replicas_of(kind):
                    await self._start(replica.name, module, self._ready(replica.name))
                if kind == "memory":
                    await self.ensure_dev_key()
            await self._start("edge", "techno_edge", self._ready("edge"))
        except BaseException:
            await self.stop()
            raise

    async def ensure_dev_key(self) -> str:
        """Reuse the saved development key if memory still knows it; else create and save a new one."""
        keys = [sys.executable, "-m", "techno_gate.keys_cli", "--memory", f"127.0.0.1:{self.config.ports.memory}"]
        if self.config.key_file.exists():
            check = await asyncio.create_subprocess_exec(
                *keys, "check", str(self.config.key_file), env=self.operator_env
            )
            if await check.wait() == 0:
                return self.config.key_file.read_text().strip()
        every_scope = ["--scope", "process", "--scope", "audit:read", "--scope", "admin"]  # a developer's own stack
        create = [*keys, "create", "--name", "development", *every_scope, "--output", str(self.config.key_file)]
        await self._run_to_end("create-key", create, env=self.operator_env)
        return self.config.key_file.read_text().strip()

    @property
    def operator_env(self) -> dict[str, str]:
        """The environment of an operator's tool (``techno-keys``): the operator identity's certificate."""
        return {**self.env, **self.config.identity_environment(Identity.OPERATOR)}

    async def stop(self, *, grace_seconds: float = 10.0) -> None:
        """SIGTERM in reverse start order (front door first), so no service loses a dependency mid-drain."""
        for service in reversed(self.services):
            if service.process is not None:
                await terminate(service.process, grace_seconds)
        self.services.clear()

    async def kill(self, name: str) -> None:
        """SIGKILL one service, as a crash would, and wait until it is gone (an incident rehearsal)."""
        process = self._service(name).process
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()

    async def restart(self, name: str) -> None:
        """Start a service that was killed or exited again, on the same ports, and wait until it is ready."""
        old = self._service(name)
        index = next(i for i, service in enumerate(self.services) if service is old)
        if old.process is not None and old.process.returncode is None:
            raise StackError(f"{name} is still running")
        del self.services[index]
        try:
            await self._start(name, old.module, self._ready(name))
        finally:
            if self.services and self.services[-1].name == name:  # back in its place: stop() keeps its order
                self.services.insert(index, self.services.pop())
            elif not any(s.name == name for s in self.services):
                self.services.insert(index, old)

    def _service(self, name: str) -> Service:
        for service in self.services:
            if service.name == name:
                return service
        raise StackError(f"no service named {name!r} (running: {[s.name for s in self.services]})")

    def _ready(self, name: str) -> _Check:
        if name == "edge":
            return self._http_ready(f"http://127.0.0.1:{self.config.ports.edge_health}/readyz")
        return self._grpc_ready(self.replicas[name].health_port)

    def exited(self) -> list[str]:
        return [s.name for s in self.services if s.process is not None and s.process.returncode is not None]

    async def _start(self, name: str, module: str, ready: _Check) -> None:
        log = open_log(self.config.log_dir / f"{name}.log")
        replica = self.replicas.get(name)
        identity = Identity(replica.kind if replica else name)
        env = {**self.env, **self.config.identity_environment(identity), **(replica.environment() if replica else {})}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, env=env, stdout=log, stderr=log, start_new_session=True
        )
        log.close()
        self.services.append(Service(name, module, process))
        deadline = time.monotonic() + self.config.start_timeout_seconds
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise StackError(f"{name} exited with {process.returncode}; see {self.config.log_dir / name}.log")
            if await ready():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 0.1)
        raise StackError(f"{name} not ready after {self.config.start_timeout_seconds}s; see its log")

    async def _run_to_end(self, name: str, command: list[str], *, env: Mapping[str, str] | None = None) -> None:
        log_path = self.config.log_dir / f"{name}.log"
        with open_log(log_path) as log:
            process = await asyncio.create_subprocess_exec(*command, env=dict(env or self.env), stdout=log, stderr=log)
            if await process.wait() != 0:
                raise StackError(f"{name} failed; see {log_path}")

    @staticmethod
    def _grpc_ready(port: int) -> _Check:
        """Readiness on the service's plaintext health port (the main port requires a client certificate)."""

        async def check() -> bool:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                try:
                    response = await health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(service=READINESS), timeout=1
                    )
                except grpc.aio.AioRpcError:
                    return False
            return bool(response.status == health_pb2.HealthCheckResponse.SERVING)

        return check

    @staticmethod
    def _http_ready(url: str) -> _Check:
        def get() -> bool:
            try:
                with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (loopback URL we built)
                    return bool(response.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        async def check() -> bool:
            return await asyncio.to_thread(get)

        return check
