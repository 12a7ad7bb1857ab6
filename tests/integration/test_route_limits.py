"""Every authenticated RPC of the gate goes through the caller's limits (issue #11, item 4).

Each method of GateService and GateAdminService is called, with a key of the e2e policy's ``tiny`` profile
(five at once, then one a minute) of its own, until the sixth call: that one must be RESOURCE_EXHAUSTED
``RATE_LIMITED`` with a QuotaFailure and RetryInfo, whatever the earlier calls answered (an empty request may well
be refused for its content: it went through the limits first). The methods are read from the service
descriptors, so a new RPC is covered without anyone remembering to add it here.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import message_factory, struct_pb2
from google.protobuf.descriptor import MethodDescriptor
from google.rpc import error_details_pb2

from techno.gate.v1 import admin_pb2, gate_pb2, gate_pb2_grpc
from techno_core.grpc_errors import error_info_of, rpc_status_of
from techno_core.identity import Identity
from tests.integration.keys import store_keys
from tests.tls import connect
from tests.waiting import eventually

from . import test_rest_denials
from .test_rest_denials import Stack, StackFactory

make_stack = test_rest_denials.make_stack  # the fixture, shared

EVERY_SCOPE = ["process", "audit:read", "admin"]
METHODS: list[MethodDescriptor] = [
    *gate_pb2.DESCRIPTOR.services_by_name["GateService"].methods,
    *admin_pb2.DESCRIPTOR.services_by_name["GateAdminService"].methods,
]


def request_for(method: MethodDescriptor) -> Any:
    """An empty request, except for Process and StreamProcess, whose request is judged before its limits and must
    be allowed."""
    if method.name in ("Process", "StreamProcess"):
        payload = struct_pb2.Struct()
        payload.update({"text": "limited"})
        request = gate_pb2.ProcessRequest(action="summarize", context_id="it", payload=payload)
        return request if method.name == "Process" else gate_pb2.StreamProcessRequest(request=request)
    return message_factory.GetMessageClass(method.input_type)()


def caller_of(channel: grpc.aio.Channel, method: MethodDescriptor) -> Any:
    """An awaitable call of ``method`` whatever its kind (a streamed answer is read to its end)."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    options: dict[str, Any] = {"request_serializer": lambda m: m.SerializeToString(), "response_deserializer": bytes}
    if not method.server_streaming:
        return channel.unary_unary(path, **options)
    stream = channel.unary_stream(path, **options)

    async def read_all(request: Any, **kwargs: Any) -> list[bytes]:
        return [message async for message in stream(request, **kwargs)]

    return read_all


async def create_keys(stack: Stack, count: int, *, profile: str) -> list[tuple[str, str]]:
    """``count`` keys of ``profile`` with every scope, stored as techno-keys stores them; (key id, secret)."""
    keys = await store_keys(stack.memory.address, count, name="t", profile=profile, scopes=EVERY_SCOPE)
    return [(key.key_id, key.secret) for key in keys]


async def await_known(stack: Stack) -> None:
    """Until the gate's key cache holds every key created so far: a key created last is known (one refresh
    reads every key changed since the previous one), checked with a key of its own so no budget is spent."""
    [(_, probe)] = await create_keys(stack, 1, profile="default")
    async with connect(stack.gate.address, identity=Identity.EDGE, server=Identity.GATE) as channel:
        list_actions = channel.unary_unary(
            "/techno.gate.v1.GateService/ListActions",
            request_serializer=gate_pb2.ListActionsRequest.SerializeToString,
            response_deserializer=gate_pb2.ListActionsResponse.FromString,
        )

        async def known() -> bool:
            try:
                await list_actions(gate_pb2.ListActionsRequest(), metadata=[("x-api-key", probe)], timeout=5)
            except grpc.aio.AioRpcError:
                return False
            return True

        await eventually(known)


async def test_every_authenticated_rpc_is_rate_limited(make_stack: StackFactory) -> None:
    stack = await make_stack()
    keys = await create_keys(stack, len(METHODS), profile="tiny")
    await await_known(stack)
    unlimited = []
    async with connect(stack.gate.address, identity=Identity.EDGE, server=Identity.GATE) as channel:
        for method, (key_id, secret) in zip(METHODS, keys, strict=True):
            call = caller_of(channel, method)
            codes = []
            for _ in range(6):
                try:
                    await call(request_for(method), metadata=[("x-api-key", secret)], timeout=10)
                    codes.append(grpc.StatusCode.OK)
                except grpc.aio.AioRpcError as error:
                    codes.append(error.code())
                    last = error
            if codes[-1] != grpc.StatusCode.RESOURCE_EXHAUSTED or grpc.StatusCode.RESOURCE_EXHAUSTED in codes[:5]:
                unlimited.append(f"{method.name}: {[c.name for c in codes]}")
                continue
            status = rpc_status_of(last)
            info = error_info_of(status)
            assert info is not None
            assert info.reason == "RATE_LIMITED", method.name
            quota = [d for d in status.details if d.Is(error_details_pb2.QuotaFailure.DESCRIPTOR)]
            retry = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
            assert quota, method.name
            assert retry, method.name
            failure = error_details_pb2.QuotaFailure()
            quota[0].Unpack(failure)
            assert failure.violations[0].subject.startswith(f"key:{key_id}/"), failure
    assert unlimited == [], "\n".join(unlimited)


async def test_personal_routes_cannot_use_up_the_processing_budget(make_stack: StackFactory) -> None:
    """Each family of routes has its own budget: a caller who has spent its personal routes' budget still
    processes, and the other way round."""
    stack = await make_stack()
    [(_, secret)] = await create_keys(stack, 1, profile="tiny")
    await await_known(stack)
    metadata = [("x-api-key", secret)]
    async with connect(stack.gate.address, identity=Identity.EDGE, server=Identity.GATE) as channel:
        gate = gate_pb2_grpc.GateServiceStub(channel)
        for _ in range(5):
            await gate.GetPreferences(gate_pb2.GetPreferencesRequest(), metadata=metadata, timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await gate.CreateSession(gate_pb2.CreateSessionRequest(), metadata=metadata, timeout=10)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        process = request_for(gate_pb2.DESCRIPTOR.services_by_name["GateService"].methods_by_name["Process"])
        for _ in range(5):
            await gate.Process(process, metadata=metadata, timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await gate.Process(process, metadata=metadata, timeout=10)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info = error_info_of(rpc_status_of(refused.value))
    assert info is not None
    assert info.reason == "RATE_LIMITED"
