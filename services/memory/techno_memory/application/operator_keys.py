"""Key changes made by the operator's tools (``techno-keys``, the operator certificate), recorded by memory itself.

The gate records the key changes made through its admin API (with the admin key as principal); an operator tool
calls memory directly, so memory is the only party that can record them honestly: a tool could skip its own
record, memory cannot be skipped. Like the gate's decisions, the request is recorded first (``REQUESTED``) and a
change that cannot be recorded is not made (``AUDIT_UNAVAILABLE``); the result (``SUCCEEDED`` or ``FAILED`` with
its reason) follows under the same trace id.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from techno_core import errors
from techno_memory.application.audit_log import AuditLog
from techno_memory.application.keys import KeyDirectory
from techno_memory.domain.records import ApiKey, AuditEvent, AuditEventKind, NewApiKey, utc_now
from techno_memory.domain.validation import MAX_ID_LENGTH

log = logging.getLogger(__name__)
T = TypeVar("T")
SERVICE = "memory"


class OperatorKeys:
    """``create`` and ``revoke`` for a principal (``operator:<name>``) under a trace id ("" draws a fresh one)."""

    def __init__(self, keys: KeyDirectory, audit: AuditLog) -> None:
        self._keys = keys
        self._audit = audit

    async def create(self, key: NewApiKey, *, principal_id: str, trace_id: str) -> ApiKey:
        attributes: dict[str, Any] = {
            "key_id": key.key_id,
            "name": key.name,
            "profile": key.profile,
            "scopes": list(key.scopes),
        }
        if key.expires_at is not None:
            attributes["expires_at"] = key.expires_at.isoformat()
        return await self._audited("api_key.create", principal_id, trace_id, attributes, lambda: self._keys.create(key))

    async def revoke(self, key_id: str, *, principal_id: str, trace_id: str) -> ApiKey:
        attributes = {"key_id": key_id}
        return await self._audited(
            "api_key.revoke", principal_id, trace_id, attributes, lambda: self._keys.revoke(key_id)
        )

    async def _audited(
        self,
        action: str,
        principal_id: str,
        trace_id: str,
        attributes: dict[str, Any],
        operation: Callable[[], Awaitable[T]],
    ) -> T:
        trace_id = trace_id or secrets.token_hex(16)

        def event(result: str, reasons: tuple[str, ...] = ()) -> AuditEvent:
            return AuditEvent(
                event_id=str(uuid.uuid4()),
                trace_id=trace_id,
                kind=AuditEventKind.ADMIN,
                occurred_at=utc_now(),
                service=SERVICE,
                principal_id=principal_id,
                action=action,
                context_id=str(attributes["key_id"])[:MAX_ID_LENGTH],
                result=result,
                reason_codes=reasons,
                attributes=attributes,
            )

        try:
            await self._audit.append([event("REQUESTED")])
        except errors.InvalidArgument:  # a principal or id no event can hold: the change would be refused too
            raise
        except Exception as failure:  # no record, no change: as the gate does for its decisions
            log.error("operator %s not recorded; refused", action, extra={"error": type(failure).__name__})
            raise errors.Unavailable(
                reason="AUDIT_UNAVAILABLE", message=f"{action} could not be recorded; nothing was changed"
            ) from failure
        try:
            outcome = await operation()
        except errors.DomainError as failure:
            await self._append_result(event("FAILED", (failure.reason,)))
            raise
        await self._append_result(event("SUCCEEDED"))
        return outcome

    async def _append_result(self, result: AuditEvent) -> None:
        try:
            await self._audit.append([result])
        except Exception as failure:  # the change is made: answer it, and make the gap visible in the log
            log.error("result of operator %s not recorded", result.action, extra={"error": type(failure).__name__})
