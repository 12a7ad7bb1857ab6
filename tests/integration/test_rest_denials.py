"""REST-level denials that need a failure injected: the real edge, gate, executor and memory servers on
loopback in one process, with one dependency broken or one limit made tiny per case. Each case checks the
HTTP status, the JSON error body and its reason code (the rest are covered end to end in tests/e2e)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider

from techno_core.server import GrpcApp
from techno_edge.bootstrap import EdgeServer
from techno_stack.stack import free_port
from tests.integration.keys import store_key
from tests.integration.services import InProcess, migrated_sqlite
from tests.rest_errors import quota_violations_of, reasons_of, trace_id_of
from tests.waiting import eventually

POLICY = Path(__file__).resolve().parents[1] / "e2e" / "policy.yaml"
SUMMARIZE = {"action": "summarize", "contextId": "public-1", "payload": {"text": "governed"}}


@dataclass
class Stack:
    memory: GrpcApp
    executor: GrpcApp
    gate: GrpcApp
    edge: EdgeServer

    async def key(self, profile: str) -> str:
        key = await store_key(self.memory.address, name="t", profile=profile)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.edge.port}", timeout=5) as client:

            async def known() -> bool:
                # Until the gate's key cache has refreshed (every 0.5 s): not 401 any more (a key of a profile the
                # policy lacks is known, and refused with 403 PROFILE_UNKNOWN).
                return (await client.get("/v1/actions", headers={"X-API-Key": key.secret})).status_code != 401

            await eventually(known, within=5)
        return key.secret


StackFactory = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def make_stack(tmp_path: Path, tracer_provider: TracerProvider) -> AsyncIterator[StackFactory]:
    async with InProcess(tracer_provider) as start:

        async def make(*, gate: dict[str, Any] | None = None, executor: dict[str, Any] | None = None) -> Stack:
            memory = await start.memory(await migrated_sqlite(tmp_path / "memory.db"))
            executor_app = await start.executor(memory, executor_id="ex", **(executor or {}))
            gate_app = await start.gate(
                memory, executor_app, policy_file=POLICY, gate_audit_timeout_seconds=1.0, **(gate or {})
            )
            return Stack(memory, executor_app, gate_app, await start.edge(gate_app))

        yield make


async def post(stack: Stack, key: str, body: dict[str, Any] = SUMMARIZE) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.edge.port}", timeout=10) as client:
        return await client.post("/v1/process", json=body, headers={"X-API-Key": key})


def assert_error(response: httpx.Response, status: int, reason: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert reasons_of(error) == [reason]
    assert error["code"] == status
    assert trace_id_of(error) == response.headers["X-Trace-Id"]
    return error


async def test_audit_down_is_503_and_nothing_runs(make_stack: StackFactory) -> None:
    stack = await make_stack()
    key = await stack.key("default")
    assert stack.executor.registry.get_sample_value("executor_calls_total", {"executor": "ex"}) is None
    await stack.memory.stop()
    assert_error(await post(stack, key), 503, "AUDIT_UNAVAILABLE")
    assert stack.executor.registry.get_sample_value("executor_calls_total", {"executor": "ex"}) is None


async def test_unknown_profile_is_403(make_stack: StackFactory) -> None:
    stack = await make_stack()
    assert_error(await post(stack, await stack.key("ghost")), 403, "PROFILE_UNKNOWN")


async def test_limit_store_down_fails_closed_with_503(make_stack: StackFactory) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    stack = await make_stack(gate={"gate_limits_backend": "redis", "gate_redis_url": closed})
    assert_error(await post(stack, await stack.key("single")), 503, "LIMITS_UNAVAILABLE")


async def test_limit_store_down_can_be_configured_to_fail_open(make_stack: StackFactory) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    stack = await make_stack(
        gate={"gate_limits_backend": "redis", "gate_redis_url": closed, "gate_limits_on_store_unavailable": "allow"}
    )
    key = await stack.key("single")  # waiting for the key costs store failures too (/v1/actions is limited)
    failures = {"action": "allowed"}
    before = stack.gate.registry.get_sample_value("gate_limit_store_failures_total", failures) or 0
    response = await post(stack, key)
    assert response.status_code == 200, response.text
    assert stack.gate.registry.get_sample_value("gate_limit_store_failures_total", failures) == before + 1
    assert stack.executor.registry.get_sample_value("executor_calls_total", {"executor": "ex"}) == 1


async def test_too_many_in_flight_is_429(make_stack: StackFactory) -> None:
    stack = await make_stack(executor={"fake_latency_ms": 1000})
    key = await stack.key("single")  # max_in_flight 1
    first = asyncio.create_task(post(stack, key))
    await _until_in_flight(stack)
    error = assert_error(await post(stack, key), 429, "CONCURRENCY_LIMITED")
    assert quota_violations_of(error)[0]["subject"].endswith("/in_flight")
    assert (await first).status_code == 200
    assert (await post(stack, key)).status_code == 200  # the slot was released


async def _until_in_flight(stack: Stack) -> None:
    for _ in range(200):
        if stack.executor.registry.get_sample_value("grpc_server_in_flight_requests"):
            return
        await asyncio.sleep(0.01)
    pytest.fail("the first request never reached the executor")


async def test_auth_not_loaded_yet_is_503(make_stack: StackFactory, tracer_provider: TracerProvider) -> None:
    stack = await make_stack()
    key = await stack.key("default")
    unreachable = f"127.0.0.1:{free_port()}"
    async with InProcess(tracer_provider) as start:
        lonely_gate = await start.gate(unreachable, stack.executor, policy_file=POLICY)
        edge = await start.edge(lonely_gate)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{edge.port}", timeout=10) as client:
            response = await client.post("/v1/process", json=SUMMARIZE, headers={"X-API-Key": key})
        assert_error(response, 503, "AUTH_UNAVAILABLE")
