"""The benchmarks run, once each, as CI's smoke tests. ``scripts/bench_compare.py --quick --rounds 2`` starts the
stack on PostgreSQL and the bare chain, drives both with wrk (each row twice, chain and stack alternating), and
prints its table; ``scripts/bench_audit.py`` with 1 s windows drives memory, then the bare server. Correctness
only: every row served requests and every answer was a 2xx; every append succeeded and the chain verifies. No
timing is asserted (CI machines are too noisy for that; the figures are for people, see docs/benchmarks.md).
wrk and PostgreSQL are required: without them the tests fail, they never skip."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "scripts" / "bench_compare.py"
RUN_TIMEOUT_SECONDS = 150  # the quick run takes ~20 s on an idle 2-core machine

pytestmark = pytest.mark.postgres


@pytest.mark.timeout(RUN_TIMEOUT_SECONDS + 30)
def test_quick_bench_compare_serves_every_row_without_errors(tmp_path: Path) -> None:
    if shutil.which("wrk") is None:
        pytest.fail(
            "wrk is required for the benchmark smoke test (`make bench-tools` installs it, as `make test` does)"
        )
    figures = tmp_path / "bench.json"
    finished = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--rounds", "2", "--floor", "--json", str(figures)],
        capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS, cwd=ROOT, check=False,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr[-3000:]

    document = json.loads(figures.read_text())
    rows = {(row["system"], f"{row['label']} #{row['round']}"): row for row in document["rows"]}
    systems = ("chain", "floor", "stack")
    expected = {(system, f"c={c} #{r}") for system in systems for c in (1, 16) for r in (1, 2)}
    assert set(rows) == expected
    assert document["rounds"] == 2
    for key, row in rows.items():
        assert row["requests"] > 0, key
        assert (row["non_2xx"], row["errors"]) == (0, 0), key
        assert all(cpu >= 0 for cpu in row["cpu_us"].values()), key
    assert set(rows["stack", "c=1 #1"]["cpu_us"]) == {"edge", "gate", "executor", "memory", "pg"}
    assert set(rows["floor", "c=1 #1"]["cpu_us"]) == {"http", "a", "b", "c", "pg"}  # b commits to PostgreSQL
    assert document["database"].startswith("postgresql")

    table = finished.stdout
    for system, label in rows:
        assert any(line.split()[:3] == [system, *label.split()] for line in table.splitlines()), (system, label)
    assert "targets (issue #12), from this run, median of 2 rounds" in table
    for target in ("P1", "P2", "P3", "P4", "P5", "floor c=1 p50"):
        assert f"  {target} " in table, target


AUDIT_BENCH = ROOT / "scripts" / "bench_audit.py"
AUDIT_TIMEOUT_SECONDS = 150  # migrate, start memory, three 1 s windows, verify: ~20 s on an idle 2-core machine


@pytest.mark.timeout(AUDIT_TIMEOUT_SECONDS + 30)
def test_quick_bench_audit_appends_verifies_and_measures_the_transport_ceiling() -> None:
    """``make bench-audit`` in miniature: every phase runs, nothing fails, the chain verifies afterwards."""
    finished = subprocess.run(
        [sys.executable, str(AUDIT_BENCH), "--seconds", "1", "--warmup", "0.5", "--concurrency", "8",
         "--single-seconds", "1", "--ceiling-seconds", "1"],
        capture_output=True, text=True, timeout=AUDIT_TIMEOUT_SECONDS, cwd=ROOT, check=False,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr[-3000:]
    report = finished.stdout
    assert "verify          ok:" in report, report
    assert "errors " not in report, report
    assert "one caller" in report, report
    ceiling = next(line for line in report.splitlines() if line.strip().startswith("events/s"))
    calls, failed = ceiling.split("(")[1].split(" calls, ")
    assert int(calls.replace(",", "")) > 0, ceiling
    assert failed.startswith("0 failed"), ceiling
    assert "of the ceiling" in report, report
    assert "x the transport ceiling), chain verified" in report, report
