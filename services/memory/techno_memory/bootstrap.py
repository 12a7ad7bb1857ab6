"""Composition root of the memory service: wires settings, the database and the use cases into a gRPC app."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from datetime import datetime, timedelta

from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from techno.memory.v1 import memory_pb2_grpc
from techno_core.server import Endpoint, GrpcApp, ServiceDefinition, server_options
from techno_core.tracing import build_tracer_provider, records
from techno_core.transport import transport_from
from techno_memory.adapters.database import create_database_engine
from techno_memory.adapters.database_failures import DatabaseFailures
from techno_memory.adapters.database_failures import watch as watch_database
from techno_memory.adapters.decision_repository import SqlDecisionLedger
from techno_memory.adapters.idempotency_repository import SqlIdempotencyStore
from techno_memory.adapters.metrics import AppendMetrics, ReconcileMetrics, SweepMetrics, database_probe
from techno_memory.adapters.migrations import ensure_schema_current
from techno_memory.adapters.repository import SqlRepository
from techno_memory.adapters.session_repository import SqlSessionStore
from techno_memory.application.audit_log import AuditLog
from techno_memory.application.idempotency import IdempotencyKeys
from techno_memory.application.keys import KeyDirectory
from techno_memory.application.preferences import PreferenceBook, PrincipalData
from techno_memory.application.reconciler import OutcomeReconciler
from techno_memory.application.sessions import Sessions
from techno_memory.application.sweeper import ExpirySweeper
from techno_memory.domain.records import utc_now
from techno_memory.entrypoints.authorization import CALLERS
from techno_memory.entrypoints.grpc import MemoryServicer
from techno_memory.settings import MemorySettings

SERVICE_NAME = "techno.memory.v1.MemoryService"


def _instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


async def bootstrap(
    settings: MemorySettings,
    *,
    tracer_provider: TracerProvider | None = None,
    registry: CollectorRegistry | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> GrpcApp:
    """``clock`` decides session and idempotency expiry and which decisions are old enough to reconcile (tests
    move it instead of sleeping)."""
    transport = transport_from(settings, listen_hosts=[settings.host])
    owns_tracer = tracer_provider is None
    tracer = tracer_provider or build_tracer_provider("memory", _instance_id(), settings)
    registry = registry or CollectorRegistry()

    engine = create_database_engine(
        settings.memory_database_url,
        pool_size=settings.memory_pool_size,
        # A span per statement only when spans are recorded: unrecorded, they cost CPU on every statement and
        # show nowhere (the request's trace id is in the logs either way).
        tracer_provider=tracer if records(tracer) else None,
    )
    failures = DatabaseFailures(registry)
    watch_database(engine, failures)
    repository = SqlRepository(engine, tracer_provider=tracer, failures=failures)
    audit_log = AuditLog(
        repository,
        AppendMetrics(registry, max_batch=settings.memory_max_batch),
        max_batch=settings.memory_max_batch,
    )
    session_store = SqlSessionStore(engine)
    sessions = Sessions(
        session_store,
        ttl=timedelta(seconds=settings.memory_session_ttl_seconds),
        max_messages=settings.memory_session_max_messages,
        clock=clock,
    )
    idempotency_store = SqlIdempotencyStore(engine)
    idempotency = IdempotencyKeys(
        idempotency_store, retention=timedelta(seconds=settings.memory_idempotency_retention_seconds), clock=clock
    )
    sweeper = ExpirySweeper(
        session_store,
        idempotency_store,
        SweepMetrics(registry),
        interval_seconds=settings.memory_session_sweep_seconds,
        clock=clock,
    )
    reconciler = OutcomeReconciler(
        SqlDecisionLedger(engine),
        audit_log,
        ReconcileMetrics(registry),
        after_seconds=settings.memory_reconcile_after_seconds,
        interval_seconds=settings.memory_reconcile_interval_seconds,
        lookback_seconds=settings.memory_reconcile_lookback_seconds,
        clock=clock,
    )
    servicer = MemoryServicer(
        audit_log,
        KeyDirectory(repository),
        sessions,
        PreferenceBook(session_store, clock=clock),
        PrincipalData(session_store, clock=clock),
        idempotency,
    )

    async def check_schema() -> None:
        await ensure_schema_current(engine)

    async def close_tracer() -> None:
        if owns_tracer:
            tracer.shutdown()

    definition = ServiceDefinition(
        name="memory",
        registrations=[lambda server: memory_pb2_grpc.add_MemoryServiceServicer_to_server(servicer, server)],
        service_names=[SERVICE_NAME],
        callers=CALLERS,
        probes=[("database", database_probe(repository.ping, registry))],
        # The sweeper and the reconciler start only on a schema that has their tables.
        starters=[check_schema, sweeper.start, reconciler.start],
        # Pending appends are committed before the pool closes; spans of that last commit are then exported.
        closers=[sweeper.close, reconciler.close, audit_log.close, repository.close, engine.dispose, close_tracer],
    )
    return GrpcApp(
        definition,
        Endpoint(settings.host, settings.memory_port, settings.memory_metrics_port, settings.health_port),
        tracer,
        registry,
        server_options(settings, transport),
        health_interval_seconds=settings.health_check_interval_seconds,
        grace_seconds=settings.shutdown_grace_seconds,
    )
