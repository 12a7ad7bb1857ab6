"""The server's interceptor: trace context, metrics, authorization between services and error mapping, fused.

grpc.aio asks every interceptor for a handler on every call, and each interceptor's wrapper is one more coroutine
per call: four of them, one per concern, were about 15 % of a service's CPU. So one interceptor builds, once per
method, one wrapper that runs the four concerns in their order, outermost first:

1. trace context (``TraceContext``), so every later step, log line, error and metric exemplar carries the trace id;
2. metrics (``MethodMetrics``), which observe the final status code, a refused or undecodable call's included;
3. authorization between services (``authorization.Authorization``, when the transport is mutual TLS), before any
   of the service's code;
4. error mapping (``abort_undecodable``, ``abort_for``): domain errors and crashes become statuses.

Each concern stays a small object or function of its own; only their composition is fused. When spans are
recorded (an exporter is configured), OpenTelemetry's own interceptor runs outermost instead of step 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
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
from techno_core.authorization import Authorization
from techno_core.grpc_errors import to_grpc_status
from techno_core.metrics import trace_exemplar
from techno_core.tracing import current_trace_id

UnaryBehavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
# A server-streaming behaviour whose answer is written by yielding (ours: StreamProcess, StreamExecute).
StreamBehavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncGenerator[Any, None]]
log = logging.getLogger(__name__)

# Seconds; spans sub-millisecond internal hops up to the 30 s provider timeout.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# Health probes are not traced: they are noise in traces, and the instrumentation breaks the streaming Health/Watch
# RPC (its aio wrapper awaits the response stream as a coroutine).
_HEALTH_PREFIX = "/grpc.health.v1.Health/"


class TraceContext:
    """Stands in for the gRPC server instrumentation when spans are not recorded (``tracing.records``): each call
    runs in a span of the caller's trace (its ``traceparent``) or of a new one, so the logs, audit events, error
    answers and onward calls carry a trace id, without what only a recorded span needs (attributes, peer
    parsing, a proxy around the servicer context), which cost 5 % of a service's CPU for spans then dropped."""

    def __init__(self, tracer_provider: TracerProvider) -> None:
        self._tracer = tracer_provider.get_tracer(__name__)

    def start(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> tuple[Any, object]:
        """The call's span, made current; ``tracing.end_span`` ends it."""
        metadata = context.invocation_metadata()
        carrier = dict(metadata) if metadata else {}
        parent = propagate.extract(carrier, context=Context())
        return tracing.start_span(self._tracer, method, parent, SpanKind.SERVER)


class MethodMetrics:
    """The RED metrics of one method: its histogram child and one counter child per status code, made once."""

    __slots__ = ("_handled", "_in_flight", "_seconds", "sent")

    def __init__(self, seconds: Any, handled: dict[grpc.StatusCode, Any], in_flight: Gauge, sent: Any) -> None:
        self._seconds, self._handled, self._in_flight, self.sent = seconds, handled, in_flight, sent

    def started(self) -> float:
        self._in_flight.inc()
        return time.perf_counter()

    def ended(self, start: float, code: Any) -> None:
        self._in_flight.dec()
        # Still inside the call's span: the exemplar names this call's trace.
        self._seconds.observe(time.perf_counter() - start, exemplar=trace_exemplar())
        self._handled[code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN].inc()


class ServerMetrics:
    """RED metrics per RPC, named as in go-grpc-prometheus so existing dashboards and alerts apply.

    A server-streaming RPC is counted under the same names: in flight from its start, handled with its final
    code when the stream ends, its handling time the whole stream (first byte to last message). A stream the
    client abandons ends CANCELLED. Its messages are counted in ``grpc_server_msg_sent_total``; unary RPCs are
    left out of that one (each sends one message per OK call, which ``grpc_server_handled_total`` says)."""

    def __init__(self, registry: CollectorRegistry) -> None:
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
        self._methods: dict[str, MethodMetrics] = {}

    def of(self, method: str) -> MethodMetrics:
        """``method``'s children, made on its first call and kept: ``labels()`` hashes and locks, and 17 of them
        per RPC were a tenth of a service's CPU. Every code is made at once, so each method exposes zeros from its
        first call and rate() sees the first error. Only registered methods get here (an unknown one has no
        handler), so this is bounded by the services' methods."""
        metrics = self._methods.get(method)
        if metrics is None:
            service, _, name = method.lstrip("/").rpartition("/")
            handled = {code: self._handled.labels(service, name, code.name) for code in grpc.StatusCode}
            seconds, sent = self._seconds.labels(service, name), self._sent.labels(service, name)
            metrics = self._methods[method] = MethodMetrics(seconds, handled, self._in_flight, sent)
        return metrics


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
    """Ends the call ``error`` escaped from: a ``DomainError`` with its own status and ``google.rpc`` details, a
    call the servicer had already aborted by re-raising, anything else INTERNAL with a generic message and the
    trace id (logged here with its traceback, never sent, so no internals reach the caller)."""
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


Permits = Callable[[grpc.aio.ServicerContext[Any, Any]], bool]


class _Steps:
    """What the wrapper of one method runs besides its behaviour, looked up once when the wrapper is built."""

    __slots__ = ("authorization", "method", "metrics", "permits", "trace")

    def __init__(self, interceptor: ServerInterceptor, method: str) -> None:
        self.method = method
        traced = interceptor.trace is not None and not method.startswith(_HEALTH_PREFIX)
        self.trace = interceptor.trace if traced else None
        self.metrics = interceptor.metrics.of(method)
        self.authorization = interceptor.authorization
        self.permits: Permits | None = self.authorization.permits(method) if self.authorization else None

    def start_span(self, context: grpc.aio.ServicerContext[Any, Any]) -> tuple[Any, object] | None:
        return self.trace.start(self.method, context) if self.trace is not None else None

    async def refuse(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """Ends a call from a peer ``permits`` refused (raises)."""
        if self.authorization is not None:
            await self.authorization.refuse(context, self.method)


def unary_wrapper(behavior: UnaryBehavior, steps: _Steps) -> UnaryBehavior:
    """``behavior`` run inside the steps; one coroutine per call."""
    method, metrics, permits = steps.method, steps.metrics, steps.permits

    async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        span = steps.start_span(context)
        start = metrics.started()
        code = grpc.StatusCode.UNKNOWN
        try:
            # Plain tests first: only a refusal awaits (each await of a coroutine is one more on every call).
            if permits is not None and not permits(context):
                await steps.refuse(context)
            if request is UNDECODABLE:
                await abort_undecodable(context, method)
            try:
                response = await behavior(request, context)
            except Exception as error:
                await abort_for(context, method, error)
            code = context.code() or grpc.StatusCode.OK
            return response
        except BaseException as error:
            code = ended_with(context, error)
            raise
        finally:
            metrics.ended(start, code)
            if span is not None:
                tracing.end_span(*span)

    return handle


def stream_wrapper(behavior: StreamBehavior, steps: _Steps) -> StreamBehavior:
    """The same for a server-streaming behaviour written by yielding; its messages are counted as they go."""
    method, metrics, permits = steps.method, steps.metrics, steps.permits

    async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncGenerator[Any, None]:
        span = steps.start_span(context)
        start = metrics.started()
        code = grpc.StatusCode.UNKNOWN
        try:
            if permits is not None and not permits(context):
                await steps.refuse(context)
            if request is UNDECODABLE:
                await abort_undecodable(context, method)
            try:
                # aclosing: when the call is cancelled (grpc.aio closes this generator) the servicer's generator
                # is closed now, its provider call with it, not whenever the garbage collector finalises it.
                async with contextlib.aclosing(behavior(request, context)) as responses:
                    async for response in responses:
                        yield response
                        metrics.sent.inc()  # grpc.aio asks for the next message once it has written this one
            except Exception as error:
                await abort_for(context, method, error)
            code = context.code() or grpc.StatusCode.OK
        except BaseException as error:
            code = ended_with(context, error)
            raise
        finally:
            metrics.ended(start, code)
            if span is not None:
                tracing.end_span(*span)

    return handle


class ServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """The four concerns of the module doc in one wrapper per method, built on the method's first call and
    reused while the servicer's handler is the same (it always is: grpc.aio returns the registered one).

    Unary behaviours and server-streaming ones written by yielding get the whole wrapper and a tolerant request
    deserializer. Any other handler (the health service's Watch, which writes with ``context.write``;
    reflection) gets authorization alone. Health is not traced; its calls are counted."""

    def __init__(
        self, registry: CollectorRegistry, *, trace: TraceContext | None, authorization: Authorization | None
    ) -> None:
        self.trace = trace
        self.metrics = ServerMetrics(registry)
        self.authorization = authorization
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            cached = self._wrapped[method] = (handler, self._wrap(handler, method))
        return cached[1]

    def _wrap(self, handler: Any, method: str) -> Any:
        serializers = {
            "request_deserializer": tolerant(handler.request_deserializer),
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            behavior = unary_wrapper(handler.unary_unary, _Steps(self, method))
            return grpc.unary_unary_rpc_method_handler(behavior, **serializers)
        if inspect.isasyncgenfunction(handler.unary_stream):
            return grpc.unary_stream_rpc_method_handler(
                stream_wrapper(handler.unary_stream, _Steps(self, method)), **serializers
            )
        return self.authorization.guarded(handler, method) if self.authorization is not None else handler


def server_interceptors(
    tracer_provider: TracerProvider, registry: CollectorRegistry, authorization: Authorization | None
) -> list[Any]:
    """One interceptor when spans are not recorded. When they are, the official instrumentation (a span per call,
    with the RPC's attributes and status) runs first and the fused one inside its span."""
    if tracing.records(tracer_provider):
        official = aio_server_interceptor(tracer_provider=tracer_provider, filter_=_not_health)  # type: ignore[no-untyped-call]
        return [official, ServerInterceptor(registry, trace=None, authorization=authorization)]
    return [ServerInterceptor(registry, trace=TraceContext(tracer_provider), authorization=authorization)]


def _not_health(details: grpc.HandlerCallDetails) -> bool:
    # One string test; the instrumentation's own filters.health_check() split the method name and ran a typing
    # Protocol isinstance check on every call (2 % of the executor's CPU).
    return not details.method.startswith(_HEALTH_PREFIX)
