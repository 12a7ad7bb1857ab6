"""Failures of database operations, made visible: each is counted (``memory_database_errors_total{error}``, by
the driver's error class) and logged, at most once per error class every ``log_every_seconds`` with how many
were not logged since. A log line names the error class and the operation's kind, never the database URL or the
driver's message (they can name hosts, users and, in a URL, a password).

Hooked on the engine (SQLAlchemy's ``handle_error``), so every statement and every failed connection of every
repository is covered, without each remembering to report. A constraint violation (``IntegrityError``) is an
answer the code expects (a duplicate key, a lost claim race), not a failure, and is left out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)


class DatabaseFailures:
    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        log_every_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._errors = Counter(
            "memory_database_errors",
            "Database operations (statements, connections) that failed, by the driver's error class.",
            ["error"],
            registry=registry,
        )
        self._every = log_every_seconds
        self._clock = clock
        self._logged_at: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def failed(self, error: BaseException, *, disconnect: bool, statement: str | None) -> None:
        name = type(error).__name__
        self._errors.labels(error=name).inc()
        now = self._clock()
        last = self._logged_at.get(name)
        if last is not None and now - last < self._every:
            self._unlogged[name] = self._unlogged.get(name, 0) + 1
            return
        self._logged_at[name] = now
        words = (statement or "").split(None, 1)
        log.error(
            "database operation failed",
            extra={
                "error": name,
                "disconnect": disconnect,
                "operation": words[0].upper() if words else "CONNECT",
                "not_logged_since_last": self._unlogged.pop(name, 0),
            },
        )

    def on_error(self, context: ExceptionContext) -> None:
        if isinstance(context.sqlalchemy_exception, IntegrityError):
            return
        self.failed(context.original_exception, disconnect=context.is_disconnect, statement=context.statement)


def watch(engine: AsyncEngine, failures: DatabaseFailures) -> None:
    event.listen(engine.sync_engine, "handle_error", failures.on_error)
