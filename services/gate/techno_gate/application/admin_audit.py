"""Every admin operation as ``ADMIN`` events of the audit trail, recorded the way decisions are.

An operation of an ``admin``-scoped caller is recorded ``REQUESTED`` **before** it runs, and is refused with
``AUDIT_UNAVAILABLE`` when that record cannot be committed: as with a request's ALLOW, nothing changes that the
trail cannot show. Its result follows under the same trace id: ``SUCCEEDED``, or ``FAILED`` with the reason (that
write is best effort, like an outcome: the change is made, so it is answered, and a missing result is logged and
counted). A caller without the scope is recorded ``REFUSED`` (best effort, like a denial). Changes the gate makes
on its own (a policy reload) are recorded once, with their result, by ``record``.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from techno_core import errors
from techno_gate.application.ports import AuditLog
from techno_gate.application.scopes import Caller
from techno_gate.domain.audit import AuditKind, AuditRecord
from techno_gate.domain.reasons import Reason

log = logging.getLogger(__name__)
T = TypeVar("T")

REQUESTED, SUCCEEDED, FAILED, REFUSED = "REQUESTED", "SUCCEEDED", "FAILED", "REFUSED"


class AuditFailures(Protocol):
    def audit_failed(self, kind: str) -> None: ...


@dataclass(frozen=True)
class AdminOperation:
    """What an admin event names: the operation (``api_key.create`` …), its target (a key id, a provider) and
    its settings."""

    action: str
    target: str
    attributes: dict[str, Any]


def _fresh_trace_id() -> str:
    return secrets.token_hex(16)


@dataclass
class AdminAudit:
    """``trace_id`` answers the current request's trace id ("" outside a trace: a fresh one is drawn)."""

    audit: AuditLog
    failures: AuditFailures
    trace_id: Callable[[], str] = _fresh_trace_id

    async def run(
        self,
        caller: Caller,
        operation: AdminOperation,
        execute: Callable[[], Awaitable[T]],
        *,
        check: Callable[[], None] = lambda: None,
    ) -> T:
        """``execute`` for ``caller`` once it holds its method's scope, recorded before (fail closed) and after.
        ``check`` validates what the
        records themselves would carry: a request failing it is refused (400) without being recorded, since it
        changes nothing and its fields are not fit for the audit trail (a NUL in a name cannot even be stored in
        PostgreSQL). Other invalid requests are recorded as REQUESTED then FAILED."""
        trace_id = self.trace_id() or _fresh_trace_id()
        try:
            caller.authorized()
        except errors.DomainError as refusal:
            await self._record_best_effort(self._event(trace_id, caller.id, operation, REFUSED, (refusal.reason,)))
            raise
        check()
        requested = self._event(trace_id, caller.id, operation, REQUESTED)
        try:
            await self.audit.record(requested)
        except Exception as failure:  # cannot prove who asked: change nothing
            self.failures.audit_failed(AuditKind.ADMIN)
            log.error("%s not recorded; refused", operation.action, extra={"error": type(failure).__name__})
            raise errors.Unavailable(
                reason=Reason.AUDIT_UNAVAILABLE,
                message=f"{operation.action} could not be recorded; nothing was changed",
            ) from failure
        try:
            outcome = await execute()
        except errors.DomainError as failure:
            await self._record_best_effort(self._event(trace_id, caller.id, operation, FAILED, (failure.reason,)))
            raise
        await self._record_best_effort(self._event(trace_id, caller.id, operation, SUCCEEDED))
        return outcome

    async def record(self, principal_id: str, operation: AdminOperation, result: str, reason: str = "") -> None:
        """One event for a change already decided (a policy reload), best effort."""
        trace_id = self.trace_id() or _fresh_trace_id()
        reasons = (reason,) if reason else ()
        await self._record_best_effort(self._event(trace_id, principal_id, operation, result, reasons))

    def _event(
        self, trace_id: str, principal_id: str, operation: AdminOperation, result: str, reasons: tuple[str, ...] = ()
    ) -> AuditRecord:
        return AuditRecord(
            trace_id=trace_id,
            kind=AuditKind.ADMIN,
            principal_id=principal_id,
            action=operation.action,
            context_id=operation.target,
            result=result,
            reason_codes=reasons,
            attributes=operation.attributes,
        )

    async def _record_best_effort(self, record: AuditRecord) -> None:
        try:
            await self.audit.record(record)
        except Exception as failure:
            self.failures.audit_failed(AuditKind.ADMIN)
            log.error(
                "%s %s not recorded", record.action, record.result.lower(), extra={"error": type(failure).__name__}
            )
