"""The server's interceptor counts every call with children made once per method, and reuses its wrapped handler
across calls instead of building one per call."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from google.protobuf.struct_pb2 import Struct
from prometheus_client import CollectorRegistry

from techno_core.interceptors import UNDECODABLE, ServerInterceptor

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


def interceptor_for(registry: CollectorRegistry) -> ServerInterceptor:
    """Metrics and error mapping alone: no trace context, no authorization (a plaintext transport)."""
    return ServerInterceptor(registry, trace=None, authorization=None)


async def handler_for(interceptor: Any, method: str = METHOD) -> Any:
    async def continuation(details: grpc.HandlerCallDetails) -> Any:
        return SERVICER_HANDLER

    return await interceptor.intercept_service(continuation, Details(method))


def test_every_call_is_counted_by_method_and_code() -> None:
    registry = CollectorRegistry()
    interceptor = interceptor_for(registry)

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
    interceptor = interceptor_for(registry)

    async def calls() -> None:
        for method in (METHOD, "/techno.gate.v1.GateService/Health", METHOD):
            await (await handler_for(interceptor, method)).unary_unary(b"x", Context())

    asyncio.run(calls())
    ok = {**LABELS, "grpc_code": "OK"}
    assert registry.get_sample_value("grpc_server_handled_total", ok) == 2
    assert registry.get_sample_value("grpc_server_handled_total", {**ok, "grpc_method": "Health"}) == 1


def test_the_wrapped_handler_is_reused_and_tolerates_undecodable_requests() -> None:
    interceptor = interceptor_for(CollectorRegistry())

    async def handlers() -> tuple[Any, Any, Any]:
        return await handler_for(interceptor), await handler_for(interceptor), await handler_for(interceptor, "/x/Y")

    first, second, other = asyncio.run(handlers())
    assert first is second
    assert other is not first
    # protobuf's DecodeError becomes the marker the mapping answers INVALID_ARGUMENT
    assert first.request_deserializer(b"\xff\xff") is UNDECODABLE
    assert first.request_deserializer(Struct().SerializeToString()) == Struct()


async def numbers(request: Any, context: Any) -> Any:
    for number in range(3):
        yield number


async def watch(request: Any, context: Any) -> None:
    """Writes with ``context.write`` and returns None, as the health service's Watch does."""


def stream_handler_for(interceptor: Any, behavior: Any) -> Any:
    async def continuation(details: grpc.HandlerCallDetails) -> Any:
        return grpc.unary_stream_rpc_method_handler(behavior)

    return asyncio.run(interceptor.intercept_service(continuation, Details(STREAM_METHOD)))


STREAM_METHOD = "/techno.gate.v1.GateService/StreamProcess"
STREAM_LABELS = {"grpc_service": "techno.gate.v1.GateService", "grpc_method": "StreamProcess"}


def test_a_stream_is_counted_when_it_ends_and_its_messages_on_the_way() -> None:
    registry = CollectorRegistry()
    handler = stream_handler_for(interceptor_for(registry), numbers)

    async def consume() -> list[Any]:
        return [number async for number in handler.unary_stream(b"x", Context())]

    assert asyncio.run(consume()) == [0, 1, 2]
    assert registry.get_sample_value("grpc_server_handled_total", {**STREAM_LABELS, "grpc_code": "OK"}) == 1
    assert registry.get_sample_value("grpc_server_handling_seconds_count", STREAM_LABELS) == 1
    assert registry.get_sample_value("grpc_server_msg_sent_total", STREAM_LABELS) == 3
    assert registry.get_sample_value("grpc_server_in_flight_requests") == 0


class CancelledContext(Context):
    """A call cancelled with ``remaining`` seconds left of its deadline (None: it had none)."""

    def __init__(self, remaining: float | None) -> None:
        super().__init__()
        self._remaining = remaining

    def time_remaining(self) -> float | None:
        return self._remaining


def test_a_stream_closed_before_its_end_is_cancelled_or_past_its_deadline() -> None:
    registry = CollectorRegistry()
    handler = stream_handler_for(interceptor_for(registry), numbers)

    async def abandon(context: Any) -> None:
        responses = handler.unary_stream(b"x", context)
        await anext(responses)
        await responses.aclose()  # what grpc.aio's finalizer does to a stream whose call was cancelled

    asyncio.run(abandon(CancelledContext(None)))
    asyncio.run(abandon(CancelledContext(0.0)))
    codes = {
        code: registry.get_sample_value("grpc_server_handled_total", {**STREAM_LABELS, "grpc_code": code})
        for code in ("CANCELLED", "DEADLINE_EXCEEDED", "OK", "UNKNOWN")
    }
    assert codes == {"CANCELLED": 1, "DEADLINE_EXCEEDED": 1, "OK": 0, "UNKNOWN": 0}
    assert registry.get_sample_value("grpc_server_msg_sent_total", STREAM_LABELS) == 0


def test_a_stream_written_with_context_write_is_left_alone() -> None:
    handler = stream_handler_for(interceptor_for(CollectorRegistry()), watch)
    assert handler.unary_stream is watch
