"""The whole stack as real processes (PostgreSQL-backed), shared by the end-to-end tests of a session."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
import pytest_asyncio

from techno_core.identity import Identity
from techno_stack.stack import Ports, Stack, StackConfig

from ..tls import connect
from .otlp_receiver import OtlpReceiver
from .support import eventually

JWT_AUDIENCE = "techno-e2e"
JWT_SECRET = "e2e-shared-secret-with-at-least-32-bytes!"
POLICY = Path(__file__).with_name("policy.yaml")


@dataclass
class RunningStack:
    stack: Stack
    key: str
    receiver: OtlpReceiver
    policy_file: Path

    @property
    def url(self) -> str:
        return self.stack.edge_url

    @property
    def memory_target(self) -> str:
        return f"127.0.0.1:{self.stack.config.ports.memory}"

    @property
    def gate_target(self) -> str:
        return f"127.0.0.1:{self.stack.config.ports.gate}"

    def connect(self, service: Identity, *, as_: Identity, address: str | None = None) -> grpc.aio.Channel:
        """A mutual TLS channel to one of the stack's services (at ``address``, else its port), presenting the
        certificate of ``as_`` from the stack's own development PKI."""
        address = address or f"127.0.0.1:{getattr(self.stack.config.ports, service.value)}"
        return connect(address, identity=as_, server=service, directory=self.stack.config.tls_dir)

    async def create_key(self, profile: str, *options: str) -> tuple[str, str]:
        """A new key of ``profile`` through the real CLI; returns (key_id, secret)."""
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "techno_gate.keys_cli", "--memory", self.memory_target,
            "create", "--name", f"e2e-{profile}", "--profile", profile, *options,
            env=self.stack.operator_env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await process.communicate()
        assert process.returncode == 0, err.decode()
        key_id = err.decode().split()[1]
        return key_id, out.decode().strip()

    async def create_known_key(self, profile: str, *options: str) -> tuple[str, str]:
        """``create_key``, then wait until the gate knows the key (it refreshes its key cache every 0.5 s)."""
        key_id, secret = await self.create_key(profile, *options)
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:

            async def known() -> bool:  # GET /v1/actions needs a known key and no scope
                return (await client.get("/v1/actions", headers={"X-API-Key": secret})).status_code == 200

            await eventually(known)
        return key_id, secret


@pytest.fixture(scope="session")
def otlp_receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def running_stack(
    create_postgres_database: Callable[[], str], otlp_receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningStack]:
    state: Path = tmp_path_factory.mktemp("stack")
    policy_file = state / "policy.yaml"
    policy_file.write_bytes(POLICY.read_bytes())  # a copy: the reload test rewrites it
    secret_file = state / "jwt-secret"
    secret_file.write_text(JWT_SECRET)
    config = StackConfig(
        state_dir=state,
        ports=Ports.free(),
        database_url=create_postgres_database(),  # its own: other suites reset the shared one
        extra_env={
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": otlp_receiver.endpoint,
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=e2e",
            "OTEL_BSP_SCHEDULE_DELAY": "100",  # export spans within 0.1 s, so tests wait little
            "TECHNO_GATE_POLICY_FILE": str(policy_file),
            "TECHNO_GATE_JWT_HS256_SECRET_FILE": str(secret_file),
            "TECHNO_GATE_JWT_AUDIENCE": JWT_AUDIENCE,
        },
    )
    stack = Stack(config)
    await stack.start()
    try:
        yield RunningStack(stack, config.key_file.read_text().strip(), otlp_receiver, policy_file)
    finally:
        await stack.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def client(running_stack: RunningStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=running_stack.url, timeout=10) as client:
        yield client
