"""The Prometheus observer: breaker gauge and the transition log event."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry

from techno_executor.adapters.telemetry import PrometheusExecutionObserver
from techno_executor.domain.breaker import CircuitState


def test_breaker_transitions_move_the_gauge_and_log_a_structured_event(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    observer = PrometheusExecutionObserver(registry, "executor-a")
    observer.provider_registered("fake")
    assert registry.get_sample_value("llm_circuit_breaker_state", {"provider": "fake"}) == 0
    with caplog.at_level(logging.WARNING):
        observer.breaker_state_changed("fake", CircuitState.CLOSED, CircuitState.OPEN)
    assert registry.get_sample_value("llm_circuit_breaker_state", {"provider": "fake"}) == 2
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert record.__dict__["event"] == "circuit_breaker_transition"
    assert (record.__dict__["from_state"], record.__dict__["to_state"]) == ("closed", "open")
    observer.breaker_state_changed("fake", CircuitState.OPEN, CircuitState.HALF_OPEN)
    assert registry.get_sample_value("llm_circuit_breaker_state", {"provider": "fake"}) == 1


def test_errors_are_counted_by_type_and_tokens_by_direction() -> None:
    registry = CollectorRegistry()
    observer = PrometheusExecutionObserver(registry, "executor-a")
    observer.attempt_finished("fake", "m", 0.3, "rate_limited")
    observer.circuit_rejected("fake")
    observer.execution_finished(
        succeeded=True,
        provider="fake",
        model="m",
        attempts=2,
        input_tokens=10,
        output_tokens=4,
        breaker_state=CircuitState.CLOSED,
    )
    assert registry.get_sample_value("llm_errors_total", {"provider": "fake", "error_type": "rate_limited"}) == 1
    assert registry.get_sample_value("llm_errors_total", {"provider": "fake", "error_type": "circuit_open"}) == 1
    assert (
        registry.get_sample_value(
            "llm_request_latency_seconds_bucket", {"provider": "fake", "model": "m", "le": "0.25"}
        )
        == 0
    )
    assert (
        registry.get_sample_value("llm_request_latency_seconds_bucket", {"provider": "fake", "model": "m", "le": "0.5"})
        == 1
    )
    assert registry.get_sample_value("llm_tokens_total", {"provider": "fake", "model": "m", "type": "input"}) == 10
    assert registry.get_sample_value("llm_tokens_total", {"provider": "fake", "model": "m", "type": "output"}) == 4
    assert registry.get_sample_value("action_results_total", {"status": "succeeded"}) == 1


def test_streams_record_time_to_first_token_duration_and_result() -> None:
    registry = CollectorRegistry()
    observer = PrometheusExecutionObserver(registry, "executor-a")
    observer.provider_registered("fake", "m")
    labels = {"provider": "fake", "model": "m"}
    assert registry.get_sample_value("llm_streams_total", {**labels, "result": "cancelled"}) == 0
    observer.first_chunk("fake", "m", 0.4)
    observer.stream_finished("fake", "m", 2.0, "completed")
    observer.stream_finished("fake", "m", 0.7, "cancelled")
    assert registry.get_sample_value("llm_time_to_first_token_seconds_bucket", {**labels, "le": "0.5"}) == 1
    assert registry.get_sample_value("llm_time_to_first_token_seconds_bucket", {**labels, "le": "0.25"}) == 0
    assert registry.get_sample_value("llm_stream_duration_seconds_count", labels) == 2
    assert registry.get_sample_value("llm_streams_total", {**labels, "result": "completed"}) == 1
    assert registry.get_sample_value("llm_streams_total", {**labels, "result": "cancelled"}) == 1
    assert registry.get_sample_value("llm_streams_total", {**labels, "result": "failed"}) == 0
