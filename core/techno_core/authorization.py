"""Authorization between services: which peer identity may call which RPC, as one declared table per service.

Each service declares ``CALLERS`` (full method name → the identities allowed), next to its servicers; the
server's interceptor enforces it for every handler kind, before any of the service's code runs. A method missing
from the table is refused (fail closed: a new RPC is unreachable until someone decides who may call it). Health and
reflection are open to every authenticated peer. A refusal is PERMISSION_DENIED (UNAUTHENTICATED when the peer
presents no Techno identity), counted in ``grpc_server_peer_denied_total`` and logged with the peer.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter

from techno_core import errors
from techno_core.grpc_errors import to_grpc_status
from techno_core.identity import Identity, peer_identity, peer_uris

CallerTable = Mapping[str, frozenset[Identity]]
EVERY_PEER = frozenset(Identity)
_OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/")
_NO_IDENTITY = "none"
log = logging.getLogger(__name__)


def callers(table: Mapping[str, frozenset[Identity]], service: str) -> dict[str, frozenset[Identity]]:
    """``{"Method": {...}}`` of one service → full method names, so a table is written per service, readably."""
    return {f"/{service}/{method}": allowed for method, allowed in table.items()}


class Authorization:
    """The caller table of one service, enforced by the server's interceptor (``interceptors.ServerInterceptor``)
    on every call: ``permits`` once per method when its wrapper is built, its check on each call, ``refuse`` for a
    peer it does not permit. ``guarded`` puts the same check before handlers the interceptor does not otherwise
    wrap (the health service's Watch, reflection)."""

    def __init__(self, table: CallerTable, registry: CollectorRegistry) -> None:
        self._table = dict(table)
        self._denied = Counter(
            "grpc_server_peer_denied_total",
            "Calls refused because the peer's identity may not call the method (or it presented none).",
            ["grpc_service", "grpc_method", "grpc_code", "peer"],
            registry=registry,
        )

    def allowed(self, method: str) -> frozenset[Identity]:
        if method.startswith(_OPEN_PREFIXES):
            return EVERY_PEER
        return self._table.get(method, frozenset())

    def permits(self, method: str) -> Callable[[grpc.aio.ServicerContext[Any, Any]], bool]:
        """Whether a call's peer may call ``method``: a plain function, so an allowed call awaits nothing."""
        allowed = self.allowed(method)

        def permitted(context: grpc.aio.ServicerContext[Any, Any]) -> bool:
            return peer_identity(context) in allowed

        return permitted

    async def refuse(self, context: grpc.aio.ServicerContext[Any, Any], method: str) -> None:
        """Ends a call ``permits`` refused: counted, logged with the peer, answered with the reason (raises)."""
        peer = peer_identity(context)
        service, _, name = method.lstrip("/").rpartition("/")
        error: errors.DomainError
        code = grpc.StatusCode.UNAUTHENTICATED if peer is None else grpc.StatusCode.PERMISSION_DENIED
        if peer is None:
            error = errors.Unauthenticated(
                reason="PEER_UNAUTHENTICATED", message="the client certificate names no Techno service identity"
            )
        else:
            error = errors.PermissionDenied(reason="PEER_NOT_AUTHORIZED", message=f"{peer.value} may not call {method}")
        self._denied.labels(service, name, code.name, peer.value if peer else _NO_IDENTITY).inc()
        log.warning(
            "refused %s from peer %s",
            method,
            peer.value if peer else _NO_IDENTITY,
            extra={"peer_address": context.peer(), "peer_uris": peer_uris(context), "reason": error.reason},
        )
        aio_context: Any = context  # grpc-stubs lacks the aio context's abort_with_status
        await aio_context.abort_with_status(to_grpc_status(error))

    def guarded(self, handler: Any, method: str) -> Any:
        """The same handler with the check run before its behaviour, whatever kind of RPC it is."""
        permitted = self.permits(method)

        async def check(context: grpc.aio.ServicerContext[Any, Any]) -> None:
            if not permitted(context):
                await self.refuse(context, method)

        return _guarded(handler, check)


Check = Callable[[grpc.aio.ServicerContext[Any, Any]], Awaitable[None]]


def _guarded(handler: Any, check: Check) -> Any:
    """The same handler with ``check`` run before its behaviour, whatever kind of RPC it is."""
    serializers = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(_before(handler.unary_unary, check), **serializers)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(_before(handler.unary_stream, check), **serializers)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(_before(handler.stream_unary, check), **serializers)
    return grpc.stream_stream_rpc_method_handler(_before(handler.stream_stream, check), **serializers)


def _before(behavior: Any, check: Check) -> Any:
    if inspect.isasyncgenfunction(behavior):  # a streaming answer written by yielding

        async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            await check(context)
            # aclosing: a client that leaves closes this generator, and so at once the servicer's (its provider
            # call with it), not whenever the garbage collector gets to it.
            async with contextlib.aclosing(behavior(request, context)) as responses:
                async for response in responses:
                    yield response

        return stream

    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await check(context)
        return await behavior(request, context)

    return call
