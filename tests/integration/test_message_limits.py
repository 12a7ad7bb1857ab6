"""A message over the size limit is the transport failing, never the caller's quota (issue #11, item 5): gRPC
answers it RESOURCE_EXHAUSTED without a reason, and passing it on as such made the edge answer 429 (retry later,
forever). It is an internal failure (500), its reason the caller's default; a service's own RESOURCE_EXHAUSTED
(a rate limit, with its reason) still passes on as it is."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from techno_core import errors
from techno_core.channels import MAX_MESSAGE_BYTES
from techno_core.grpc_errors import from_rpc_error, to_grpc_status

BIG = "/test.Big/Answer"
LIMITED = "/test.Big/Limited"


async def answer(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return b"x" * (MAX_MESSAGE_BYTES + 1)


async def limited(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    refusal = errors.ResourceExhausted(reason="RATE_LIMITED", message="slow down", retry_after_seconds=1.0)
    aio_context: Any = context  # grpc-stubs lacks the aio context's abort_with_status
    await aio_context.abort_with_status(to_grpc_status(refusal))
    raise AssertionError("unreachable")


@pytest.fixture
async def address() -> AsyncIterator[str]:
    handlers = {
        "Answer": grpc.unary_unary_rpc_method_handler(answer),
        "Limited": grpc.unary_unary_rpc_method_handler(limited),
    }
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Big", handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)


async def failure(address: str, method: str) -> grpc.aio.AioRpcError:
    async with grpc.aio.insecure_channel(address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await channel.unary_unary(method, None, None)(b"", timeout=10)
    return raised.value


async def test_a_message_over_the_limit_is_an_internal_failure_not_a_quota(address: str) -> None:
    error = await failure(address, BIG)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # what gRPC itself says
    mapped = from_rpc_error(error, default_reason="MEMORY_UNAVAILABLE")
    assert not isinstance(mapped, errors.ResourceExhausted)
    assert isinstance(mapped, errors.Internal)
    assert mapped.reason == "MEMORY_UNAVAILABLE"
    assert "larger than max" not in mapped.message  # the transport's text stays in the log
    assert mapped.retry_after_seconds is None


async def test_a_services_own_quota_refusal_passes_on(address: str) -> None:
    mapped = from_rpc_error(await failure(address, LIMITED), default_reason="MEMORY_UNAVAILABLE")
    assert isinstance(mapped, errors.ResourceExhausted)
    assert mapped.reason == "RATE_LIMITED"
    assert mapped.retry_after_seconds == 1.0
