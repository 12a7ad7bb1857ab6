"""Executor settings: defaults, environment names, descriptions."""

from __future__ import annotations

import os

import pytest

from techno_executor.settings import ExecutorSettings


def test_defaults() -> None:
    settings = ExecutorSettings()
    assert (settings.executor_port, settings.executor_metrics_port) == (50052, 9102)
    assert (settings.cb_threshold, settings.cb_timeout) == (3, 60)
    assert settings.executor_retry_max_attempts == 3
    assert settings.executor_id.endswith(f"-{os.getpid()}")
    assert (settings.fake_latency_ms, settings.fake_error_rate, settings.fake_seed) == (0, 0.0, None)


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TECHNO_CB_THRESHOLD", "5")
    monkeypatch.setenv("TECHNO_CB_TIMEOUT", "2.5")
    monkeypatch.setenv("TECHNO_FAKE_ERROR_RATE", "1")
    monkeypatch.setenv("TECHNO_EXECUTOR_ID", "executor-a")
    monkeypatch.setenv("TECHNO_HOST", "10.1.2.3")  # a mixin's field takes the prefix too
    monkeypatch.setenv("TECHNO_LOG_LEVEL", "DEBUG")
    settings = ExecutorSettings()
    assert (settings.host, settings.log_level) == ("10.1.2.3", "DEBUG")
    assert (settings.cb_threshold, settings.cb_timeout, settings.fake_error_rate) == (5, 2.5, 1.0)
    assert settings.executor_id == "executor-a"


def test_out_of_range_values_are_refused() -> None:
    with pytest.raises(ValueError, match="fake_error_rate"):
        ExecutorSettings(fake_error_rate=1.5)


def test_every_field_is_described() -> None:
    undescribed = [name for name, info in ExecutorSettings.model_fields.items() if not info.description]
    assert undescribed == []
