"""The standard OpenTelemetry variables reach every service of the real stack: spans go to the OTLP endpoint
that OTEL_EXPORTER_OTLP_TRACES_ENDPOINT names, under a resource that says which deployment, namespace, version and
instance they come from (OTEL_RESOURCE_ATTRIBUTES adds to it)."""

from __future__ import annotations

from importlib.metadata import version

import httpx
import pytest

from .conftest import RunningStack
from .support import SUMMARIZE, eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")  # the session's stack runs on the session's loop

SERVICES = {"edge", "gate", "executor", "memory"}


async def test_every_service_names_itself_in_its_spans_resource(
    client: httpx.AsyncClient, running_stack: RunningStack
) -> None:
    response = await client.post("/v1/process", json=SUMMARIZE, headers={"X-API-Key": running_stack.key})
    trace_id = response.json()["traceId"]

    async def all_four_reported() -> bool:
        return running_stack.receiver.services_in_trace(trace_id) >= SERVICES

    await eventually(all_four_reported)
    for service in SERVICES:
        resource = running_stack.receiver.resources[service]
        assert resource["service.namespace"] == "techno", service
        assert resource["service.version"] == version("techno"), service
        assert resource["deployment.environment.name"] == "e2e", service  # from OTEL_RESOURCE_ATTRIBUTES
        assert resource["service.instance.id"], service
