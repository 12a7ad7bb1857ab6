"""Error mapping of server-streaming RPCs (StreamExecute, StreamProcess), which ``interceptors`` leaves alone.

The unary ``ErrorMappingInterceptor`` wraps unary-unary behaviours only. A streaming behaviour is an async
generator: a ``DomainError`` it raises, before its first message or after some, must still reach the caller as
the error's code with its ``google.rpc`` details (the same reason codes as the unary call), and a crash as
INTERNAL with a generic message and the trace id, never the exception's text. This interceptor does that for
unary-stream handlers, with the same answers (``interceptors.abort_for``); it sits innermost, next to the unary
error mapping (``server.GrpcApp`` appends it), so authorization has run before any of the service's code.

Why a module of its own: the unary interceptors are on the request hot path and tuned there; streaming error
mapping is added beside them rather than woven into their wrapper. (Metrics count streams in
``interceptors.MetricsInterceptor`` itself, to share its per-method children.)
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import grpc

from techno_core.interceptors import UNDECODABLE, StreamBehavior, abort_for, abort_undecodable, tolerant


class StreamErrorMappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        # Only answers written by yielding: a behaviour that writes with ``context.write`` and returns None (the
        # health service's Watch) is not an async iterator and is left as it is.
        if handler is None or not inspect.isasyncgenfunction(handler.unary_stream):
            return handler
        return grpc.unary_stream_rpc_method_handler(
            map_stream_errors(handler.unary_stream, handler_call_details.method),
            request_deserializer=tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )


def map_stream_errors(behavior: StreamBehavior, method: str) -> StreamBehavior:
    """``behavior`` whose domain errors and crashes end the stream with a status (see the module doc)."""

    async def mapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncGenerator[Any, None]:
        if request is UNDECODABLE:
            await abort_undecodable(context, method)
        try:
            # aclosing: when the call is cancelled the servicer's generator is closed now (its provider call with
            # it), not whenever the garbage collector finalises it.
            async with contextlib.aclosing(behavior(request, context)) as responses:
                async for response in responses:
                    yield response
        except Exception as error:
            await abort_for(context, method, error)

    return mapped
