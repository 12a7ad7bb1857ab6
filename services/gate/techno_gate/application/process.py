"""The governed request path: authenticate → validate → evaluate policy → record the decision → execute →
record the outcome.

Fail closed: nothing executes unless its ALLOW decision has been committed to the audit trail.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from techno_core import errors
from techno_gate.application.ports import (
    AuditLog,
    DecisionObserver,
    ExecuteCommand,
    Execution,
    Executor,
    KeyDirectory,
    PolicySource,
)
from techno_gate.domain.audit import AuditKind, AuditRecord
from techno_gate.domain.keys import ApiKeyRecord, hash_key
from techno_gate.domain.policy import PolicyDecision
from techno_gate.domain.reasons import Reason
from techno_gate.domain.validation import request_violations

log = logging.getLogger(__name__)

_DENIAL_ERRORS: dict[Reason, type[errors.DomainError]] = {
    Reason.CREDENTIALS_MISSING: errors.Unauthenticated,
    Reason.API_KEY_INVALID: errors.Unauthenticated,
    Reason.API_KEY_REVOKED: errors.Unauthenticated,
    Reason.PROFILE_UNKNOWN: errors.PermissionDenied,
    Reason.ACTION_NOT_ALLOWED: errors.PermissionDenied,
    Reason.CONTEXT_NOT_ALLOWED: errors.PermissionDenied,
    Reason.ACTION_UNKNOWN: errors.InvalidArgument,
    Reason.INVALID_ARGUMENT: errors.InvalidArgument,
}
_DENIAL_MESSAGES: dict[Reason, str] = {
    Reason.CREDENTIALS_MISSING: "an API key (X-API-Key or Authorization: Bearer) is required",
    Reason.API_KEY_INVALID: "the API key is not valid",
    Reason.API_KEY_REVOKED: "the API key has been revoked",
    Reason.PROFILE_UNKNOWN: "the key's governance profile is not defined in the policy",
    Reason.ACTION_NOT_ALLOWED: "the action is not allowed for this key's profile",
    Reason.CONTEXT_NOT_ALLOWED: "the context is not allowed for this key's profile",
    Reason.ACTION_UNKNOWN: "the action does not exist",
    Reason.INVALID_ARGUMENT: "the request is invalid",
}


@dataclass(frozen=True)
class ProcessCommand:
    trace_id: str
    api_key: str | None
    action: str
    context_id: str
    session_id: str
    payload: Any
    payload_bytes: int
    has_payload: bool


@dataclass
class Gatekeeper:
    keys: KeyDirectory
    policies: PolicySource
    audit: AuditLog
    executor: Executor
    observer: DecisionObserver
    max_payload_bytes: int

    def authenticate(self, api_key: str | None) -> ApiKeyRecord:
        """The caller's key record; raises Unauthenticated / Unavailable (fail closed before the first load)."""
        if not self.keys.ready:
            raise errors.Unavailable(reason=Reason.AUTH_UNAVAILABLE, message="authentication is not available yet")
        if not api_key:
            raise self._denial(Reason.CREDENTIALS_MISSING)
        record = self.keys.lookup(hash_key(api_key))
        if record is None:
            raise self._denial(Reason.API_KEY_INVALID)
        if record.revoked:
            raise self._denial(Reason.API_KEY_REVOKED)
        return record

    async def process(self, command: ProcessCommand, *, timeout: float) -> Execution:
        policy = self.policies.current
        principal: ApiKeyRecord | None = None
        try:
            principal = self.authenticate(command.api_key)
            decision = self._decide(principal, command)
        except errors.DomainError as denial:
            await self._record_denial(command, principal, denial, policy.version)
            raise
        if not decision.allowed:
            refusal = self._denial(decision.reason)
            await self._record_denial(command, principal, refusal, policy.version, rule=decision.rule)
            raise refusal
        await self._record_allow(command, principal, decision, policy.version)
        return await self._execute(command, principal, timeout)

    def _decide(self, principal: ApiKeyRecord, command: ProcessCommand) -> PolicyDecision:
        violations = request_violations(
            action=command.action,
            context_id=command.context_id,
            session_id=command.session_id,
            has_payload=command.has_payload,
            payload_bytes=command.payload_bytes,
            max_payload_bytes=self.max_payload_bytes,
        )
        if violations:
            raise errors.InvalidArgument(
                reason=Reason.INVALID_ARGUMENT, message=_DENIAL_MESSAGES[Reason.INVALID_ARGUMENT], violations=violations
            )
        return self.policies.current.evaluate(principal.profile, command.action, command.context_id)

    async def _execute(self, command: ProcessCommand, principal: ApiKeyRecord, timeout: float) -> Execution:
        execute = ExecuteCommand(
            action=command.action,
            context_id=command.context_id,
            session_id=command.session_id,
            profile=principal.profile,
            payload=command.payload,
        )
        try:
            execution = await self.executor.execute(execute, timeout=timeout)
        except errors.DomainError as failure:
            await self._record_outcome(command, principal, "FAILED", (failure.reason,), {"message": failure.message})
            raise
        await self._record_outcome(
            command,
            principal,
            "SUCCEEDED",
            (),
            {
                "executor_id": execution.executor_id,
                "provider": execution.provider,
                "model": execution.model,
                "input_tokens": execution.input_tokens,
                "output_tokens": execution.output_tokens,
                "execution_time_ms": execution.execution_time_ms,
            },
        )
        return execution

    @staticmethod
    def _denial(reason: Reason) -> errors.DomainError:
        return _DENIAL_ERRORS[reason](reason=reason, message=_DENIAL_MESSAGES[reason])

    async def _record_allow(
        self, command: ProcessCommand, principal: ApiKeyRecord, decision: PolicyDecision, policy_version: str
    ) -> None:
        record = self._decision_record(command, principal, "ALLOW", Reason.ALLOWED, policy_version, decision.rule)
        try:
            await self.audit.record(record)
        except Exception as failure:  # any failure to commit means we cannot prove the decision: deny
            self.observer.audit_failed(AuditKind.DECISION)
            log.error("decision not recorded; denying", extra={"error": type(failure).__name__})
            self._observe(record, Reason.AUDIT_UNAVAILABLE, result="DENY")
            raise errors.Unavailable(
                reason=Reason.AUDIT_UNAVAILABLE, message="the decision could not be recorded; nothing was executed"
            ) from failure
        self._observe(record, Reason.ALLOWED, result="ALLOW")

    async def _record_denial(
        self,
        command: ProcessCommand,
        principal: ApiKeyRecord | None,
        denial: errors.DomainError,
        policy_version: str,
        *,
        rule: str = "",
    ) -> None:
        record = self._decision_record(command, principal, "DENY", denial.reason, policy_version, rule)
        self._observe(record, denial.reason, result="DENY")
        try:
            await self.audit.record(record)
        except Exception as failure:  # the request is denied either way; the failure is counted and logged
            self.observer.audit_failed(AuditKind.DECISION)
            log.error("denial not recorded", extra={"error": type(failure).__name__})

    async def _record_outcome(
        self,
        command: ProcessCommand,
        principal: ApiKeyRecord,
        result: str,
        reasons: tuple[str, ...],
        attributes: dict[str, Any],
    ) -> None:
        record = AuditRecord(
            trace_id=command.trace_id,
            kind=AuditKind.OUTCOME,
            principal_id=principal.key_id,
            action=command.action,
            context_id=command.context_id,
            result=result,
            reason_codes=reasons,
            attributes=attributes,
        )
        try:
            await self.audit.record(record)
        except Exception as failure:  # the work is done: answer it, and make the gap visible
            self.observer.audit_failed(AuditKind.OUTCOME)
            log.error("outcome not recorded", extra={"error": type(failure).__name__})

    @staticmethod
    def _decision_record(
        command: ProcessCommand,
        principal: ApiKeyRecord | None,
        result: str,
        reason: str,
        policy_version: str,
        rule: str,
    ) -> AuditRecord:
        return AuditRecord(
            trace_id=command.trace_id,
            kind=AuditKind.DECISION,
            principal_id=principal.key_id if principal else "",
            action=command.action,
            context_id=command.context_id,
            result=result,
            reason_codes=(str(reason),),
            attributes={
                "policy_version": policy_version,
                "rule": rule,
                "profile": principal.profile if principal else "",
            },
        )

    def _observe(self, record: AuditRecord, reason: str, *, result: str) -> None:
        self.observer.decided(
            result=result,
            reason=str(reason),
            fields={
                "decision_id": record.trace_id,
                "principal_id": record.principal_id,
                "action": record.action,
                "context_id": record.context_id,
                **record.attributes,
            },
        )
