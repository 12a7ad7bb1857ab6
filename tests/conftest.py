"""Fixtures shared by every test layer."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from techno_core.settings import TechnoSettings
from techno_core.tracing import build_tracer_provider

POSTGRES_ADMIN_URL = os.environ.get("TECHNO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def span_exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(span_exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    """One provider for every in-process service of a test, collecting spans in memory."""
    provider = build_tracer_provider("test", "test-0", TechnoSettings(), processor=SimpleSpanProcessor(span_exporter))
    yield provider
    provider.shutdown()


@pytest.fixture(scope="session")
def create_postgres_database() -> Iterator[Callable[[], str]]:
    """Makes fresh PostgreSQL databases (``postgresql+psycopg://`` URLs), all dropped at the end of the session.
    The server is required: when it cannot be reached the tests using it fail (they never skip), so CI cannot
    pass without it."""
    created: list[str] = []
    base, _, _ = POSTGRES_ADMIN_URL.rpartition("/")

    def create() -> str:
        name = f"techno_test_{uuid.uuid4().hex[:12]}"
        try:
            with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
                admin.execute(f'CREATE DATABASE "{name}"')
        except psycopg.OperationalError as error:
            pytest.fail(f"PostgreSQL is required at {POSTGRES_ADMIN_URL}: {error}")
        created.append(name)
        return f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)

    yield create
    if created:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            for name in created:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_database(create_postgres_database: Callable[[], str]) -> str:
    """One PostgreSQL database shared by a session's tests that start from its schema themselves."""
    return create_postgres_database()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A skipped test is not a passed one, nor is an expected failure: any skip or xfail fails the run, so a missing
    service or tool, or a known bug marked as expected, cannot hide (``xfail_strict`` already fails an XPASS)."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or exitstatus != pytest.ExitCode.OK:
        return
    counts = {outcome: len(reporter.stats.get(outcome, [])) for outcome in ("skipped", "xfailed", "xpassed")}
    hidden = {outcome: count for outcome, count in counts.items() if count}
    if hidden:
        summary = ", ".join(f"{count} {outcome}" for outcome, count in hidden.items())
        reporter.write_line(f"FAILED: {summary}; every test must run and pass", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
