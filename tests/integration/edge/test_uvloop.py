"""grpc.aio and the edge on uvloop, the loop ``python -m techno_edge`` runs on: a full REST → gRPC round trip."""

from __future__ import annotations

import httpx
import uvloop
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from techno_edge.bootstrap import bootstrap

from .conftest import edge_settings, start_upstream


def test_round_trip_on_uvloop(tracer_provider: TracerProvider) -> None:
    async def scenario() -> tuple[int, dict[str, str], type]:
        import asyncio

        gate = await start_upstream(tracer_provider)
        server = await bootstrap(
            edge_settings(gate.target), tracer_provider=tracer_provider, registry=CollectorRegistry()
        )
        await server.start()
        try:
            async with httpx.AsyncClient(base_url=server.url) as http:
                response = await http.get("/v1/actions", headers={"X-API-Key": "k"})
                ready = await http.get("/readyz")
            return response.status_code + ready.status_code, gate.seen.metadata[-1], type(asyncio.get_running_loop())
        finally:
            await server.stop()
            await gate.server.stop(None)

    statuses, metadata, loop_type = uvloop.run(scenario())
    assert loop_type is uvloop.Loop
    assert statuses == 400  # 200 + 200
    assert metadata["x-api-key"] == "k"
