"""Assembly of the edge's ASGI application from settings: bindings, router, OpenAPI, metrics, tracing.

``build_app`` does all the start-up work that can fail on configuration (importing proto modules, reading
annotations, compiling templates) so a bad upstream refuses to start. ``Edge.start`` opens the channels and
``Edge.close`` closes them; between the two, the ``Edge`` is the ASGI app.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from techno_core.transport import transport_from
from techno_edge.adapters.bindings import Binding, import_proto_modules, load_bindings, routes_of
from techno_edge.adapters.metrics import HttpMetrics
from techno_edge.adapters.openai_compat import GateChat
from techno_edge.adapters.openapi import build_openapi
from techno_edge.adapters.upstream import Readiness, Upstreams
from techno_edge.domain.routing import Router
from techno_edge.entrypoints.asgi import HEALTHZ, METRICS, READYZ, EdgeApp, Limits, Receive, Scope, Send
from techno_edge.entrypoints.cors import Cors
from techno_edge.entrypoints.openai_routes import OpenAIRoutes
from techno_edge.entrypoints.request_tracing import ASGIApp, request_tracing
from techno_edge.settings import GATE_SERVICE, EdgeSettings

# Probes and scrapes are not traced: they would be most of the traces and none of the interesting ones.
_UNTRACED = (HEALTHZ, READYZ, METRICS)


class Edge:
    """The ASGI app with an explicit lifecycle."""

    def __init__(self, app: EdgeApp, asgi: ASGIApp, upstreams: Upstreams, bindings: list[Binding]):
        self.app = app
        self._asgi = asgi
        self._upstreams = upstreams
        self.bindings = bindings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._asgi(scope, receive, send)

    async def start(self) -> None:
        self._upstreams.start(self.bindings)

    async def close(self) -> None:
        await self._upstreams.close()


def build_app(
    settings: EdgeSettings,
    *,
    tracer_provider: TracerProvider,
    registry: CollectorRegistry,
    upstreams: Mapping[str, str] | None = None,
    proto_modules: Sequence[str] | None = None,
) -> Edge:
    """``upstreams`` (full service name → target) and ``proto_modules`` default to the settings'."""
    targets = dict(upstreams if upstreams is not None else settings.upstreams())
    import_proto_modules(proto_modules if proto_modules is not None else settings.proto_modules())
    bindings = load_bindings(targets)
    transport = transport_from(settings, targets=list(targets.values()))
    channels = Upstreams(targets, tracer_provider, transport)
    metrics = HttpMetrics(registry)
    limits = Limits(
        settings.edge_request_timeout_seconds,
        settings.edge_max_body_bytes,
        settings.edge_stream_timeout_seconds,
        settings.edge_stream_keepalive_seconds,
    )
    cors = Cors.of(settings.edge_cors_allowed_origins)
    app = EdgeApp(
        Router(routes_of(bindings)),
        channels,
        Readiness(channels, GATE_SERVICE),  # never ready when the gate is not an upstream
        metrics,
        build_openapi(bindings),
        limits,
        cors,
    )
    # The OpenAI-compatible routes in front of the generic ones, inside the tracing middleware like them.
    openai = OpenAIRoutes(
        app, GateChat(channels), metrics, limits, default_context=settings.edge_openai_context_id, cors=cors
    )
    asgi = request_tracing(openai, tracer_provider, _UNTRACED)
    return Edge(app, asgi, channels, bindings)
