"""The P5 verdict ``make bench-audit`` prints, from hand-made results: against the target, and against the
transport's ceiling when it was measured."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from bench_audit import Ceiling, ClientResult, Options, RunResult, Snapshot, verdict

OPTIONS = Options(
    seconds=10, warmup=0, concurrency=64, events_per_call=1, processes=1, sqlite=False, admin_url="", extra_env={}
)


def _run(events: int, *, verify_status: int = 0, errors: dict[str, int] | None = None) -> RunResult:
    snapshot = Snapshot(0.0, {}, None, None, {})
    client = ClientResult(calls=events, events=events, errors=errors or {})
    return RunResult("group commit", 10.0, 10.0, [client], snapshot, snapshot, verify_status, "verified")


def test_the_target_is_compared_with_the_measured_ceiling() -> None:
    ceiling = Ceiling(10.0, [ClientResult(calls=20_000, events=20_000)], server_cpu_seconds=10.0)

    assert verdict(_run(8_000), OPTIONS, ceiling) == (
        "P5 MISS: 800 durable appends/s (target 5,000/s, 2.5x the transport ceiling), chain verified"
    )


def test_without_a_ceiling_the_verdict_is_the_target_alone() -> None:
    assert verdict(_run(8_000), OPTIONS) == "P5 MISS: 800 durable appends/s (target 5,000/s), chain verified"


def test_the_target_passes_only_with_the_chain_verified_and_no_error() -> None:
    assert verdict(_run(60_000), OPTIONS).startswith("P5 PASS: 6,000 durable appends/s")
    assert verdict(_run(60_000, verify_status=1), OPTIONS).startswith("P5 MISS")
    assert verdict(_run(60_000, errors={"UNAVAILABLE": 1}), OPTIONS).startswith("P5 MISS")
