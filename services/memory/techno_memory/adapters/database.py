"""Engine creation: the two supported databases, their connection settings, and tracing of every statement."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opentelemetry import metrics
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from opentelemetry.instrumentation.sqlalchemy.version import __version__ as instrumentation_version
from opentelemetry.sdk.trace import TracerProvider
from sqlalchemy import URL, event, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from techno_core.runner import StartupError

# The async driver each supported database is used through.
_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+psycopg"}
_IN_MEMORY = {None, "", ":memory:"}


class UnsupportedDatabase(StartupError, ValueError):
    """The database URL names a database or driver this service does not support (a configuration mistake: the
    runner reports it in one line)."""


def database_url(url: str) -> URL:
    """Parse ``url`` and complete a bare ``sqlite://`` or ``postgresql://`` with its async driver."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend not in _ASYNC_DRIVERS:
        raise UnsupportedDatabase(
            f"unsupported database {backend!r}: use sqlite+aiosqlite:///path or postgresql+psycopg://user@host/db"
        )
    if parsed.drivername == backend:
        parsed = parsed.set(drivername=_ASYNC_DRIVERS[backend])
    if parsed.drivername != _ASYNC_DRIVERS[backend]:
        raise UnsupportedDatabase(f"unsupported driver {parsed.drivername!r}: use {_ASYNC_DRIVERS[backend]}")
    return parsed


def create_database_engine(url: str, *, pool_size: int, tracer_provider: TracerProvider | None) -> AsyncEngine:
    """An async engine for ``url``. Nothing connects yet: the pool opens connections on first use.

    ``pool_pre_ping`` tests each connection as it leaves the pool, so after a PostgreSQL restart the stale ones
    are replaced instead of failing the next request."""
    parsed = database_url(url)
    options: dict[str, Any] = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database in _IN_MEMORY:
            options = {}  # a private in-memory database lives in one connection: no pool to size or ping
        else:
            Path(parsed.database or "").parent.mkdir(parents=True, exist_ok=True)
            options["pool_size"] = pool_size
    else:
        options["pool_size"] = pool_size
    engine = create_async_engine(parsed, **options)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _configure_sqlite_connection)
    if tracer_provider is not None:
        instrument_engine(engine, tracer_provider)
    return engine


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers (GetAuditTrail, ListApiKeys, health) proceed while a group commit writes; busy_timeout
    # makes a writer wait for another connection's write lock instead of failing at once.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=5000")
    finally:
        cursor.close()


def instrument_engine(engine: AsyncEngine, tracer_provider: TracerProvider) -> None:
    """A span for every statement, child of the current span, so database time shows up in the request's trace.

    ``SQLAlchemyInstrumentor().instrument(engine=...)`` would do the same through a process-wide singleton: it
    honours only its first call (a second engine or tracer provider in the same process is silently left
    untraced) and patches ``create_engine`` globally. ``EngineTracer`` is what it attaches to the engine; using
    it directly instruments exactly this engine with exactly this provider."""
    tracer = tracer_provider.get_tracer("opentelemetry.instrumentation.sqlalchemy", instrumentation_version)
    # Connection-pool usage is an OpenTelemetry metric; this service's metrics are Prometheus, so it goes to the
    # global meter provider (a no-op unless a process installs one).
    connections = metrics.get_meter("opentelemetry.instrumentation.sqlalchemy").create_up_down_counter(
        "db.client.connections.usage", unit="connections", description="Connections by state (idle or used)."
    )
    EngineTracer(tracer, engine.sync_engine, connections)  # type: ignore[no-untyped-call]
