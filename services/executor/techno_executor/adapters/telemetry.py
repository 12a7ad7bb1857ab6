"""Prometheus metrics, span attributes and logs of executions (the ``ExecutionObserver`` port).

Metric names and labels are an operator contract (dashboards and alerts use them): change them only with
those. Labels stay bounded: providers and models come from configuration, error types from a closed set.
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry import trace
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from techno_core.metrics import trace_exemplar
from techno_executor.domain.breaker import CircuitState
from techno_executor.domain.retry import AttemptReport

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Time to first token: what a streaming user waits before anything shows; finer at the low end.
FIRST_TOKEN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0)
# A whole streamed answer: seconds to minutes.
STREAM_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
STREAM_RESULTS = ("completed", "failed", "cancelled")
CIRCUIT_OPEN = "circuit_open"


class PrometheusExecutionObserver:
    def __init__(self, registry: CollectorRegistry, executor_id: str) -> None:
        self._executor_id = executor_id
        # Each metric's children by label values, looked up once: ``labels()`` (validation, a lock, keyword
        # sorting) was several calls per execution. Bounded as the labels are.
        self._children: dict[tuple[MetricWrapperBase, tuple[str, ...]], Any] = {}
        self._latency = Histogram(
            "llm_request_latency_seconds",
            "Duration of one provider call (each attempt), failed ones included; for a stream, until its first piece.",
            ["provider", "model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._tokens = Counter(
            "llm_tokens_total",
            "Model tokens used, by type (input|output).",
            ["provider", "model", "type"],
            registry=registry,
        )
        self._errors = Counter(
            "llm_errors_total",
            "Failed provider calls and calls refused by the circuit breaker, by error_type "
            "(timeout|provider_error|rate_limited|circuit_open).",
            ["provider", "error_type"],
            registry=registry,
        )
        self._calls = Counter("executor_calls_total", "Execute calls received.", ["executor"], registry=registry)
        self._results = Counter(
            "action_results_total", "Finished executions, by status (succeeded|failed).", ["status"], registry=registry
        )
        self._breaker = Gauge(
            "llm_circuit_breaker_state",
            "Circuit breaker state per provider: 0 closed, 1 half-open, 2 open (forced states read as what they "
            "do: forced open 2, forced closed 0).",
            ["provider"],
            registry=registry,
        )
        self._transitions = Counter(
            "llm_circuit_transitions_total",
            "Circuit breaker transitions, by provider and new state (closed|half_open|open|forced_open|forced_closed).",
            ["provider", "to"],
            registry=registry,
        )

        self._first_token = Histogram(
            "llm_time_to_first_token_seconds",
            "Time from a StreamExecute call's arrival to its first piece of text (retries and fallbacks included).",
            ["provider", "model"],
            buckets=FIRST_TOKEN_BUCKETS,
            registry=registry,
        )
        self._stream_seconds = Histogram(
            "llm_stream_duration_seconds",
            "Duration of StreamExecute calls that reached a provider, from arrival to their end, whatever the result.",
            ["provider", "model"],
            buckets=STREAM_BUCKETS,
            registry=registry,
        )
        self._streams = Counter(
            "llm_streams_total",
            "StreamExecute calls that reached a provider, by result (completed|failed|cancelled by the caller).",
            ["provider", "model", "result"],
            registry=registry,
        )

    def _child(self, metric: MetricWrapperBase, *values: str) -> Any:
        """``metric.labels(*values)`` (values in the order the labels were declared), kept."""
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def provider_registered(self, provider: str, model: str = "") -> None:
        """Show a provider's breaker as closed from the start, not only after its first transition."""
        self._breaker.labels(provider=provider).set(CircuitState.CLOSED.gauge_value)
        if model:  # stream results show as 0 from the start, so rate() and alerts see the first one
            for result in STREAM_RESULTS:
                self._streams.labels(provider=provider, model=model, result=result)

    def first_chunk(self, provider: str, model: str, seconds: float) -> None:
        self._child(self._first_token, provider, model).observe(seconds, exemplar=trace_exemplar())

    def stream_finished(self, provider: str, model: str, seconds: float, result: str) -> None:
        self._child(self._stream_seconds, provider, model).observe(seconds)
        self._child(self._streams, provider, model, result).inc()

    def call_received(self) -> None:
        self._child(self._calls, self._executor_id).inc()

    def attempt_finished(self, provider: str, model: str, seconds: float, error_type: str | None) -> None:
        # Called on the Execute call's own task, so the gRPC server span is current: the exemplar is its trace.
        self._child(self._latency, provider, model).observe(seconds, exemplar=trace_exemplar())
        if error_type is not None:
            self._child(self._errors, provider, error_type).inc()

    def attempt_reported(self, provider: str, model: str, report: AttemptReport) -> None:
        """One span event per attempt on the current (server) span: no extra spans, the trace shows the retries."""
        span = trace.get_current_span()
        if not span.is_recording():
            return
        attributes: dict[str, str | int | float] = {
            "techno.executor.attempt": report.number,
            "gen_ai.system": provider,
            "gen_ai.request.model": model,
        }
        if report.error is not None:
            attributes["error.type"] = report.error.error_type
        if report.wait is not None:
            attributes["techno.executor.retry_wait_seconds"] = report.wait
        if report.stop is not None:
            attributes["techno.executor.retry_stop"] = report.stop.value
        span.add_event("techno.executor.provider_attempt", attributes)

    def circuit_rejected(self, provider: str) -> None:
        self._errors.labels(provider=provider, error_type=CIRCUIT_OPEN).inc()

    def execution_finished(
        self,
        *,
        succeeded: bool,
        provider: str | None,
        model: str | None,
        attempts: int,
        input_tokens: int,
        output_tokens: int,
        breaker_state: CircuitState | None,
    ) -> None:
        self._child(self._results, "succeeded" if succeeded else "failed").inc()
        if provider is not None and model is not None:
            if input_tokens:
                self._child(self._tokens, provider, model, "input").inc(input_tokens)
            if output_tokens:
                self._child(self._tokens, provider, model, "output").inc(output_tokens)
        # Domain attributes on the server span the gRPC instrumentation opened for this call.
        span = trace.get_current_span()
        if not span.is_recording():
            return
        span.set_attribute("techno.executor.attempts", attempts)
        if provider is not None and model is not None:
            span.set_attribute("gen_ai.system", provider)
            span.set_attribute("gen_ai.request.model", model)
        if breaker_state is not None:
            span.set_attribute("techno.executor.breaker_state", breaker_state.value)
        if input_tokens or output_tokens:
            span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", output_tokens)

    def breaker_state_changed(self, provider: str, old: CircuitState, new: CircuitState) -> None:
        self._breaker.labels(provider=provider).set(new.gauge_value)
        self._transitions.labels(provider=provider, to=new.value).inc()
        log.warning(
            "circuit breaker of %s: %s -> %s",
            provider,
            old.value,
            new.value,
            extra={
                "event": "circuit_breaker_transition",
                "provider": provider,
                "from_state": old.value,
                "to_state": new.value,
            },
        )
