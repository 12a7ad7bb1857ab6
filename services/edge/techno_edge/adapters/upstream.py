"""The gRPC side: one channel per upstream target, a generic unary or server-streaming call per binding, the
gate's readiness, and the translation of a failed call into the edge's HTTP error."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import TracerProvider

from techno_core.grpc_errors import details_of, rpc_status_of
from techno_core.identity import Identity
from techno_core.transport import Transport
from techno_edge.adapters.bindings import Binding
from techno_edge.domain.errors import HttpError, Violation, http_status_of, internal
from techno_edge.settings import GATE_SERVICES

log = logging.getLogger(__name__)

_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}
# Failures of the transport rather than answers of the service: their text names internal addresses, so the
# client gets a generic message and the log keeps the original.
_TRANSPORT_CODES = frozenset({"UNAVAILABLE", "UNKNOWN", "INTERNAL", "DEADLINE_EXCEEDED", "CANCELLED"})
# RESOURCE_EXHAUSTED without a reason is the gate's transport refusing what the edge sent (metadata or a message
# over its limits), never a rate limit, which always names its reason: the edge's fault, not the client's to
# retry, and its text lists the metadata sent.
_REFUSED_BY_TRANSPORT = "RESOURCE_EXHAUSTED"
_READINESS_TIMEOUT_SECONDS = 1.0
# A transport failure may hit a request that had already run (a replica died while answering), so the client is
# told how to retry without running it twice.
_UNAVAILABLE = (
    "the upstream service is unavailable; the request may have run: retry with the same Idempotency-Key to be safe",
    "UPSTREAM_UNAVAILABLE",
)
_TRANSPORT_FAILURES = {
    "DEADLINE_EXCEEDED": ("the upstream did not answer before the deadline", "DEADLINE_EXCEEDED"),
    "CANCELLED": ("the upstream call was cancelled", "UPSTREAM_CANCELLED"),
}

_DEBUG_INFO = "type.googleapis.com/" + error_details_pb2.DebugInfo.DESCRIPTOR.full_name

_EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # (exported, but missing from the type stubs)

UnaryCall = Any  # grpc.aio.UnaryUnaryMultiCallable; its stubs' generics do not fit a generic message type


class Upstreams:
    """Owns the channels: one per distinct target, however many services it serves."""

    def __init__(self, targets: Mapping[str, str], tracer_provider: TracerProvider, transport: Transport) -> None:
        self._targets = dict(targets)  # full service name → host:port
        self._tracer_provider = tracer_provider
        self._transport = transport
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._calls: dict[str, UnaryCall] = {}

    def start(self, bindings: Iterable[Binding]) -> None:
        for target in dict.fromkeys(self._targets.values()):
            self._channels[target] = self._transport.channel(target, self._tracer_provider, self._identity_at(target))
        for binding in bindings:
            channel = self._channels[self._targets[binding.service]]
            # A generic call: the path and (de)serializers come from the descriptors, no generated stub needed.
            open_call = channel.unary_stream if binding.server_streaming else channel.unary_unary
            self._calls[binding.grpc_path] = open_call(
                binding.grpc_path,
                request_serializer=binding.request_class.SerializeToString,
                response_deserializer=binding.response_class.FromString,
            )

    def _identity_at(self, target: str) -> Identity | None:
        """The gate's certificate must name the gate; an extra upstream's is checked against its host name."""
        services = {service for service, at in self._targets.items() if at == target}
        return Identity.GATE if services & set(GATE_SERVICES) else None

    def call_for(self, binding: Binding) -> UnaryCall | None:
        return self._calls.get(binding.grpc_path)

    def channel_for(self, service: str) -> grpc.aio.Channel | None:
        target = self._targets.get(service)
        return None if target is None else self._channels.get(target)

    async def close(self) -> None:
        channels, self._channels, self._calls = list(self._channels.values()), {}, {}
        for channel in channels:
            await channel.close(None)


async def call(upstream: UnaryCall, request: Message, *, timeout: float, metadata: tuple[tuple[str, str], ...]) -> Any:
    """One unary call; a failed one raises the ``HttpError`` it is answered with."""
    try:
        return await upstream(request, timeout=timeout, metadata=metadata)
    except grpc.aio.AioRpcError as error:
        raise http_error_of(error) from None


class UpstreamStream:
    """One server-streaming call. ``read`` gives the next message, None once the stream ended well, and raises
    the ``HttpError`` a failed stream is answered with. ``cancel`` ends the call on both sides: the upstream sees
    CANCELLED (and stops producing)."""

    def __init__(self, call: Any) -> None:
        self._call = call  # grpc.aio.UnaryStreamCall

    async def read(self) -> Message | None:
        try:
            message = await self._call.read()
        except grpc.aio.AioRpcError as error:
            raise http_error_of(error) from None
        return None if message is _EOF else message

    def cancel(self) -> None:
        self._call.cancel()


def open_stream(
    upstream: UnaryCall, request: Message, *, timeout: float, metadata: tuple[tuple[str, str], ...]
) -> UpstreamStream:
    """Starts a server-streaming call; nothing is awaited until the first ``read``."""
    return UpstreamStream(upstream(request, timeout=timeout, metadata=metadata))


def http_error_of(error: grpc.aio.AioRpcError) -> HttpError:
    return http_error_of_status(rpc_status_of(error))


def http_error_of_status(status: status_pb2.Status) -> HttpError:
    """The HTTP error a failed call's ``google.rpc.Status`` is answered with: its code, message and details as
    the service sent them, except for the transport's failures, whose text is replaced."""
    code = _CODE_NAMES.get(status.code, "UNKNOWN")
    details = details_of(status)
    reasons = tuple(details.reasons)
    if code == _REFUSED_BY_TRANSPORT and not reasons:
        log.error("upstream transport refused the call: %s", status.message)
        return internal()
    if code in _TRANSPORT_CODES and not reasons:
        log.warning("upstream call failed: %s %s", code, status.message)
        message, reason = _TRANSPORT_FAILURES.get(code, _UNAVAILABLE)
        return HttpError(http_status_of(code), code, message, (reason,))
    return HttpError(
        http_status_of(code),
        code,
        status.message or code,
        reasons=reasons,
        violations=tuple(Violation(v.field, v.description) for v in details.violations),
        quota_violations=tuple(Violation(q.subject, q.description) for q in details.quota),
        # Retry-After is whole seconds; rounding up never invites a retry before the server asked for one.
        retry_after_seconds=None if details.retry_after is None else max(0, math.ceil(details.retry_after)),
        details=tuple(_json_details(status)),
    )


def _json_details(status: status_pb2.Status) -> Iterator[dict[str, Any]]:
    """Each detail in proto3 JSON (``{"@type": …, "fieldViolations": …}``), as grpc-gateway renders them.
    DebugInfo (stack entries, by its own definition not for clients) and types this process does not know (it
    could not tell what they reveal) stay in the log."""
    for detail in status.details:
        if detail.type_url == _DEBUG_INFO:
            log.info("upstream DebugInfo not passed to the client: %s", detail)
            continue
        try:
            yield json_format.MessageToDict(detail)
        except (TypeError, json_format.Error):
            log.warning("upstream error detail of unknown type %s not passed to the client", detail.type_url)


class Readiness:
    """Asks the gate's gRPC health service on every probe. Concurrent probes share one in-flight check, so a
    burst of probes is one RPC."""

    def __init__(self, upstreams: Upstreams, service: str) -> None:
        self._upstreams = upstreams
        self._service = service
        self._inflight: asyncio.Task[bool] | None = None

    async def ready(self) -> bool:
        task = self._inflight
        if task is None:
            task = asyncio.get_running_loop().create_task(self._check())
            self._inflight = task
            task.add_done_callback(self._forget)
        # shield: a probe whose client went away must not cancel the check the other probes await.
        return await asyncio.shield(task)

    def _forget(self, task: asyncio.Task[bool]) -> None:
        if self._inflight is task:
            self._inflight = None

    async def _check(self) -> bool:
        channel = self._upstreams.channel_for(self._service)
        if channel is None:
            return False
        try:
            # Probes come every few seconds from the orchestrator: a trace each would bury the real ones.
            with suppress_instrumentation():
                response = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=_READINESS_TIMEOUT_SECONDS
                )
        except grpc.aio.AioRpcError as error:
            log.info("gate not ready: %s", error.code().name)
            return False
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)
