"""What the gate's use cases need from the outside world. Adapters implement these; tests use fakes."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from techno_gate.domain.audit import AuditRecord
from techno_gate.domain.keys import ApiKeyRecord, NewApiKey
from techno_gate.domain.policy import Policy


class KeyDirectory(Protocol):
    """Looks keys up by hash, from memory held in-process (no database round trip per request)."""

    @property
    def ready(self) -> bool: ...

    def lookup(self, key_hash: str) -> ApiKeyRecord | None: ...


class AuditLog(Protocol):
    async def record(self, record: AuditRecord) -> None:
        """Returns once the record is durably committed; raises if it cannot be."""
        ...


@dataclass(frozen=True)
class ExecuteCommand:
    action: str
    context_id: str
    session_id: str
    profile: str
    # Handed on as received (a protobuf Struct), unconverted.
    payload: Any
    # Providers the policy allows for this request, in the action's order of preference.
    providers: tuple[str, ...] = ()
    # Whose session and preferences apply.
    principal_id: str = ""


@dataclass(frozen=True)
class Execution:
    result: Any  # the executor's result, handed back as received (a protobuf Struct)
    executor_id: str
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    execution_time_ms: int
    attempts: int = 1  # provider calls it took: more than one means retries (or a fallback)


@dataclass(frozen=True)
class Chunk:
    """The next piece of a streamed answer's text."""

    text: str


@dataclass(frozen=True)
class ProviderInfo:
    """A provider the executor is configured with, and the model it runs."""

    name: str
    model: str


class Executor(Protocol):
    async def execute(self, command: ExecuteCommand, *, timeout: float) -> Execution: ...

    def stream(self, command: ExecuteCommand, *, timeout: float) -> AsyncGenerator[Chunk | Execution, None]:
        """Chunks as the provider produces them, then the ``Execution``. Leaving the iteration early (closing
        it) cancels the executor's call, and with it the provider's."""
        ...

    async def providers(self) -> tuple[ProviderInfo, ...]:
        """The executor's configured providers, in its order."""
        ...


class PolicySource(Protocol):
    @property
    def current(self) -> Policy: ...


class DecisionObserver(Protocol):
    """Metrics and the canonical decision log line."""

    def decided(self, *, result: str, reason: str, fields: dict[str, Any]) -> None: ...

    def audit_failed(self, kind: str) -> None: ...


class KeyAdminStore(Protocol):
    """Key management in the memory service (the key's secret never goes there, only its hash)."""

    async def create(self, key: NewApiKey, *, name: str, profile: str, scopes: tuple[str, ...],
                     expires_at: datetime | None) -> ApiKeyRecord: ...  # fmt: skip

    async def list(self) -> list[ApiKeyRecord]: ...

    async def revoke(self, key_id: str) -> ApiKeyRecord: ...
