"""The fake provider's fault settings: defaults, environment names, validation, the initial profile."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from techno_executor.domain.faults import FaultProfile, StreamShape
from techno_executor.fault_settings import FaultSettings


def values(field: str, value: float) -> dict[str, Any]:
    return {field: value}


def test_defaults_inject_no_fault() -> None:
    settings = FaultSettings()
    assert settings.initial_faults() == FaultProfile()
    assert settings.fake_seed is None


def test_environment_variables_make_the_initial_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "LATENCY_MS": "250",
        "LATENCY_JITTER_MS": "50",
        "ERROR_RATE": "0.1",
        "RATE_LIMIT_RATE": "0.2",
        "RETRY_AFTER_SECONDS": "4",
        "TIMEOUT_RATE": "0.05",
        "HANG_RATE": "0.01",
        "SEED": "42",
    }.items():
        monkeypatch.setenv(f"TECHNO_FAKE_{name}", value)
    settings = FaultSettings()
    assert settings.initial_faults() == FaultProfile(
        latency_ms=250,
        latency_jitter_ms=50,
        error_rate=0.1,
        rate_limit_rate=0.2,
        retry_after_seconds=4,
        timeout_rate=0.05,
        hang_rate=0.01,
    )
    assert settings.fake_seed == 42


@pytest.mark.parametrize(
    "field",
    ["fake_error_rate", "fake_rate_limit_rate", "fake_timeout_rate", "fake_hang_rate"],
)
@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_a_rate_out_of_range_is_refused_naming_it(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        FaultSettings(**values(field, value))


@pytest.mark.parametrize("field", ["fake_latency_ms", "fake_latency_jitter_ms", "fake_retry_after_seconds"])
def test_a_negative_duration_is_refused_naming_it(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        FaultSettings(**values(field, -1))


def test_rates_adding_up_to_more_than_one_are_refused_naming_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TECHNO_FAKE_TIMEOUT_RATE", "0.5")
    monkeypatch.setenv("TECHNO_FAKE_HANG_RATE", "0.6")
    with pytest.raises(ValueError, match="add up to more than 1") as raised:
        FaultSettings()
    message = str(raised.value)
    assert "fake_timeout_rate" in message
    assert "fake_hang_rate" in message
    assert "= 1.1" in message


def test_rates_adding_up_to_exactly_one_are_accepted() -> None:
    settings = FaultSettings(
        fake_error_rate=0.25, fake_rate_limit_rate=0.25, fake_timeout_rate=0.25, fake_hang_rate=0.25
    )
    assert settings.initial_faults().problems() == []


def test_every_field_is_described() -> None:
    undescribed = [name for name, info in FaultSettings.model_fields.items() if not info.description]
    assert undescribed == []
    assert all(name.startswith("fake_") for name in FaultSettings.model_fields)


def test_environment_variables_shape_the_fake_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    assert FaultSettings().stream_shape() == StreamShape()
    for name, value in {"CHUNK_CHARS": "4", "CHUNK_DELAY_MS": "25", "FAULT_AFTER_CHUNKS": "3"}.items():
        monkeypatch.setenv(f"TECHNO_FAKE_STREAM_{name}", value)
    assert FaultSettings().stream_shape() == StreamShape(chunk_chars=4, chunk_delay_ms=25, fault_after_chunks=3)


def test_an_empty_stream_piece_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TECHNO_FAKE_STREAM_CHUNK_CHARS", "0")
    with pytest.raises(ValidationError, match="fake_stream_chunk_chars"):
        FaultSettings()
