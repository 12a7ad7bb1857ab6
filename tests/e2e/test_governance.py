"""Governance through REST, end to end: every denial's status, body and reason; admin and dry run; tokens;
policy reload on SIGHUP; limits and revocation across two gate replicas."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import jwt
import pytest
import pytest_asyncio
from google.protobuf import struct_pb2

from techno.gate.v1 import gate_pb2, gate_pb2_grpc
from techno.memory.v1 import memory_pb2, memory_pb2_grpc
from techno_core.grpc_errors import error_info_of, rpc_status_of
from techno_core.identity import Identity
from techno_stack.stack import free_port
from tests.rest_errors import field_violations_of, quota_violations_of, reasons_of, trace_id_of

from .conftest import JWT_AUDIENCE, JWT_SECRET, RunningStack
from .support import SUMMARIZE, error_of, eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


def token(**claims: Any) -> str:
    body = {"sub": "svc-reports", "aud": JWT_AUDIENCE, "exp": int(time.time()) + 300, "scope": "process"}
    body.update(claims)
    return jwt.encode(body, JWT_SECRET, algorithm="HS256")


def unsigned_token() -> str:
    claims = {"sub": "x", "aud": JWT_AUDIENCE, "exp": int(time.time()) + 300}
    return jwt.encode(claims, "", algorithm="none")  # PyJWT writes alg "none" with an empty signature


async def post(client: httpx.AsyncClient, headers: dict[str, str], **changes: Any) -> httpx.Response:
    return await client.post("/v1/process", json={**SUMMARIZE, **changes}, headers=headers)


@pytest.mark.parametrize(
    ("changes", "status", "reason"),
    [
        ({"contextId": "private-1"}, 403, "CONTEXT_NOT_ALLOWED"),
        ({"action": "chat", "contextId": "public-1", "payload": {"message": "hi"}}, 403, "ACTION_NOT_ALLOWED"),
    ],
)
async def test_policy_denials_of_a_restricted_key(
    client: httpx.AsyncClient, running_stack: RunningStack, changes: dict[str, Any], status: int, reason: str
) -> None:
    _, key = await running_stack.create_known_key("restricted")
    response = await post(client, {"X-API-Key": key}, **{"contextId": "public-1", **changes})
    assert response.status_code == status
    assert reasons_of(error_of(response)) == [reason]


@pytest.mark.parametrize(
    ("changes", "status", "reason", "field"),
    [
        ({"action": "translate"}, 400, "ACTION_UNKNOWN", None),
        ({"action": "premium"}, 403, "PROVIDER_NOT_ALLOWED", None),
        ({"payload": {"text": "bell\u0007"}}, 400, "PAYLOAD_INVALID", "payload.text"),
        ({"payload": {"text": "x" * 1001}}, 400, "PAYLOAD_INVALID", "payload.text"),
        ({"payload": {"text": "ok", "extra": 1}}, 400, "PAYLOAD_INVALID", "payload.extra"),
        ({"contextId": "has space"}, 400, "INVALID_ARGUMENT", "context_id"),
    ],
)
async def test_request_denials(
    client: httpx.AsyncClient,
    running_stack: RunningStack,
    changes: dict[str, Any],
    status: int,
    reason: str,
    field: str | None,
) -> None:
    response = await post(client, {"X-API-Key": running_stack.key}, **changes)
    assert response.status_code == status, response.text
    error = error_of(response)
    assert reasons_of(error) == [reason]
    assert trace_id_of(error) == response.headers["X-Trace-Id"]
    if field is not None:
        assert field in {v["field"] for v in field_violations_of(error)}


@pytest.mark.parametrize(
    ("bearer", "status", "reason"),
    [
        (lambda: token(), 200, None),
        (lambda: token(aud="someone-else"), 401, "TOKEN_INVALID"),
        (lambda: token(exp=int(time.time()) - 3600), 401, "TOKEN_INVALID"),
        (
            lambda: jwt.encode({"sub": "x", "aud": JWT_AUDIENCE, "exp": 2**33}, "wrong-secret-" * 3),
            401,
            "TOKEN_INVALID",
        ),
        (unsigned_token, 401, "TOKEN_INVALID"),
        (lambda: token(scope="audit:read"), 403, "SCOPE_MISSING"),
    ],
)
async def test_bearer_tokens(client: httpx.AsyncClient, bearer: Any, status: int, reason: str | None) -> None:
    response = await post(client, {"Authorization": f"Bearer {bearer()}"})
    assert response.status_code == status, response.text
    if reason is not None:
        assert reasons_of(error_of(response)) == [reason]


async def test_expired_key_is_refused(client: httpx.AsyncClient, running_stack: RunningStack) -> None:
    _, key = await running_stack.create_key("default", "--expires-in-days", str(2 / 86400))  # two seconds

    async def expired() -> bool:
        response = await post(client, {"X-API-Key": key})
        return response.status_code == 401 and reasons_of(error_of(response)) == ["API_KEY_EXPIRED"]

    await eventually(expired)


async def test_rate_limit_answers_429_with_retry_after_and_the_limit(
    client: httpx.AsyncClient, running_stack: RunningStack
) -> None:
    key_id, key = await running_stack.create_key("tiny")
    await eventually(lambda: _accepted(client, key))  # the gate has loaded the key; that used one of five
    statuses = [(await post(client, {"X-API-Key": key})).status_code for _ in range(6)]
    assert statuses == [200, 200, 200, 200, 429, 429]
    refused = await post(client, {"X-API-Key": key})
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    error = error_of(refused)
    assert reasons_of(error) == ["RATE_LIMITED"]
    assert quota_violations_of(error)[0]["subject"] == f"key:{key_id}/requests_per_minute"


async def _accepted(client: httpx.AsyncClient, key: str) -> bool:
    return (await post(client, {"X-API-Key": key})).status_code == 200


async def test_admin_creates_rotates_and_revokes_keys_over_rest(
    client: httpx.AsyncClient, running_stack: RunningStack
) -> None:
    admin = {"X-API-Key": running_stack.key}  # the development key has every scope
    created = await client.post("/v1/admin/keys", json={"name": "reports", "scopes": ["process"]}, headers=admin)
    assert created.status_code == 200, created.text
    first = created.json()
    assert first["secret"].startswith(first["apiKey"]["prefix"])
    assert await _accepted(client, first["secret"])  # this replica knows its own new key at once

    listed = await client.get("/v1/admin/keys", headers=admin)
    assert first["apiKey"]["keyId"] in {k["keyId"] for k in listed.json()["apiKeys"]}
    assert "secret" not in listed.text
    assert "keyHash" not in listed.text

    rotated = await client.post(f"/v1/admin/keys/{first['apiKey']['keyId']}:rotate", json={}, headers=admin)
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()
    assert second["revoked"]["revokedAt"]
    assert await _accepted(client, second["secret"])
    old = await post(client, {"X-API-Key": first["secret"]})
    assert reasons_of(error_of(old)) == ["API_KEY_REVOKED"]

    not_admin = await client.get("/v1/admin/keys", headers={"X-API-Key": second["secret"]})
    assert not_admin.status_code == 403
    assert reasons_of(error_of(not_admin)) == ["SCOPE_MISSING"]


async def test_dry_run_explains_and_records_nothing(client: httpx.AsyncClient, running_stack: RunningStack) -> None:
    headers = {"X-API-Key": running_stack.key}
    allowed = await client.post("/v1/process:dryRun", json={"request": SUMMARIZE}, headers=headers)
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["decision"] == "ALLOW"
    assert allowed.json()["rule"] == "profiles.default"
    denied = await client.post(
        "/v1/process:dryRun", json={"request": {**SUMMARIZE, "payload": {"txt": "x"}}}, headers=headers
    )
    body = denied.json()
    assert (body["decision"], body["reasonCode"], body["rule"]) == (
        "DENY",
        "REASON_CODE_PAYLOAD_INVALID",
        "actions.summarize.input",
    )
    assert {v["field"] for v in body["fieldViolations"]} == {"payload.txt", "payload.text"}
    async with running_stack.connect(Identity.MEMORY, as_=Identity.OPERATOR) as channel:
        trail = await memory_pb2_grpc.MemoryServiceStub(channel).GetAuditTrail(
            memory_pb2.GetAuditTrailRequest(trace_id=body["traceId"]), timeout=5
        )
    assert list(trail.events) == []


async def test_policy_reloads_on_sighup_and_keeps_the_last_good_one(
    client: httpx.AsyncClient, running_stack: RunningStack
) -> None:
    headers = {"X-API-Key": running_stack.key}

    async def version() -> str:
        response = await client.get("/v1/actions", headers=headers)
        result: str = response.json()["policyVersion"]
        return result

    gate = next(s.process for s in running_stack.stack.services if s.name == "gate")
    assert gate is not None
    original_text = running_stack.policy_file.read_text()
    before = await version()
    try:
        running_stack.policy_file.write_text(original_text + "\n# a comment changes the content hash\n")
        gate.send_signal(signal.SIGHUP)
        await eventually(lambda: _differs(version, before))
        reloaded = await version()
        running_stack.policy_file.write_text("actions: {}\nprofiles: nonsense\n")
        gate.send_signal(signal.SIGHUP)
        await eventually(lambda: _metric_at_least(running_stack, 'gate_policy_reloads_total{result="failure"}', 1))
        assert await version() == reloaded  # the invalid file was refused; the last good policy stands
        assert await _accepted(client, running_stack.key)
    finally:
        running_stack.policy_file.write_text(original_text)
        gate.send_signal(signal.SIGHUP)
        await eventually(lambda: _equals(version, before))


async def _differs(version: Any, before: str) -> bool:
    return bool(await version() != before)


async def _equals(version: Any, before: str) -> bool:
    return bool(await version() == before)


async def _metric_at_least(running_stack: RunningStack, sample: str, value: float) -> bool:
    url = f"http://127.0.0.1:{running_stack.stack.config.ports.gate_metrics}/metrics"
    async with httpx.AsyncClient() as metrics:
        text = (await metrics.get(url)).text
    line = next((line for line in text.splitlines() if line.startswith(sample)), None)
    return line is not None and float(line.rsplit(" ", 1)[1]) >= value


@pytest_asyncio.fixture(loop_scope="session")
async def two_redis_gates(running_stack: RunningStack, tmp_path: Any) -> AsyncIterator[list[str]]:
    """Two more gate replicas sharing limits through the real Redis, beside the stack's own memory and
    executor."""
    env = dict(running_stack.stack.env)
    env.update(
        {
            **running_stack.stack.config.identity_environment(Identity.GATE),
            "TECHNO_GATE_LIMITS_BACKEND": "redis",
            "TECHNO_GATE_LIMITS_KEY_PREFIX": f"techno-e2e-{time.time_ns()}:",
            "TECHNO_TRACE_EXPORTER": "none",
        }
    )
    processes, targets = [], []
    for index in range(2):
        port = free_port()
        env_i = {
            **env,
            "TECHNO_GATE_PORT": str(port),
            "TECHNO_GATE_METRICS_PORT": "0",
            "TECHNO_GATE_HEALTH_PORT": "0",  # the stack's gate has the configured one
            "TECHNO_GATE_ID": f"g{index}",
        }
        with (tmp_path / f"gate-{index}.log").open("wb") as log:  # the child keeps its own descriptor
            processes.append(
                await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "techno_gate", env=env_i, stdout=log, stderr=log
                )
            )
        targets.append(f"127.0.0.1:{port}")
    try:
        for target in targets:
            await eventually(lambda target=target: _serving(running_stack, target), within=20)  # type: ignore[misc]
        yield targets
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            assert await process.wait() == 0  # a clean, graceful stop


def _as_edge(running_stack: RunningStack, target: str) -> grpc.aio.Channel:
    return running_stack.connect(Identity.GATE, as_=Identity.EDGE, address=target)


async def _serving(running_stack: RunningStack, target: str) -> bool:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with _as_edge(running_stack, target) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.aio.AioRpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


async def _process_on(running_stack: RunningStack, target: str, key: str) -> str:
    payload = struct_pb2.Struct()
    payload.update({"text": "hammer"})
    request = gate_pb2.ProcessRequest(action="summarize", context_id="e2e", payload=payload)
    async with _as_edge(running_stack, target) as channel:
        try:
            await gate_pb2_grpc.GateServiceStub(channel).Process(request, metadata=[("x-api-key", key)], timeout=10)
        except grpc.aio.AioRpcError as error:
            info = error_info_of(rpc_status_of(error))
            return info.reason if info else error.code().name
    return "OK"


async def test_two_replicas_share_limits_exactly_and_both_see_a_revocation(
    running_stack: RunningStack, two_redis_gates: list[str]
) -> None:
    key_id, key = await running_stack.create_key("tiny")  # five at once, then one a minute

    known: set[str] = set()

    async def known_everywhere() -> bool:  # a dry run costs the admin family's budget: ask each gate until it knows
        for target in set(two_redis_gates) - known:
            if await _dry_run_ok(running_stack, target, key):
                known.add(target)
        return known == set(two_redis_gates)

    await eventually(known_everywhere)
    outcomes = await asyncio.gather(*(_process_on(running_stack, two_redis_gates[i % 2], key) for i in range(40)))
    assert outcomes.count("OK") == 5
    assert outcomes.count("RATE_LIMITED") == 35

    async with running_stack.connect(Identity.MEMORY, as_=Identity.OPERATOR) as channel:
        await memory_pb2_grpc.MemoryServiceStub(channel).RevokeApiKey(
            memory_pb2.RevokeApiKeyRequest(key_id=key_id), timeout=5
        )

    async def refused_everywhere() -> bool:
        revoked = [await _process_on(running_stack, target, key) for target in two_redis_gates]
        return all(reason == "API_KEY_REVOKED" for reason in revoked)

    await eventually(refused_everywhere, within=3)  # refresh every 0.5 s: well within a second in practice


async def _dry_run_ok(running_stack: RunningStack, target: str, key: str) -> bool:
    from techno.gate.v1 import admin_pb2, admin_pb2_grpc

    payload = struct_pb2.Struct()
    payload.update({"text": "probe"})
    request = admin_pb2.DryRunRequest(
        request=gate_pb2.ProcessRequest(action="summarize", context_id="e2e", payload=payload)
    )
    async with _as_edge(running_stack, target) as channel:
        try:
            reply = await admin_pb2_grpc.GateAdminServiceStub(channel).DryRun(
                request, metadata=[("x-api-key", key)], timeout=5
            )
        except grpc.aio.AioRpcError:
            return False
    return bool(reply.decision == "ALLOW")
