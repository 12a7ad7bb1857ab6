"""The figures ``make bench-compare`` derives from its rows: the medians over ``--rounds`` and the soak's RSS
growth (P4), from hand-made rows, so a wrong verdict cannot hide behind a noisy machine."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from bench_compare import Results, Row, _error_kinds, _label, rss_growth, verdicts


def _row(system: str, label: str, round_: int, *, rate: float, p99: float, growth: float = 0.0) -> Row:
    return Row(
        system=system, label=label, connections=64, requests=int(rate * 10), seconds=10.0, p50_ms=p99 / 2,
        p99_ms=p99, non_2xx=0, errors=0, error_kinds={}, cpu_us={}, rss_mib={}, round=round_,
        rss_growth={"gate": growth} if growth else {},
    )  # fmt: skip


def _verdict(results: Results, target: str) -> tuple[str, bool | None]:
    found = next(v for v in verdicts(results) if v.target.startswith(target))
    return found.figure, found.passed


def test_p1_is_the_median_of_the_per_round_ratios_with_their_range() -> None:
    rows = []
    for round_, (chain_rate, stack_rate) in enumerate([(500, 250), (400, 360), (500, 450)], start=1):
        rows += [
            _row("chain", "c=64", round_, rate=chain_rate, p99=100),
            _row("stack", "c=64", round_, rate=stack_rate, p99=110),
        ]
    figure, passed = _verdict(Results(rows=rows, rounds=3), "P1 c=64 throughput")
    # Ratios 0.50, 0.90, 0.90: the median passes, the range shows the slow round.
    assert (figure, passed) == ("0.90 (0.50-0.90)", True)


def test_a_single_round_run_pairs_its_two_rows() -> None:
    rows = [_row("chain", "c=64", 0, rate=500, p99=100), _row("stack", "c=64", 0, rate=300, p99=150)]
    assert _verdict(Results(rows=rows), "P1 c=64 throughput") == ("0.60", False)


def test_p1_pairs_rows_of_the_same_round_only() -> None:
    rows = [_row("chain", "c=64", 1, rate=500, p99=100), _row("stack", "c=64", 2, rate=500, p99=100)]
    assert _verdict(Results(rows=rows, rounds=2), "P1 c=64") == ("not measured", None)


def test_the_floor_is_a_reference_against_p3s_bounds_never_a_pass_or_miss() -> None:
    rows = [
        dataclasses.replace(_row("floor", "c=1", round_, rate=90, p99=p99), p50_ms=p50)
        for round_, (p50, p99) in enumerate([(12.0, 24.0), (4.0, 9.0), (4.5, 11.0)], start=1)
    ]
    floor = {v.target: v for v in verdicts(Results(rows=rows, rounds=3)) if v.target.startswith("floor")}
    p50, p99 = floor["floor c=1 p50 (no logic)"], floor["floor c=1 p99 (no logic)"]
    assert (p50.figure, p50.bound) == ("4.50 ms", "within P3's 5 ms")  # medians of the rounds
    assert (p99.figure, p99.bound) == ("11.00 ms", "above P3's 10 ms")
    assert (p50.passed, p99.passed) == (None, None)


def test_the_stack_is_compared_with_the_floor_round_by_round() -> None:
    rows = []
    for round_, (floor_rate, stack_rate) in enumerate([(200, 260), (250, 250)], start=1):
        rows += [
            _row("floor", "c=64", round_, rate=floor_rate, p99=1),
            _row("stack", "c=64", round_, rate=stack_rate, p99=1),
        ]
    assert _verdict(Results(rows=rows, rounds=2), "c=64 throughput stack/floor") == ("1.15 (1.00-1.30)", None)


def test_the_soak_verdict_is_the_largest_growth_against_five_percent() -> None:
    soak = _row("stack", "soak 10min", 1, rate=300, p99=300, growth=0.07)
    assert _verdict(Results(rows=[soak]), "P4 soak") == ("+7.0%", False)
    assert _verdict(Results(), "P4 soak") == ("not measured", None)


@pytest.mark.parametrize(
    ("samples", "growth"),
    [
        ([100.0] * 10 + [105.0] * 10, 0.05),  # last tenth against first tenth
        ([100.0, 120.0] + [100.0] * 18, -1 / 6),  # peaks of each tenth: a spike at the start counts
        ([100.0] * 9, None),  # fewer than ten samples: no figure
    ],
)
def test_rss_growth_compares_the_peaks_of_the_first_and_last_tenth(samples: list[float], growth: float | None) -> None:
    result = rss_growth({"gate": samples})
    assert result.get("gate") == (pytest.approx(growth) if growth is not None else None)


def test_only_rows_of_a_series_of_rounds_are_labelled_with_their_round() -> None:
    assert _label(_row("stack", "c=64", 2, rate=1, p99=1)) == "c=64 #2"
    assert _label(_row("stack", "c=150 +200ms", 0, rate=1, p99=1)) == "c=150 +200ms"  # P2 and soak: measured once


def test_errors_are_named_by_status_and_by_socket_error_kind() -> None:
    figures = {"non_2xx": 3.0, "status_503": 2.0, "status_401": 1.0, "timeout_errors": 4.0, "read_errors": 0.0}
    assert _error_kinds(figures) == {"HTTP 503": 2, "HTTP 401": 1, "timeout": 4}
