"""The metrics interceptor counts every call with children made once per method, and the innermost interceptor
reuses its wrapped handler across calls instead of building one per call."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from google.protobuf.struct_pb2 import Struct
from prometheus_client import CollectorRegistry

from techno_core.interceptors import UNDECODABLE, ErrorMappingInterceptor, MetricsInterceptor

METHOD = "/techno.gate.v1.GateService/Process"
LABELS = {"grpc_service": "techno.gate.v1.GateService", "grpc_method": "Process"}


class Details(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


class Context:
    """The part of a servicer context the interceptors read: the code the behaviour set."""

    def __init__(self, code: grpc.StatusCode | None = None) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode | None:
        return self._code


async def echo(request: Any, context: Any) -> Any:
    return request


SERVICER_HANDLER = grpc.unary_unary_rpc_method_handler(
    echo, request_deserializer=Struct.FromString, response_serializer=Struct.SerializeToString
)


async def handler_for(interceptor: Any, method: str = METHOD) -> Any:
    async def continuation(details: grpc.HandlerCallDetails) -> Any:
        return SERVICER_HANDLER

    return await interceptor.intercept_service(continuation, Details(method))


def test_every_call_is_counted_by_method_and_code() -> None:
    registry = CollectorRegistry()
    interceptor = MetricsInterceptor(registry)

    async def calls() -> None:
        for code in (None, None, grpc.StatusCode.NOT_FOUND):
            handler = await handler_for(interceptor)
            assert await handler.unary_unary(b"x", Context(code)) == b"x"

    asyncio.run(calls())
    handled = {
        sample.labels["grpc_code"]: sample.value
        for metric in registry.collect()
        if metric.name == "grpc_server_handled"
        for sample in metric.samples
        if sample.name == "grpc_server_handled_total" and sample.labels["grpc_method"] == "Process"
    }
    # Every code is exposed from the first call (zeros included), so a first error is seen by rate().
    assert len(handled) == len(grpc.StatusCode)
    assert (handled["OK"], handled["NOT_FOUND"], handled["UNAVAILABLE"]) == (2, 1, 0)
    assert registry.get_sample_value("grpc_server_handling_seconds_count", LABELS) == 3


def test_methods_are_labelled_apart() -> None:
    registry = CollectorRegistry()
    interceptor = MetricsInterceptor(registry)

    async def calls() -> None:
        for method in (METHOD, "/techno.gate.v1.GateService/Health", METHOD):
            await (await handler_for(interceptor, method)).unary_unary(b"x", Context())

    asyncio.run(calls())
    ok = {**LABELS, "grpc_code": "OK"}
    assert registry.get_sample_value("grpc_server_handled_total", ok) == 2
    assert registry.get_sample_value("grpc_server_handled_total", {**ok, "grpc_method": "Health"}) == 1


def test_the_innermost_wrapped_handler_is_reused_and_still_tolerates_undecodable_requests() -> None:
    interceptor = ErrorMappingInterceptor()

    async def handlers() -> tuple[Any, Any, Any]:
        return await handler_for(interceptor), await handler_for(interceptor), await handler_for(interceptor, "/x/Y")

    first, second, other = asyncio.run(handlers())
    assert first is second
    assert other is not first
    # protobuf's DecodeError becomes the marker the mapping answers INVALID_ARGUMENT
    assert first.request_deserializer(b"\xff\xff") is UNDECODABLE
    assert first.request_deserializer(Struct().SerializeToString()) == Struct()
