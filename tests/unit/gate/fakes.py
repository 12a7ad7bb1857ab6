"""In-memory implementations of the gate's ports."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from techno_core import errors
from techno_gate.application.ports import Chunk, ExecuteCommand, Execution, ProviderInfo
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


EXECUTION = Execution({"summary": "ok"}, "executor-1", "fake", "fake-1", 3, 2, 1)


@dataclass
class FakeExecutor:
    """``execute`` answers ``EXECUTION`` (or raises ``failure``); ``stream`` yields ``chunks``, then raises
    ``failure``, or ends without its result (``result=False``), or yields ``EXECUTION``. ``closed`` is set when a
    stream's iteration ends, however it ends (the real adapter cancels the executor's call then)."""

    commands: list[ExecuteCommand] = field(default_factory=list)
    failure: errors.DomainError | None = None
    journal: list[str] | None = None
    chunks: tuple[str, ...] = ("He", "llo")
    result: bool = True
    configured: tuple[ProviderInfo, ...] = (ProviderInfo("fake", "fake-1"),)
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def execute(self, command: ExecuteCommand, *, timeout: float) -> Execution:
        if self.journal is not None:
            self.journal.append("execute")
        self.commands.append(command)
        if self.failure is not None:
            raise self.failure
        return EXECUTION

    async def stream(self, command: ExecuteCommand, *, timeout: float) -> AsyncGenerator[Chunk | Execution, None]:
        if self.journal is not None:
            self.journal.append("stream")
        self.commands.append(command)
        try:
            for text in self.chunks:
                yield Chunk(text)
            if self.failure is not None:
                raise self.failure
            if self.result:
                yield EXECUTION
        finally:
            self.closed.set()

    async def providers(self) -> tuple[ProviderInfo, ...]:
        return self.configured


@dataclass
class FakePolicies:
    current: Policy


@dataclass
class FakeObserver:
    decisions: list[tuple[str, str]] = field(default_factory=list)
    decision_fields: list[dict[str, Any]] = field(default_factory=list)
    audit_failures: list[str] = field(default_factory=list)
    limit_rejections: list[str] = field(default_factory=list)
    store_failures: list[bool] = field(default_factory=list)

    def decided(self, *, result: str, reason: str, fields: dict[str, Any]) -> None:
        self.decisions.append((result, reason))
        self.decision_fields.append(fields)

    def audit_failed(self, kind: str) -> None:
        self.audit_failures.append(kind)

    def rejected(self, scope: str) -> None:
        self.limit_rejections.append(scope)

    def store_unavailable(self, allowed: bool) -> None:
        self.store_failures.append(allowed)


def stored_key(
    profile: str = "default",
    *,
    revoked: bool = False,
    scopes: frozenset[str] = frozenset({"process"}),
    expires_at: datetime | None = None,
) -> tuple[NewApiKey, ApiKeyRecord]:
    key = generate_key()
    record = ApiKeyRecord(
        key_id=key.key_id,
        prefix=key.prefix,
        key_hash=key.key_hash,
        name="test",
        profile=profile,
        created_at=datetime.now(UTC),
        revoked_at=datetime.now(UTC) if revoked else None,
        scopes=scopes,
        expires_at=expires_at,
    )
    return key, record
