"""Operator commands through the REST admin API are ADMIN events of the audit trail, with the admin key as
principal, recorded before they run; the executor's forced transition names the same principal. The stack's own
key was made by ``techno-keys`` with the operator certificate, and memory recorded that too."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .conftest import RunningStack
from .support import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _events(client: httpx.AsyncClient, key: str, **query: str) -> list[dict[str, Any]]:
    response = await client.get("/v1/audit/events", params=query, headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json().get("events", [])
    return events


async def _own_key_id(client: httpx.AsyncClient, key: str) -> str:
    response = await client.get("/v1/admin/keys", headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    [own] = [k for k in response.json()["apiKeys"] if key.startswith(k["prefix"])]
    key_id: str = own["keyId"]
    return key_id


async def test_forced_breaker_and_faults_are_recorded_with_the_admin_principal(
    client: httpx.AsyncClient, running_stack: RunningStack
) -> None:
    key = running_stack.key
    headers = {"X-API-Key": key}
    key_id = await _own_key_id(client, key)
    try:
        forced = await client.post(
            "/v1/admin/breakers/fake", headers=headers, json={"command": "BREAKER_COMMAND_FORCE_OPEN"}
        )
        assert forced.status_code == 200, forced.text
        faults = await client.post("/v1/admin/providers/fake/faults", headers=headers, json={"errorRate": 0.25})
        assert faults.status_code == 200, faults.text
    finally:
        await client.post("/v1/admin/breakers/fake", headers=headers, json={"command": "BREAKER_COMMAND_RESET"})
        await client.post("/v1/admin/providers/fake/faults", headers=headers, json={})

    forced_trace = forced.headers["x-trace-id"]

    async def transition_recorded() -> bool:
        return any(e["kind"] == "BREAKER" for e in await _events(client, key, traceId=forced_trace))

    await eventually(transition_recorded)  # the executor writes its transitions without waiting
    trail = await _events(client, key, traceId=forced_trace)
    admin = [(e["action"], e["result"], e["principalId"]) for e in trail if e["kind"] == "ADMIN"]
    assert admin == [("breaker.set", "REQUESTED", key_id), ("breaker.set", "SUCCEEDED", key_id)]
    [transition] = [e for e in trail if e["kind"] == "BREAKER"]
    assert (transition["result"], transition["attributes"]["requested_by"]) == ("CIRCUIT_FORCED_OPEN", key_id)

    fault_trail = await _events(client, key, traceId=faults.headers["x-trace-id"])
    assert [(e["action"], e["result"], e["principalId"]) for e in fault_trail] == [
        ("faults.set", "REQUESTED", key_id),
        ("faults.set", "SUCCEEDED", key_id),
    ]
    assert fault_trail[0]["attributes"]["error_rate"] == 0.25


async def test_the_key_made_with_the_operator_certificate_is_recorded(
    client: httpx.AsyncClient, running_stack: RunningStack
) -> None:
    key = running_stack.key
    key_id = await _own_key_id(client, key)
    events = await _events(client, key, principalId="operator:operator", pageSize="1000")
    created = [e["result"] for e in events if e["action"] == "api_key.create" and e["contextId"] == key_id]
    assert created == ["REQUESTED", "SUCCEEDED"]
    assert {e["service"] for e in events} == {"memory"}
