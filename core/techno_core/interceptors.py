"""Server interceptors, one concern each. ``server_interceptors`` declares their order in one list.

Order, outermost first: tracing (so every later step, log line, error and metric exemplar carries the trace
id), metrics (so they observe the final status code), authorization between services (when the transport is
mutual TLS), error mapping (turns domain errors and crashes into statuses). Outermost first because grpc.aio
calls the first interceptor first and each wraps the handler its continuation returns: the tracing wrapper opens
the span around everything the later ones run.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from techno_core import errors, tracing
from techno_core.grpc_errors import to_grpc_status
from techno_core.metrics import trace_exemplar
from techno_core.tracing import current_trace_id

UnaryBehavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
# A server-streaming behaviour whose answer is written by yielding (ours: StreamProcess, StreamExecute).
StreamBehavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncGenerator[Any, None]]
log = logging.getLogger(__name__)

# Seconds; spans sub-millisecond internal hops up to the 30 s provider timeout.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class WrappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Base for interceptors that wrap unary-unary behaviours (most of our RPCs) and, when ``wrap_stream`` says
    so, server-streaming ones written by yielding; anything else (health Watch, reflection) passes untouched.

    grpc.aio asks the interceptors for a handler on every call. When the inner handler is the one wrapped last
    time for that method (it is for the innermost interceptor, whose continuation returns the servicer's own
    handler), the wrapped one is reused instead of building a closure and a handler per call. Only registered
    methods get here (an unknown one has no handler), so the cache is bounded by the services' methods."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    def wrap(self, behavior: UnaryBehavior, method: str) -> UnaryBehavior:
        raise NotImplementedError

    def wrap_stream(self, behavior: StreamBehavior, method: str) -> StreamBehavior | None:
        """``behavior`` of a server-streaming method wrapped, or None to leave streams alone (the default)."""
        return None

    def deserializer(self, deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
        """The request deserializer of the wrapped handler; the inner handler's own unless overridden."""
        return deserializer

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        if handler.unary_unary is None:  # off the unary hot path: the rarer streaming calls
            return self._stream_handler(handler, handler_call_details.method)
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            wrapped = grpc.unary_unary_rpc_method_handler(
                self.wrap(handler.unary_unary, method),
                request_deserializer=self.deserializer(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
            cached = self._wrapped[method] = (handler, wrapped)
        return cached[1]

    def _stream_handler(self, handler: Any, method: str) -> Any:
        # Only answers written by yielding: a behaviour that writes with ``context.write`` and returns None (the
        # health service's Watch) is not an async generator and is left as it is.
        if not inspect.isasyncgenfunction(handler.unary_stream):
            return handler
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        behavior = self.wrap_stream(handler.unary_stream, method)
        if behavior is None:
            return handler
        wrapped = grpc.unary_stream_rpc_method_handler(
            behavior,
            request_deserializer=self.deserializer(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
        self._wrapped[method] = (handler, wrapped)
        return wrapped


class MetricsInterceptor(WrappingInterceptor):
    """RED metrics per RPC, named as in go-grpc-prometheus so existing dashboards and alerts apply.

    A server-streaming RPC is counted under the same names: in flight from its start, handled with its final
    code when the stream ends, its handling time the whole stream (first byte to last message). A stream the
    client abandons ends CANCELLED. Its messages are counted in ``grpc_server_msg_sent_total``; unary RPCs are
    left out of that one (each sends one message per OK call, which ``grpc_server_handled_total`` says)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        labels = ["grpc_service", "grpc_method"]
        self._handled = Counter(
            "grpc_server_handled_total", "RPCs completed, by status code.", [*labels, "grpc_code"], registry=registry
        )
        self._seconds = Histogram(
            "grpc_server_handling_seconds", "Time to handle an RPC.", labels, buckets=LATENCY_BUCKETS, registry=registry
        )
        self._in_flight = Gauge("grpc_server_in_flight_requests", "RPCs being handled now.", registry=registry)
        self._sent = Counter(
            "grpc_server_msg_sent_total", "Messages sent by server-streaming RPCs.", labels, registry=registry
        )
        self._children: dict[str, tuple[Any, dict[grpc.StatusCode, Any]]] = {}
        self._sent_children: dict[str, Any] = {}

    def _method_children(self, method: str) -> tuple[Any, dict[grpc.StatusCode, Any]]:
        """The histogram child and one counter child per status code of ``method``, made on its first call and
        kept: ``labels()`` hashes and locks, and 17 of them per RPC were a tenth of a service's CPU. Every code is
        made at once, so each method exposes zeros from its first call and rate() sees the first error."""
        children = self._children.get(method)
        if children is None:
            service, _, name = method.lstrip("/").rpartition("/")
            handled = {code: self._handled.labels(service, name, code.name) for code in grpc.StatusCode}
            children = self._children[method] = (self._seconds.labels(service, name), handled)
        return children

    def wrap(self, behavior: UnaryBehavior, method: str) -> UnaryBehavior:
        seconds, handled = self._method_children(method)

        async def observed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            start = time.perf_counter()
            self._in_flight.inc()
            code = grpc.StatusCode.UNKNOWN
            try:
                response = await behavior(request, context)
                code = context.code() or grpc.StatusCode.OK
                return response
            except BaseException as error:
                code = ended_with(context, error)
                raise
            finally:
                self._in_flight.dec()
                # Still inside the tracing interceptor's span: the exemplar names this call's trace.
                seconds.observe(time.perf_counter() - start, exemplar=trace_exemplar())
                handled[code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN].inc()

        return observed

    def wrap_stream(self, behavior: StreamBehavior, method: str) -> StreamBehavior:
        seconds, handled = self._method_children(method)
        sent = self._sent_children.get(method)
        if sent is None:
            service, _, name = method.lstrip("/").rpartition("/")
            sent = self._sent_children[method] = self._sent.labels(service, name)

        async def observed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncGenerator[Any, None]:
            start = time.perf_counter()
            self._in_flight.inc()
            code = grpc.StatusCode.UNKNOWN
            try:
                async with contextlib.aclosing(behavior(request, context)) as responses:
                    async for response in responses:
                        yield response
                        sent.inc()  # grpc.aio asks for the next message once it has written this one
                code = context.code() or grpc.StatusCode.OK
            except BaseException as error:
                code = ended_with(context, error)
                raise
            finally:
                self._in_flight.dec()
                seconds.observe(time.perf_counter() - start, exemplar=trace_exemplar())
                handled[code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN].inc()

        return observed


def ended_with(context: grpc.aio.ServicerContext[Any, Any], error: BaseException) -> Any:
    """The status of a call its behaviour left by raising ``error``: the one it aborted with, else CANCELLED when
    the call was cancelled under it (the client went away: grpc.aio cancels the call's task, or closes a stream's
    generator), DEADLINE_EXCEEDED when that was its deadline, UNKNOWN for anything else."""
    code = context.code()
    if code is not None:
        return code
    if not isinstance(error, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.UNKNOWN
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


class _Undecodable:
    """Stands for a request whose bytes protobuf refused (malformed, or nested past its depth limit of 100
    messages: a ``google.protobuf.Struct`` 33 JSON levels deep)."""


UNDECODABLE = _Undecodable()


def tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """grpc.aio answers a deserializer's exception UNKNOWN with the exception's text, after logging a traceback;
    this one hands ``UNDECODABLE`` on to the error mapping instead, which answers INVALID_ARGUMENT."""
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError:
            return UNDECODABLE

    return deserialize


class ErrorMappingInterceptor(WrappingInterceptor):
    """The one place where exceptions of unary calls become statuses: a ``DomainError`` is answered with its code
    and ``google.rpc`` details; anything else is logged with its traceback and answered INTERNAL with a generic
    message and the trace id, so no internals reach the caller. A request protobuf cannot decode is answered
    INVALID_ARGUMENT (reason ``INVALID_ARGUMENT``) before the servicer sees it. Streams get the same answers from
    ``stream_interceptors``, through ``abort_undecodable`` and ``abort_for``."""

    def deserializer(self, deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
        # The interceptors outside this one copy the deserializer of the handler they wrap, so this one is used.
        return tolerant(deserializer)

    def wrap(self, behavior: UnaryBehavior, method: str) -> UnaryBehavior:
        async def mapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if request is UNDECODABLE:
                await abort_undecodable(context, method)
            try:
                return await behavior(request, context)
            except Exception as error:
                await abort_for(context, method, error)

        return mapped


async def abort_undecodable(context: grpc.aio.ServicerContext[Any, Any], method: str) -> None:
    """Ends a call whose request was ``UNDECODABLE`` with INVALID_ARGUMENT."""
    log.info("undecodable request to %s", method)
    await abort(
        context,
        errors.InvalidArgument(
            reason="INVALID_ARGUMENT",
            message="the request could not be decoded: malformed, or nested more than 32 levels deep",
        ),
    )


async def abort_for(context: grpc.aio.ServicerContext[Any, Any], method: str, error: Exception) -> None:
    """Ends the call ``error`` escaped from: a ``DomainError`` with its own status, a call the servicer had
    already aborted by re-raising, anything else INTERNAL (logged here with its traceback, never sent)."""
    if isinstance(error, errors.DomainError):
        await abort(context, error)
    if context.code() is not None:
        raise error
    log.error("unhandled error in %s", method, exc_info=error)
    internal = errors.Internal(
        reason="INTERNAL", message=f"internal error (trace id {current_trace_id() or 'unknown'})"
    )
    await abort(context, internal)


async def abort(context: grpc.aio.ServicerContext[Any, Any], error: errors.DomainError) -> None:
    """Ends the call with ``error``'s status and ``google.rpc`` details (raises grpc.aio's abort)."""
    # grpc-stubs lacks the aio context's abort_with_status; grpc.aio has had it since 1.38.
    aio_context: Any = context
    await aio_context.abort_with_status(to_grpc_status(error))


# Health probes are not traced: they are noise in traces, and the instrumentation breaks the streaming Health/Watch
# RPC (its aio wrapper awaits the response stream as a coroutine).
_HEALTH_PREFIX = "/grpc.health.v1.Health/"


def _not_health(details: grpc.HandlerCallDetails) -> bool:
    # One string test; the instrumentation's own filters.health_check() split the method name and ran a typing
    # Protocol isinstance check on every call (2 % of the executor's CPU).
    return not details.method.startswith(_HEALTH_PREFIX)


class TraceContextInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Stands in for the gRPC server instrumentation when spans are not recorded (``tracing.records``): each call
    runs in a span of the caller's trace (its ``traceparent``) or of a new one, so the logs, audit events, error
    answers and onward calls carry a trace id, without what only a recorded span needs (attributes, peer
    parsing, a proxy around the servicer context), which cost 5 % of a service's CPU for spans then dropped."""

    def __init__(self, tracer_provider: TracerProvider) -> None:
        self._tracer = tracer_provider.get_tracer(__name__)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not _not_health(handler_call_details):
            return handler
        serializers = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(self._unary(handler.unary_unary, method), **serializers)
        if inspect.isasyncgenfunction(handler.unary_stream):  # an answer written by yielding
            return grpc.unary_stream_rpc_method_handler(self._stream(handler.unary_stream, method), **serializers)
        return handler

    def _start(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> tuple[Any, object]:
        metadata = context.invocation_metadata()
        carrier = dict(metadata) if metadata else {}
        parent = propagate.extract(carrier, context=Context())
        return tracing.start_span(self._tracer, method, parent, SpanKind.SERVER)

    def _unary(self, behavior: UnaryBehavior, method: str) -> UnaryBehavior:
        async def traced(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            span, token = self._start(method, context)
            try:
                return await behavior(request, context)
            finally:
                tracing.end_span(span, token)

        return traced

    def _stream(self, behavior: Callable[..., AsyncIterator[Any]], method: str) -> Callable[..., AsyncIterator[Any]]:
        async def traced(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            span, token = self._start(method, context)
            try:
                async for response in behavior(request, context):
                    yield response
            finally:
                tracing.end_span(span, token)

        return traced


def tracing_interceptor(tracer_provider: TracerProvider) -> grpc.aio.ServerInterceptor:  # type: ignore[type-arg]
    """The official instrumentation when spans are recorded (a span per call, with the RPC's attributes and
    status), the lean trace context alone when they are not."""
    if tracing.records(tracer_provider):
        return aio_server_interceptor(tracer_provider=tracer_provider, filter_=_not_health)  # type: ignore[no-untyped-call,no-any-return]
    return TraceContextInterceptor(tracer_provider)


def server_interceptors(tracer_provider: TracerProvider, registry: CollectorRegistry, authorization: Any) -> list[Any]:
    """``authorization`` comes after metrics, so a refused call is counted with its status like any other, and
    before error mapping and the servicer, so nothing of the service runs for a peer that may not call it."""
    return [
        tracing_interceptor(tracer_provider),
        MetricsInterceptor(registry),
        *([authorization] if authorization is not None else []),
        ErrorMappingInterceptor(),
    ]
