"""Rehearsing a provider incident through the REST admin API, end to end: inject faults into the fake
provider, see the circuit open and requests fail fast, find the transition in the audit trail, recover."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from techno.memory.v1 import memory_pb2, memory_pb2_grpc
from techno_core.identity import Identity
from tests.rest_errors import field_violations_of, reasons_of

from .conftest import RunningStack
from .support import SUMMARIZE, error_of

pytestmark = pytest.mark.asyncio(loop_scope="session")

HEALTHY = {"latencyMs": 0, "errorRate": 0.0, "retryAfterSeconds": 1}


@pytest_asyncio.fixture(loop_scope="session")
async def admin(client: httpx.AsyncClient, running_stack: RunningStack) -> AsyncIterator[dict[str, str]]:
    headers = {"X-API-Key": running_stack.key}
    yield headers
    # Leave the shared stack healthy for the other tests, whatever happened here.
    await client.post("/v1/admin/providers/fake/faults", json=HEALTHY, headers=headers)
    await client.post("/v1/admin/breakers/fake", json={"command": "BREAKER_COMMAND_RESET"}, headers=headers)


async def breaker_state(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    response = await client.get("/v1/admin/breakers", headers=headers)
    assert response.status_code == 200, response.text
    state: str = next(b for b in response.json()["breakers"] if b["provider"] == "fake")["state"]
    return state


async def test_failing_provider_opens_the_circuit_and_requests_fail_fast(
    client: httpx.AsyncClient, running_stack: RunningStack, admin: dict[str, str]
) -> None:
    injected = await client.post(
        "/v1/admin/providers/fake/faults", json={"errorRate": 1.0, "retryAfterSeconds": 1}, headers=admin
    )
    assert injected.status_code == 200, injected.text
    assert injected.json()["faults"]["errorRate"] == 1.0

    failures = [await client.post("/v1/process", json=SUMMARIZE, headers=admin) for _ in range(3)]
    assert [r.status_code for r in failures] == [503, 503, 503]
    assert {reasons_of(error_of(r))[0] for r in failures} == {"PROVIDER_UNAVAILABLE"}
    assert await breaker_state(client, admin) == "BREAKER_STATE_OPEN"

    fast = await client.post("/v1/process", json=SUMMARIZE, headers=admin)
    assert fast.status_code == 503
    assert reasons_of(error_of(fast)) == ["CIRCUIT_OPEN"]
    assert int(fast.headers["Retry-After"]) >= 1

    opened_by = failures[-1].headers["X-Trace-Id"]  # the third failure opened the circuit
    async with running_stack.connect(Identity.MEMORY, as_=Identity.OPERATOR) as channel:
        trail = await memory_pb2_grpc.MemoryServiceStub(channel).GetAuditTrail(
            memory_pb2.GetAuditTrailRequest(trace_id=opened_by), timeout=5
        )
    breaker_events = [e for e in trail.events if e.kind == memory_pb2.AUDIT_EVENT_KIND_BREAKER]
    assert [(e.service, e.result) for e in breaker_events] == [("executor", "CIRCUIT_OPENED")]

    await client.post("/v1/admin/providers/fake/faults", json=HEALTHY, headers=admin)
    reset = await client.post("/v1/admin/breakers/fake", json={"command": "BREAKER_COMMAND_RESET"}, headers=admin)
    assert reset.json()["breaker"]["state"] == "BREAKER_STATE_CLOSED"
    assert (await client.post("/v1/process", json=SUMMARIZE, headers=admin)).status_code == 200


async def test_operator_commands_refuse_a_valid_key_without_the_admin_scope(
    client: httpx.AsyncClient, running_stack: RunningStack, admin: dict[str, str]
) -> None:
    _, plain = await running_stack.create_known_key("default")  # known to the gate, so never a 401
    not_admin = {"X-API-Key": plain}
    refused = [
        await client.post("/v1/admin/breakers/fake", json={"command": "BREAKER_COMMAND_FORCE_OPEN"}, headers=not_admin),
        await client.post("/v1/admin/providers/fake/faults", json={"errorRate": 1.0}, headers=not_admin),
        await client.get("/v1/admin/breakers", headers=not_admin),
    ]
    assert [r.status_code for r in refused] == [403, 403, 403], [r.text for r in refused]
    assert [reasons_of(error_of(r)) for r in refused] == [["SCOPE_MISSING"]] * 3
    assert await breaker_state(client, admin) == "BREAKER_STATE_CLOSED"  # nothing was forced nor injected
    assert (await client.post("/v1/process", json=SUMMARIZE, headers=not_admin)).status_code == 200


async def test_forced_open_fails_closed(
    client: httpx.AsyncClient, running_stack: RunningStack, admin: dict[str, str]
) -> None:
    forced = await client.post("/v1/admin/breakers/fake", json={"command": "BREAKER_COMMAND_FORCE_OPEN"}, headers=admin)
    assert forced.json()["breaker"]["state"] == "BREAKER_STATE_FORCED_OPEN"
    response = await client.post("/v1/process", json=SUMMARIZE, headers=admin)
    assert reasons_of(error_of(response)) == ["CIRCUIT_OPEN"]


async def test_invalid_faults_are_refused_with_field_violations(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await client.post("/v1/admin/providers/fake/faults", json={"errorRate": 1.5}, headers=admin)
    assert response.status_code == 400
    assert "error_rate" in {v["field"].split(".")[-1] for v in field_violations_of(error_of(response))}
