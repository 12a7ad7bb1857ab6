"""End to end through HTTP: the real edge, gate, executor and memory as processes, on PostgreSQL."""

from __future__ import annotations

import httpx
import pytest

from techno.memory.v1 import memory_pb2, memory_pb2_grpc
from techno_core.identity import Identity
from tests.rest_errors import field_violations_of, reasons_of, trace_id_of

from .conftest import RunningStack
from .support import SUMMARIZE, error_of, eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_allowed_request_returns_result_and_trace_id(
    client: httpx.AsyncClient, running_stack: RunningStack
) -> None:
    response = await client.post("/v1/process", json=SUMMARIZE, headers={"X-API-Key": running_stack.key})
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["traceId"]) == 32
    assert response.headers["X-Trace-Id"] == body["traceId"]
    assert body["status"] == "EXECUTION_STATUS_SUCCEEDED"
    assert body["result"]
    assert body["provider"] == "fake"
    assert body["usage"]["totalTokens"] > 0


async def test_bearer_key_is_accepted(client: httpx.AsyncClient, running_stack: RunningStack) -> None:
    response = await client.post(
        "/v1/process", json=SUMMARIZE, headers={"Authorization": f"Bearer {running_stack.key}"}
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("headers", "reason"),
    [({}, "CREDENTIALS_MISSING"), ({"X-API-Key": "tk_not_a_real_key"}, "API_KEY_INVALID")],
)
async def test_missing_or_unknown_key_is_401_with_reason(
    client: httpx.AsyncClient, headers: dict[str, str], reason: str
) -> None:
    response = await client.post("/v1/process", json=SUMMARIZE, headers=headers)
    assert response.status_code == 401
    error = error_of(response)
    assert reasons_of(error) == [reason]
    assert error["status"] == "UNAUTHENTICATED"
    assert trace_id_of(error) == response.headers["X-Trace-Id"]


async def test_forbidden_action_is_403(client: httpx.AsyncClient, running_stack: RunningStack) -> None:
    _, restricted = await running_stack.create_known_key("restricted")
    request = {**SUMMARIZE, "action": "chat", "contextId": "public-1", "payload": {"message": "hi"}}
    response = await client.post("/v1/process", json=request, headers={"X-API-Key": restricted})
    assert response.status_code == 403
    assert reasons_of(error_of(response)) == ["ACTION_NOT_ALLOWED"]


async def test_malformed_body_is_400(client: httpx.AsyncClient, running_stack: RunningStack) -> None:
    response = await client.post(
        "/v1/process",
        content=b'{"action": "summarize",',
        headers={"X-API-Key": running_stack.key, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert trace_id_of(error_of(response))


async def test_audit_trail_holds_the_decision_and_the_outcome(
    client: httpx.AsyncClient, running_stack: RunningStack
) -> None:
    response = await client.post("/v1/process", json=SUMMARIZE, headers={"X-API-Key": running_stack.key})
    trace_id = response.json()["traceId"]
    async with running_stack.connect(Identity.MEMORY, as_=Identity.OPERATOR) as channel:
        trail = await memory_pb2_grpc.MemoryServiceStub(channel).GetAuditTrail(
            memory_pb2.GetAuditTrailRequest(trace_id=trace_id), timeout=5
        )
    events = [(memory_pb2.AuditEventKind.Name(e.kind), e.result) for e in trail.events]
    assert events == [("AUDIT_EVENT_KIND_DECISION", "ALLOW"), ("AUDIT_EVENT_KIND_OUTCOME", "SUCCEEDED")]
    decision = trail.events[0]
    assert decision.principal_id.startswith("key_")
    assert running_stack.key not in str(trail)
    assert decision.attributes["policy_version"]


async def test_one_trace_id_from_the_edge_to_the_database(
    client: httpx.AsyncClient, running_stack: RunningStack
) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    traceparent = f"00-{trace_id}-00f067aa0ba902b7-01"
    response = await client.post(
        "/v1/process", json=SUMMARIZE, headers={"X-API-Key": running_stack.key, "traceparent": traceparent}
    )
    assert response.json()["traceId"] == trace_id

    async def all_four_reported() -> bool:
        return running_stack.receiver.services_in_trace(trace_id) >= {"edge", "gate", "executor", "memory"}

    await eventually(all_four_reported)
    names = {s.name for s in running_stack.receiver.spans if s.trace_id == trace_id and s.service == "memory"}
    assert any(not name.startswith("/") for name in names), f"no database span in memory's spans: {names}"


async def test_revoked_key_is_refused_after_the_next_key_refresh(
    client: httpx.AsyncClient, running_stack: RunningStack
) -> None:
    key_id, secret = await running_stack.create_key("default")

    async def status() -> int:
        response = await client.post("/v1/process", json=SUMMARIZE, headers={"X-API-Key": secret})
        return response.status_code

    async def accepted() -> bool:
        return await status() == 200

    await eventually(accepted)
    async with running_stack.connect(Identity.MEMORY, as_=Identity.OPERATOR) as channel:
        await memory_pb2_grpc.MemoryServiceStub(channel).RevokeApiKey(
            memory_pb2.RevokeApiKeyRequest(key_id=key_id), timeout=5
        )

    async def refused() -> bool:
        return await status() == 401

    await eventually(refused, within=5)  # the gate's refresh interval is 0.5 s in this stack
    response = await client.post("/v1/process", json=SUMMARIZE, headers={"X-API-Key": secret})
    assert reasons_of(error_of(response)) == ["API_KEY_REVOKED"]


async def test_payload_violations_from_the_executor_reach_the_client(
    client: httpx.AsyncClient, running_stack: RunningStack
) -> None:
    request = {**SUMMARIZE, "payload": {"txt": "typo"}}
    response = await client.post("/v1/process", json=request, headers={"X-API-Key": running_stack.key})
    assert response.status_code == 400
    error = error_of(response)
    assert reasons_of(error) == ["PAYLOAD_INVALID"]
    assert "payload.text" in {v["field"] for v in field_violations_of(error)}
