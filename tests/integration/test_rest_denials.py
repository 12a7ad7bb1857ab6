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

from techno.memory.v1 import memory_pb2, memory_pb2_grpc
from techno_core.identity import Identity
from techno_core.server import GrpcApp
from techno_edge.bootstrap import EdgeServer
from techno_edge.bootstrap import bootstrap as edge_bootstrap
from techno_edge.settings import EdgeSettings
from techno_executor.bootstrap import bootstrap as executor_bootstrap
from techno_executor.settings import ExecutorSettings
from techno_gate.bootstrap import bootstrap as gate_bootstrap
from techno_gate.domain.keys import generate_key
from techno_gate.settings import GateSettings
from techno_memory.bootstrap import bootstrap as memory_bootstrap
from techno_memory.settings import MemorySettings
from techno_stack.stack import free_port
from tests.tls import as_identity, connect

from .gate.test_gate_services import migrated_sqlite

POLICY = Path(__file__).resolve().parents[1] / "e2e" / "policy.yaml"
SUMMARIZE = {"action": "summarize", "contextId": "public-1", "payload": {"text": "governed"}}


@dataclass
class Stack:
    memory: GrpcApp
    executor: GrpcApp
    gate: GrpcApp
    edge: EdgeServer

    async def key(self, profile: str) -> str:
        key = generate_key()
        # As the operator's techno-keys does.
        async with connect(self.memory.address, identity=Identity.OPERATOR, server=Identity.MEMORY) as channel:
            await memory_pb2_grpc.MemoryServiceStub(channel).CreateApiKey(
                memory_pb2.CreateApiKeyRequest(
                    key_id=key.key_id, prefix=key.prefix, key_hash=key.key_hash, name="t", profile=profile
                )
            )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.edge.port}", timeout=5) as client:
            for _ in range(100):  # until the gate's key cache has refreshed (every 0.5 s): not 401 any more
                # (a key of a profile the policy lacks is known, and refused with 403 PROFILE_UNKNOWN)
                if (await client.get("/v1/actions", headers={"X-API-Key": key.secret})).status_code != 401:
                    return key.secret
                await asyncio.sleep(0.05)
        pytest.fail("the gate never learned of the new key")


StackFactory = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def make_stack(tmp_path: Path, tracer_provider: TracerProvider) -> AsyncIterator[StackFactory]:
    started: list[Any] = []

    async def make(*, gate: dict[str, Any] | None = None, executor: dict[str, Any] | None = None) -> Stack:
        url = await migrated_sqlite(tmp_path / "memory.db")
        memory = await memory_bootstrap(
            MemorySettings(
                **as_identity(Identity.MEMORY), memory_database_url=url, memory_port=0, memory_metrics_port=0
            ),
            tracer_provider=tracer_provider,
        )
        await memory.start()
        started.append(memory)
        executor_app = await executor_bootstrap(
            ExecutorSettings(
                **as_identity(Identity.EXECUTOR),
                executor_id="ex",
                executor_port=0,
                executor_metrics_port=0,
                memory_target=memory.address,
                **(executor or {}),
            ),
            tracer_provider=tracer_provider,
        )
        await executor_app.start()
        started.append(executor_app)
        gate_settings = {
            **as_identity(Identity.GATE),
            "gate_port": 0,
            "gate_metrics_port": 0,
            "memory_target": memory.address,
            "executor_target": executor_app.address,
            "gate_policy_file": str(POLICY),
            "gate_audit_timeout_seconds": 1.0,
            **(gate or {}),
        }
        gate_app = await gate_bootstrap(GateSettings(**gate_settings), tracer_provider=tracer_provider)
        await gate_app.start()
        started.append(gate_app)
        edge = await edge_bootstrap(
            EdgeSettings(**as_identity(Identity.EDGE), edge_port=0, gate_target=gate_app.address),
            tracer_provider=tracer_provider,
        )
        await edge.start()
        started.append(edge)
        return Stack(memory, executor_app, gate_app, edge)

    yield make
    for app in reversed(started):
        await app.stop()


async def post(stack: Stack, key: str, body: dict[str, Any] = SUMMARIZE) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.edge.port}", timeout=10) as client:
        return await client.post("/v1/process", json=body, headers={"X-API-Key": key})


def assert_error(response: httpx.Response, status: int, reason: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["reason_codes"] == [reason]
    assert error["code"] == status
    assert error["trace_id"] == response.headers["X-Trace-Id"]
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
    assert error["quota_violations"][0]["subject"].endswith("/in_flight")
    assert (await first).status_code == 200
    assert (await post(stack, key)).status_code == 200  # the slot was released


async def _until_in_flight(stack: Stack) -> None:
    for _ in range(200):
        if stack.executor.registry.get_sample_value("grpc_server_in_flight_requests"):
            return
        await asyncio.sleep(0.01)
    pytest.fail("the first request never reached the executor")


async def test_auth_not_loaded_yet_is_503(make_stack: StackFactory) -> None:
    stack = await make_stack()
    key = await stack.key("default")
    unreachable = f"127.0.0.1:{free_port()}"
    lonely_gate = await gate_bootstrap(
        GateSettings(
            **as_identity(Identity.GATE),
            gate_port=0,
            gate_metrics_port=0,
            memory_target=unreachable,
            executor_target=stack.executor.address,
            gate_policy_file=str(POLICY),
        )
    )
    await lonely_gate.start()
    edge = await edge_bootstrap(
        EdgeSettings(**as_identity(Identity.EDGE), edge_port=0, gate_target=lonely_gate.address)
    )
    await edge.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{edge.port}", timeout=10) as client:
            response = await client.post("/v1/process", json=SUMMARIZE, headers={"X-API-Key": key})
        assert_error(response, 503, "AUTH_UNAVAILABLE")
    finally:
        await edge.stop()
        await lonely_gate.stop()
