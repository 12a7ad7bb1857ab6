"""The request span around every edge request: the OpenTelemetry ASGI instrumentation when spans are recorded,
a lean stand-in when they are not.

With no exporter the instrumentation still built a server span's attributes, parsed the URL and the duration
attributes, and wrapped ``send``, about a tenth of the edge's CPU, for spans that were then dropped. The stand-in
keeps what the rest of the edge needs: a current span whose trace id is the caller's (``traceparent``) or a new
one, which the response's ``X-Trace-Id``, the error bodies, the logs and every gRPC call onward carry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection

from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from techno_core import tracing
from techno_edge.entrypoints.asgi import Receive, Scope, Send

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class TraceContextMiddleware:
    """Each HTTP request runs in a non-recorded span of the caller's trace or of a new one; ``untraced`` paths
    (probes, scrapes) in none, as with the instrumentation."""

    def __init__(self, app: ASGIApp, tracer_provider: TracerProvider, untraced: Collection[str]) -> None:
        self._app = app
        self._tracer = tracer_provider.get_tracer(__name__)
        self._untraced = frozenset(untraced)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self._untraced:
            await self._app(scope, receive, send)
            return
        # Header names are lower case in ASGI; the global propagator reads the ones it knows (traceparent, …).
        carrier = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        parent = propagate.extract(carrier, context=Context())
        span, token = tracing.start_span(self._tracer, scope["method"], parent, SpanKind.SERVER)
        try:
            await self._app(scope, receive, send)
        finally:
            tracing.end_span(span, token)


def request_tracing(app: ASGIApp, tracer_provider: TracerProvider, untraced: Collection[str]) -> ASGIApp:
    if not tracing.records(tracer_provider):
        return TraceContextMiddleware(app, tracer_provider, untraced)
    # The instrumentation matches excluded URLs against the full URL (scheme://host/path), hence the anchors.
    excluded = ",".join(rf"^[a-z]+://[^/]+{path}$" for path in untraced)
    middleware: ASGIApp = OpenTelemetryMiddleware(
        app,
        excluded_urls=excluded,
        tracer_provider=tracer_provider,
        exclude_spans=["receive", "send"],  # one span per request; per-message spans only cost time
    )
    return middleware
