"""Cross-origin requests from browsers (the Fetch standard's CORS protocol), off unless origins are configured.

With ``TECHNO_EDGE_CORS_ALLOWED_ORIGINS`` empty the edge adds no CORS header and a preflight ``OPTIONS`` is a
405 like any method a path does not serve. With origins listed, a preflight from one of them is answered 204
with the methods of the path and the headers the API reads, and every response to such an origin names it in
``Access-Control-Allow-Origin`` and exposes the headers a client needs (the trace id, ``Retry-After``).
Credentials are headers (``X-API-Key``, ``Authorization``), never cookies, so ``Allow-Credentials`` is not sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# The request headers the edge reads or forwards; a preflight asking for others is answered without them, and
# the browser refuses the request.
ALLOWED_HEADERS = "Authorization, Content-Type, Idempotency-Key, Traceparent, X-API-Key, X-Request-Timeout"
# The OpenAI-compatible routes': the OpenAI SDKs send headers of their own that change between versions
# (X-Stainless-*, OpenAI-Organization …), which the edge ignores. ``*`` allows any header on a request without
# credentials (the Fetch standard) except Authorization, which must be named.
ANY_HEADER = "*, Authorization"
EXPOSED_HEADERS = "Retry-After, X-Trace-Id"
_MAX_AGE_SECONDS = "600"
ANY_ORIGIN = "*"


@dataclass(frozen=True)
class Cors:
    allowed_origins: frozenset[str]

    @classmethod
    def of(cls, origins: Iterable[str]) -> Cors | None:
        """None (CORS off) when no origin is listed."""
        listed = frozenset(origin.rstrip("/") for origin in origins if origin)
        return cls(listed) if listed else None

    def allows(self, origin: str | None) -> bool:
        return origin is not None and (ANY_ORIGIN in self.allowed_origins or origin in self.allowed_origins)

    def response_headers(self, origin: str | None) -> tuple[tuple[str, str], ...]:
        """Added to every response: the origin when allowed, and ``Vary: Origin`` always, since the answer
        depends on it (a cache must not serve one origin's answer to another)."""
        if origin is None or not self.allows(origin):
            return (("vary", "Origin"),)
        return (
            ("access-control-allow-origin", origin),
            ("access-control-expose-headers", EXPOSED_HEADERS),
            ("vary", "Origin"),
        )

    @staticmethod
    def preflight_headers(
        methods: Iterable[str], allowed_headers: str = ALLOWED_HEADERS
    ) -> tuple[tuple[str, str], ...]:
        return (
            ("access-control-allow-methods", ", ".join(methods)),
            ("access-control-allow-headers", allowed_headers),
            ("access-control-max-age", _MAX_AGE_SECONDS),
        )
