"""Zero trust on the running stack: no internal port answers a caller without a certificate of the deployment's
CA, while the REST edge (the only public door) still works, and the operator's tools work only with the
operator's certificate."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from techno_core.health import READINESS
from techno_core.identity import Identity

from .conftest import RunningStack
from .support import SUMMARIZE

pytestmark = pytest.mark.asyncio(loop_scope="session")

INTERNAL = ("gate", "executor", "memory")


async def health(channel: grpc.aio.Channel, service: str = "") -> int:
    async with channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    status: int = response.status
    return status


async def refusal(channel: grpc.aio.Channel) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await health(channel)
    return raised.value.code()


async def keys_list(running_stack: RunningStack, environment: Mapping[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "techno_gate.keys_cli", "--memory", running_stack.memory_target, "list",
        env=dict(environment), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_internal_ports_refuse_callers_without_a_certificate_while_the_edge_works(
    running_stack: RunningStack,
) -> None:
    stack = running_stack.stack
    ca = (stack.config.tls_dir / "ca.crt").read_bytes()
    refusals = {}
    for name in INTERNAL:
        address = f"127.0.0.1:{getattr(stack.config.ports, name)}"
        refusals[name] = (
            await refusal(grpc.aio.insecure_channel(address)),
            await refusal(grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=ca))),
        )
        # Its plaintext health port answers probes, and nothing else leaks through it.
        health_port = getattr(stack.config.ports, f"{name}_health")
        assert await health(grpc.aio.insecure_channel(f"127.0.0.1:{health_port}"), READINESS) == (
            health_pb2.HealthCheckResponse.SERVING
        )
    unavailable = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE)
    assert refusals == dict.fromkeys(INTERNAL, unavailable)

    async with httpx.AsyncClient(base_url=running_stack.url, timeout=10) as client:
        response = await client.post("/v1/process", json=SUMMARIZE, headers={"X-API-Key": running_stack.key})
    assert response.status_code == 200, response.text  # edge → gate → memory and executor, all mutual TLS


async def test_techno_keys_works_as_the_operator_and_not_with_the_edges_certificate(
    running_stack: RunningStack,
) -> None:
    stack = running_stack.stack
    code, out, err = await keys_list(running_stack, stack.operator_env)
    assert code == 0, err
    assert "\tdevelopment\t" in out

    as_edge = {**stack.env, **stack.config.identity_environment(Identity.EDGE)}
    code, out, err = await keys_list(running_stack, as_edge)
    assert code == 1
    assert out == ""  # not one key hash, prefix or name
    assert "PERMISSION_DENIED" in err
    assert "edge may not call /techno.memory.v1.MemoryService/ListApiKeys" in err
