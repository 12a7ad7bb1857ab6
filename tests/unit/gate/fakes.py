"""In-memory implementations of the gate's ports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from techno_core import errors
from techno_gate.application.ports import ExecuteCommand, Execution
from techno_gate.domain.audit import AuditRecord
from techno_gate.domain.keys import ApiKeyRecord, NewApiKey, generate_key
from techno_gate.domain.policy import Policy


class FakeKeys:
    def __init__(self, *records: ApiKeyRecord, ready: bool = True) -> None:
        self._by_hash = {r.key_hash: r for r in records}
        self.ready = ready

    def lookup(self, key_hash: str) -> ApiKeyRecord | None:
        return self._by_hash.get(key_hash)


@dataclass
class FakeAudit:
    records: list[AuditRecord] = field(default_factory=list)
    failing: bool = False
    journal: list[str] | None = None

    async def record(self, record: AuditRecord) -> None:
        if self.failing:
            raise ConnectionError("memory unreachable")
        self.records.append(record)
        if self.journal is not None:
            self.journal.append(f"audit:{record.kind}")


@dataclass
class FakeExecutor:
    commands: list[ExecuteCommand] = field(default_factory=list)
    failure: errors.DomainError | None = None
    journal: list[str] | None = None

    async def execute(self, command: ExecuteCommand, *, timeout: float) -> Execution:
        if self.journal is not None:
            self.journal.append("execute")
        self.commands.append(command)
        if self.failure is not None:
            raise self.failure
        return Execution({"summary": "ok"}, "executor-1", "fake", "fake-1", 3, 2, 1)


@dataclass
class FakePolicies:
    current: Policy


@dataclass
class FakeObserver:
    decisions: list[tuple[str, str]] = field(default_factory=list)
    audit_failures: list[str] = field(default_factory=list)

    def decided(self, *, result: str, reason: str, fields: dict[str, Any]) -> None:
        self.decisions.append((result, reason))

    def audit_failed(self, kind: str) -> None:
        self.audit_failures.append(kind)


def stored_key(profile: str = "default", *, revoked: bool = False) -> tuple[NewApiKey, ApiKeyRecord]:
    from datetime import UTC, datetime

    key = generate_key()
    record = ApiKeyRecord(
        key_id=key.key_id,
        prefix=key.prefix,
        key_hash=key.key_hash,
        name="test",
        profile=profile,
        created_at=datetime.now(UTC),
        revoked_at=datetime.now(UTC) if revoked else None,
    )
    return key, record
