"""Idempotency-Key end to end: REST header → edge → gate → memory's idempotency records (PostgreSQL).

Each test uses a fresh key (principal), so the audit trail of that principal counts exactly what ran."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.rest_errors import reasons_of, trace_id_of

from .conftest import RunningStack
from .support import error_of, eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")

SUMMARIZE = {"action": "summarize", "contextId": "e2e", "payload": {"text": "Exactly once, please."}}


@dataclass(frozen=True)
class Caller:
    key_id: str
    secret: str


@pytest_asyncio.fixture(loop_scope="session")
async def caller(running_stack: RunningStack) -> Caller:
    """A fresh key of the default profile that the gate already knows: its audit trail starts empty."""
    return Caller(*await running_stack.create_known_key("default"))


async def audit_of(client: httpx.AsyncClient, running_stack: RunningStack, principal_id: str) -> list[dict[str, Any]]:
    reply = await client.get(
        "/v1/audit/events", params={"principalId": principal_id}, headers={"X-API-Key": running_stack.key}
    )
    assert reply.status_code == 200, reply.text
    events: list[dict[str, Any]] = reply.json()["events"]
    return events


async def set_fake_latency(client: httpx.AsyncClient, running_stack: RunningStack, latency_ms: int) -> None:
    reply = await client.post(
        "/v1/admin/providers/fake/faults", json={"latencyMs": latency_ms}, headers={"X-API-Key": running_stack.key}
    )
    assert reply.status_code == 200, reply.text


async def test_concurrent_duplicates_execute_exactly_once_and_share_one_response(
    client: httpx.AsyncClient, running_stack: RunningStack, caller: Caller
) -> None:
    headers = {"X-API-Key": caller.secret, "Idempotency-Key": str(uuid.uuid4())}
    await set_fake_latency(client, running_stack, 300)  # the duplicates arrive while the first is running
    try:
        replies = await asyncio.gather(
            *(client.post("/v1/process", json=SUMMARIZE, headers=headers) for _ in range(12))
        )
    finally:
        await set_fake_latency(client, running_stack, 0)

    assert [r.status_code for r in replies] == [200] * 12, [r.text for r in replies if r.status_code != 200]
    bodies = {r.content for r in replies}
    assert len(bodies) == 1, "every duplicate gets the one execution's response"
    events = await audit_of(client, running_stack, caller.key_id)
    assert sorted((e["kind"], e["result"]) for e in events) == [("DECISION", "ALLOW"), ("OUTCOME", "SUCCEEDED")]
    assert {e["traceId"] for e in events} == {replies[0].json()["traceId"]}

    again = await client.post("/v1/process", json=SUMMARIZE, headers=headers)
    assert again.status_code == 200
    assert again.content == replies[0].content, "a later repeat replays it too"
    assert len(await audit_of(client, running_stack, caller.key_id)) == 2, "and runs nothing"


async def test_a_key_reused_for_another_request_is_refused(
    client: httpx.AsyncClient, running_stack: RunningStack, caller: Caller
) -> None:
    headers = {"X-API-Key": caller.secret, "Idempotency-Key": "order-42"}
    assert (await client.post("/v1/process", json=SUMMARIZE, headers=headers)).status_code == 200
    other = {**SUMMARIZE, "payload": {"text": "Something else."}}
    refused = await client.post("/v1/process", json=other, headers=headers)
    assert refused.status_code == 400, refused.text
    assert reasons_of(error_of(refused)) == ["IDEMPOTENCY_KEY_REUSED"]
    assert trace_id_of(error_of(refused))


async def test_keys_are_per_caller(client: httpx.AsyncClient, running_stack: RunningStack, caller: Caller) -> None:
    """Two callers choosing the same key do not see each other's responses."""
    key = {"Idempotency-Key": f"shared-{uuid.uuid4()}"}
    mine = await client.post("/v1/process", json=SUMMARIZE, headers={"X-API-Key": caller.secret, **key})
    theirs = await client.post("/v1/process", json=SUMMARIZE, headers={"X-API-Key": running_stack.key, **key})
    assert mine.status_code == theirs.status_code == 200
    assert mine.json()["traceId"] != theirs.json()["traceId"]


async def test_a_failed_execution_is_not_kept_and_a_retry_runs_again(
    client: httpx.AsyncClient, running_stack: RunningStack, caller: Caller
) -> None:
    headers = {"X-API-Key": caller.secret, "Idempotency-Key": str(uuid.uuid4())}
    admin = {"X-API-Key": running_stack.key}
    assert (await client.post("/v1/admin/providers/fake/faults", json={"errorRate": 1.0}, headers=admin)).is_success
    try:
        failed = await client.post("/v1/process", json=SUMMARIZE, headers=headers)
    finally:
        assert (await client.post("/v1/admin/providers/fake/faults", json={}, headers=admin)).is_success
        await client.post("/v1/admin/breakers/fake", json={"command": "BREAKER_COMMAND_RESET"}, headers=admin)
    assert failed.status_code >= 500, failed.text

    async def retried() -> bool:  # the breaker may need a moment to let calls through again
        return (await client.post("/v1/process", json=SUMMARIZE, headers=headers)).status_code == 200

    await eventually(retried, within=30)
    outcomes = [e["result"] for e in await audit_of(client, running_stack, caller.key_id) if e["kind"] == "OUTCOME"]
    assert outcomes[0] == "FAILED"
    assert outcomes[-1] == "SUCCEEDED"


async def test_an_invalid_key_is_refused_with_a_clear_error(client: httpx.AsyncClient, caller: Caller) -> None:
    too_long = {"X-API-Key": caller.secret, "Idempotency-Key": "k" * 256}
    refused = await client.post("/v1/process", json=SUMMARIZE, headers=too_long)
    assert refused.status_code == 400, refused.text
    assert reasons_of(error_of(refused)) == ["IDEMPOTENCY_KEY_INVALID"]
