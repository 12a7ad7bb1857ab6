"""The real memory, executor, gate and edge servers started in one test process: each on loopback port 0 with its
own identity's certificate (``tests.tls.as_identity``), as a deployment runs them, and stopped in reverse order."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, TypeVar

from opentelemetry.sdk.trace import TracerProvider

from techno_core.identity import Identity
from techno_core.server import GrpcApp
from techno_edge.bootstrap import EdgeServer
from techno_edge.bootstrap import bootstrap as edge_bootstrap
from techno_edge.settings import EdgeSettings
from techno_executor.bootstrap import bootstrap as executor_bootstrap
from techno_executor.settings import ExecutorSettings
from techno_gate.bootstrap import bootstrap as gate_bootstrap
from techno_gate.settings import GateSettings
from techno_memory.adapters.database import create_database_engine
from techno_memory.adapters.migrations import upgrade
from techno_memory.bootstrap import bootstrap as memory_bootstrap
from techno_memory.settings import MemorySettings
from tests.tls import as_identity


async def migrated_sqlite(path: Path) -> str:
    """The URL of a SQLite database at ``path`` with memory's schema."""
    url = f"sqlite+aiosqlite:///{path}"
    engine = create_database_engine(url, pool_size=1, tracer_provider=None)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
    return url


class _Server(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


ServerT = TypeVar("ServerT", bound=_Server)


class InProcess:
    """Starts the services one by one (a test may act between two, e.g. create keys before the gate loads them)
    and stops every one it started, last first, on ``stop`` or on leaving ``async with``. Keyword ``settings``
    are the test's own (ids, policies, limits backends, timeouts) on top of the port and identity."""

    def __init__(self, tracer_provider: TracerProvider) -> None:
        self._tracer_provider = tracer_provider
        self._started: list[_Server] = []

    async def memory(self, database_url: str) -> GrpcApp:
        settings = MemorySettings(
            **as_identity(Identity.MEMORY), memory_database_url=database_url, memory_port=0, memory_metrics_port=0
        )
        return await self._start(await memory_bootstrap(settings, tracer_provider=self._tracer_provider))

    async def executor(self, memory: GrpcApp, **settings: Any) -> GrpcApp:
        executor_settings = ExecutorSettings(
            **as_identity(Identity.EXECUTOR),
            executor_port=0,
            executor_metrics_port=0,
            memory_target=memory.address,
            **settings,
        )
        return await self._start(await executor_bootstrap(executor_settings, tracer_provider=self._tracer_provider))

    async def gate(self, memory: GrpcApp | str, executor: GrpcApp, *, policy_file: Path, **settings: Any) -> GrpcApp:
        """``memory`` is the memory app, or just an address (of nothing, for a gate whose memory is down)."""
        gate_settings = GateSettings(
            **as_identity(Identity.GATE),
            gate_port=0,
            gate_metrics_port=0,
            memory_target=memory if isinstance(memory, str) else memory.address,
            executor_target=executor.address,
            gate_policy_file=str(policy_file),
            **settings,
        )
        return await self._start(await gate_bootstrap(gate_settings, tracer_provider=self._tracer_provider))

    async def edge(self, gate: GrpcApp) -> EdgeServer:
        settings = EdgeSettings(**as_identity(Identity.EDGE), edge_port=0, gate_target=gate.address)
        return await self._start(await edge_bootstrap(settings, tracer_provider=self._tracer_provider))

    async def _start(self, server: ServerT) -> ServerT:
        await server.start()
        self._started.append(server)
        return server

    async def stop(self) -> None:
        while self._started:
            await self._started.pop().stop()

    async def __aenter__(self) -> InProcess:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.stop()
