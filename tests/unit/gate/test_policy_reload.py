"""Policy reloads by signal and by file change, each an ADMIN event; with a fake audit log and a real file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from techno_gate.adapters.policy_file import ReloadablePolicySource
from techno_gate.application.admin_audit import AdminAudit
from techno_gate.application.policy_reload import FILE, SIGNAL, PolicyReloads
from techno_gate.domain.audit import AuditKind, AuditRecord

from .fakes import FakeAudit, FakeObserver

POLICY = Path(__file__).resolve().parents[3] / "config" / "policy.yaml"


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_bytes(POLICY.read_bytes())
    return path


def reloads_of(path: Path) -> tuple[PolicyReloads, ReloadablePolicySource, FakeAudit, FakeObserver]:
    source, audit, failures = ReloadablePolicySource(path), FakeAudit(), FakeObserver()
    return PolicyReloads(source, AdminAudit(audit, failures)), source, audit, failures


def summary(record: AuditRecord) -> tuple[str, str, str, str]:
    return record.kind, record.principal_id, record.action, record.result


async def test_an_unchanged_file_is_not_reloaded_by_the_watch(policy_file: Path) -> None:
    reloads, _, audit, _ = reloads_of(policy_file)
    await reloads.on_file_change()
    assert audit.records == []


async def test_a_signal_reloads_and_is_recorded_even_without_a_change(policy_file: Path) -> None:
    reloads, source, audit, _ = reloads_of(policy_file)
    version = source.current.version
    await reloads.on_signal()
    [record] = audit.records
    assert summary(record) == (AuditKind.ADMIN, SIGNAL, "policy.reload", "SUCCEEDED")
    assert (record.attributes["previous_version"], record.attributes["version"]) == (version, version)
    assert len(record.trace_id) == 32


async def test_an_invalid_file_is_refused_once_and_the_last_good_policy_stays(policy_file: Path) -> None:
    reloads, source, audit, _ = reloads_of(policy_file)
    version = source.current.version
    await asyncio.to_thread(policy_file.write_text, "actions: {}\nprofiles: nonsense\n")
    await reloads.on_file_change()
    await reloads.on_file_change()  # the same invalid content: judged once, not at every poll
    [record] = audit.records
    assert summary(record) == (AuditKind.ADMIN, FILE, "policy.reload", "REFUSED")
    assert record.reason_codes == ("POLICY_INVALID",)
    assert record.attributes["version"] == version == source.current.version

    await asyncio.to_thread(policy_file.write_bytes, POLICY.read_bytes() + b"\n# fixed\n")
    await reloads.on_file_change()
    assert [r.result for r in audit.records] == ["REFUSED", "SUCCEEDED"]
    assert source.current.version == audit.records[-1].attributes["version"] != version


async def test_a_reload_is_applied_when_it_cannot_be_recorded(policy_file: Path) -> None:
    reloads, source, audit, failures = reloads_of(policy_file)
    version = source.current.version
    audit.failing = True
    await asyncio.to_thread(policy_file.write_bytes, POLICY.read_bytes() + b"\n# changed\n")
    await reloads.on_file_change()
    assert source.current.version != version
    assert failures.audit_failures == [AuditKind.ADMIN]
