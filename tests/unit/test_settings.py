"""Every service reads its TECHNO_* variables, whatever order its settings mixins come in."""

from __future__ import annotations

import pytest

from techno_core.settings import ExecutorClientSettings, GrpcServerSettings, MemoryClientSettings, TechnoSettings
from techno_gate.settings import GateSettings


class Composite(TechnoSettings, GrpcServerSettings, MemoryClientSettings, ExecutorClientSettings):
    pass


def test_prefix_survives_mixins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TECHNO_MEMORY_TARGET", "memory:1")
    monkeypatch.setenv("TECHNO_HOST", "192.0.2.1")
    monkeypatch.setenv("TECHNO_LOG_LEVEL", "DEBUG")
    settings = Composite()
    assert (settings.memory_target, settings.host, settings.log_level) == ("memory:1", "192.0.2.1", "DEBUG")


def test_gate_reads_its_own_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TECHNO_GATE_PORT", "1234")
    monkeypatch.setenv("TECHNO_EXECUTOR_TARGET", "executor:2")
    settings = GateSettings()
    assert (settings.gate_port, settings.executor_target) == (1234, "executor:2")


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TECHNO_GATE_PORT", "not-a-port")
    with pytest.raises(ValueError, match="gate_port"):
        GateSettings()
