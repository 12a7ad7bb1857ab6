"""gRPC health reporting driven by probes of the service's own dependencies.

A probe is an async callable that returns normally when its dependency works and raises when it does not. The
monitor runs every probe periodically and reports SERVING only when all pass, for the overall server ("") and
every service name. Uses grpc_health's asyncio servicer (standard Check and Watch).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from techno_core.periodic import Periodic

Probe = Callable[[], Awaitable[None]]
# Health service names for orchestrators: `liveness` is SERVING while the process serves at all (a probe that
# fails restarts it, so it must not depend on other services: a memory outage must not restart every gate);
# `readiness` is SERVING only while the service's own dependencies work (a probe that fails takes the replica
# out of its Service's endpoints until they are back).
LIVENESS = "liveness"
READINESS = "readiness"
log = logging.getLogger(__name__)


class DependencyMonitor:
    def __init__(
        self,
        servicer: HealthServicer,
        service_names: Sequence[str],
        probes: Sequence[tuple[str, Probe]],
        *,
        interval_seconds: float,
        probe_timeout_seconds: float = 1.0,
    ) -> None:
        self._servicer = servicer
        self._names = ["", *service_names]
        self._probes = list(probes)
        self._timeout = probe_timeout_seconds
        self._periodic = Periodic(self.check_once, interval_seconds=interval_seconds, name="dependency-monitor")
        self._serving: bool | None = None

    @property
    def serving(self) -> bool:
        return bool(self._serving)

    async def check_once(self) -> bool:
        failures = [
            name
            for name, ok in zip(
                (n for n, _ in self._probes),
                await asyncio.gather(*(self._probe(p) for _, p in self._probes)),
                strict=True,
            )
            if not ok
        ]
        serving = not failures
        if serving != self._serving:
            (log.info if serving else log.warning)(
                "health %s", "SERVING" if serving else "NOT_SERVING", extra={"failing_dependencies": failures}
            )
            status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
            for name in self._names:
                await self._servicer.set(name, status)
        self._serving = serving
        return serving

    async def _probe(self, probe: Probe) -> bool:
        try:
            await asyncio.wait_for(probe(), self._timeout)
        except Exception:  # any failure of a dependency means NOT_SERVING; the log says which
            return False
        return True

    async def start(self) -> None:
        await self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.close()


def grpc_health_probe(channel: grpc.aio.Channel, service: str = "") -> Probe:
    """A probe that passes while the server behind ``channel`` reports SERVING."""
    stub = health_pb2_grpc.HealthStub(channel)

    async def probe() -> None:
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1.0)
        if response.status != health_pb2.HealthCheckResponse.SERVING:
            raise RuntimeError(
                f"dependency reports {health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)}"
            )

    return probe
