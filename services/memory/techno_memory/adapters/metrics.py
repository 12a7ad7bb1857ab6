"""Prometheus metrics of the memory service, on the app's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from techno_core.health import Probe


def _batch_buckets(max_batch: int) -> list[float]:
    """Powers of two up to ``max_batch``: group commit batch sizes spread geometrically under load."""
    buckets, size = [], 1
    while size < max_batch:
        buckets.append(float(size))
        size *= 2
    return [*buckets, float(max_batch)]


class AppendMetrics:
    """Implements ``AppendObserver``."""

    def __init__(self, registry: CollectorRegistry, *, max_batch: int) -> None:
        self._appended = Counter(
            "memory_audit_events_appended",
            "Audit events newly stored (repeats of a stored event_id are not counted).",
            registry=registry,
        )
        self._batch_size = Histogram(
            "memory_audit_append_batch_size",
            "Audit events written per database transaction (group commit); its count is the transactions.",
            buckets=_batch_buckets(max_batch),
            registry=registry,
        )
        self._failures = Counter(
            "memory_audit_append_failures",
            "Audit append transactions that failed; every event in them was refused.",
            registry=registry,
        )

    def committed(self, batch_size: int, appended: int) -> None:
        self._batch_size.observe(batch_size)
        self._appended.inc(appended)

    def failed(self, batch_size: int) -> None:
        self._failures.inc()


class SweepMetrics:
    """Implements ``SweepObserver``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._expired = Counter(
            "memory_sessions_expired",
            "Expired sessions deleted (with their messages) by the sweeper.",
            registry=registry,
        )
        self._idempotency_keys_expired = Counter(
            "memory_idempotency_keys_expired",
            "Expired idempotency records (keys with their stored responses) deleted by the sweeper.",
            registry=registry,
        )
        self._failures = Counter(
            "memory_session_sweep_failures",
            "Sweeps of expired sessions or idempotency records that failed (each kind is swept on its own).",
            registry=registry,
        )

    def expired(self, count: int) -> None:
        self._expired.inc(count)

    def idempotency_keys_expired(self, count: int) -> None:
        self._idempotency_keys_expired.inc(count)

    def failed(self) -> None:
        self._failures.inc()


class ReconcileMetrics:
    """Implements ``ReconcileObserver``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._reconciled = Counter(
            "memory_outcomes_reconciled",
            "Allowed decisions left without an outcome that this replica closed with an UNKNOWN outcome "
            "(OUTCOME_LOST).",
            registry=registry,
        )
        self._failures = Counter(
            "memory_outcome_reconcile_failures",
            "Runs of the outcome reconciler that failed (the database was unavailable); the next run retries.",
            registry=registry,
        )

    def reconciled(self, count: int) -> None:
        self._reconciled.inc(count)

    def failed(self) -> None:
        self._failures.inc()


def database_probe(ping: Probe, registry: CollectorRegistry) -> Probe:
    """``ping`` as a health probe that also sets ``memory_db_up`` (1 reachable, 0 not) for alerting."""
    up = Gauge("memory_db_up", "1 when the last health probe reached the database, else 0.", registry=registry)

    async def probe() -> None:
        try:
            await ping()
        except BaseException:  # a timed-out probe is cancelled: the database is not up either
            up.set(0)
            raise
        up.set(1)

    return probe
