"""The governed request path: authenticate → check scope and shape → policy → declared input → limits →
record the decision → execute → record the outcome.

Two ways to run an action share every governed step: ``admit`` (everything up to the committed decision,
holding the caller's limits) is the same for ``process`` (one answer) and ``stream`` (the answer's text as the
provider produces it, then the whole result); only the run and the outcome it records differ. A stream's
in-flight slot is held until it ends, and its outcome says whether it completed, failed or was cancelled.

``evaluate`` is the whole decision without side effects, shared by ``admit`` and ``dry_run`` so a dry run can
never disagree with the real thing. Fail closed: nothing executes unless its ALLOW decision has been committed
to the audit trail.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
from collections.abc import AsyncGenerator, Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any

from techno_core import errors
from techno_gate.application.authenticate import Authenticator, Credentials
from techno_gate.application.limits import Admission, LimitGate
from techno_gate.application.outbox import OutcomeOutbox
from techno_gate.application.ports import (
    AuditLog,
    Chunk,
    DecisionObserver,
    ExecuteCommand,
    Execution,
    Executor,
    PolicySource,
)
from techno_gate.application.providers import ProviderCatalogue
from techno_gate.application.scopes import authorize
from techno_gate.domain.audit import AuditKind, AuditRecord
from techno_gate.domain.inputs import payload_violations
from techno_gate.domain.principal import Principal
from techno_gate.domain.reasons import Reason
from techno_gate.domain.validation import request_violations

log = logging.getLogger(__name__)

_POLICY_ERRORS: dict[Reason, tuple[type[errors.DomainError], str]] = {
    Reason.PROFILE_UNKNOWN: (errors.PermissionDenied, "the caller's governance profile is not in the policy"),
    Reason.ACTION_NOT_ALLOWED: (errors.PermissionDenied, "the action is not allowed for this profile"),
    Reason.CONTEXT_NOT_ALLOWED: (errors.PermissionDenied, "the context is not allowed for this profile"),
    Reason.PROVIDER_NOT_ALLOWED: (errors.PermissionDenied, "no provider of this action is allowed for the profile"),
    Reason.ACTION_UNKNOWN: (errors.InvalidArgument, "the action does not exist"),
}
_PROVIDER_REFUSED = "the requested provider is not one this action may run on for this profile (see ListModels)"


@dataclass(frozen=True)
class ProcessCommand:
    trace_id: str
    # The RPC whose scope governs the request (full proto name, as in METHOD_SCOPES): Process or StreamProcess;
    # a dry run names Process, whose decision it explains.
    method: str
    credentials: Credentials
    action: str
    context_id: str
    session_id: str
    payload: Any  # the received protobuf Struct (read through a mapping view), or None when absent
    payload_bytes: int
    provider: str = ""  # run on exactly this provider; empty: the policy's order of preference


@dataclass(frozen=True)
class Evaluation:
    """The decision for one request and why; ``error`` is what a DENY answers with."""

    principal: Principal | None
    allowed: bool
    reason: Reason | str
    rule: str
    policy_version: str
    providers: tuple[str, ...] = ()
    error: errors.DomainError | None = None
    remaining: int | None = None

    @property
    def profile(self) -> str:
        return self.principal.profile if self.principal else ""

    def denied_by(self, error: errors.DomainError, rule: str) -> Evaluation:
        return dataclasses.replace(self, allowed=False, reason=error.reason, rule=rule, error=error)

    def with_remaining(self, remaining: int | None) -> Evaluation:
        # Built directly: dataclasses.replace inspects the fields on every call, and this runs on every request.
        return Evaluation(
            self.principal, self.allowed, self.reason, self.rule, self.policy_version, self.providers, self.error,
            remaining,
        )  # fmt: skip


def _denied(principal: Principal | None, policy_version: str, error: errors.DomainError, rule: str) -> Evaluation:
    return Evaluation(principal, False, error.reason, rule, policy_version, error=error)


@dataclass(frozen=True)
class Admitted:
    """An allowed request: its ALLOW decision is committed and it holds its limits (``release`` when it ends)."""

    command: ProcessCommand
    evaluation: Evaluation
    decision: AuditRecord
    admission: Admission | None

    def execute_command(self) -> ExecuteCommand:
        assert self.evaluation.principal is not None
        return ExecuteCommand(
            action=self.command.action,
            context_id=self.command.context_id,
            session_id=self.command.session_id,
            profile=self.evaluation.profile,
            payload=self.command.payload,
            providers=self.evaluation.providers,
            principal_id=self.evaluation.principal.id,
        )

    async def release(self) -> None:
        if self.admission is not None:
            await self.admission.release()


@dataclass
class _Streamed:
    """What a stream delivered so far: an outcome's attributes when it ends before its result."""

    chunks: int = 0
    characters: int = 0

    def attributes(self, ending: str) -> dict[str, Any]:
        return {"stream": ending, "chunks": self.chunks, "streamed_characters": self.characters}


@dataclass
class Gatekeeper:
    authenticator: Authenticator
    policies: PolicySource
    audit: AuditLog
    executor: Executor
    observer: DecisionObserver
    limits: LimitGate
    max_payload_bytes: int
    # Where an outcome memory could not commit waits to be sent again; without one the gap is only logged and
    # counted (memory's reconciler then closes the decision as UNKNOWN).
    outbox: OutcomeOutbox | None = None
    # The executor's providers, which ``*`` in an action's providers stands for; without it ``*`` matches none.
    providers: ProviderCatalogue | None = None
    # Outcome writes that outlive a cancelled request (kept referenced until they finish).
    _settling: set[asyncio.Task[None]] = field(default_factory=set, init=False, repr=False)

    def authenticate(self, credentials: Credentials) -> Principal:
        return self.authenticator.authenticate(credentials)

    def evaluate(
        self,
        command: ProcessCommand,
        principal: Principal | None = None,
        configured: Sequence[str] | errors.DomainError = (),
    ) -> Evaluation:
        """The decision without limits and without side effects. ``configured``: the executor's providers (or
        why they could not be had), for an action whose providers name ``*``."""
        policy = self.policies.current
        try:
            principal = principal or self.authenticate(command.credentials)
        except errors.DomainError as unknown:
            return _denied(None, policy.version, unknown, "")
        try:
            authorize(principal, command.method)
            self._check_shape(command)
            if isinstance(configured, errors.DomainError):
                raise configured
            decision = policy.evaluate(
                principal.profile, command.action, command.context_id, provider=command.provider, configured=configured
            )
            if not decision.allowed:
                cls, message = _POLICY_ERRORS[decision.reason]
                if decision.reason is Reason.PROVIDER_NOT_ALLOWED and command.provider:
                    message = _PROVIDER_REFUSED
                return _denied(principal, policy.version, cls(reason=decision.reason, message=message), decision.rule)
            spec = policy.action(command.action)
            violations = payload_violations(command.payload, spec.input) if spec else []
            if violations:
                error = errors.InvalidArgument(
                    reason=Reason.PAYLOAD_INVALID, message="the payload does not fit the action's input",
                    violations=violations,
                )  # fmt: skip
                return _denied(principal, policy.version, error, f"actions.{command.action}.input")
        except errors.DomainError as refusal:
            return _denied(principal, policy.version, refusal, "")
        return Evaluation(principal, True, Reason.ALLOWED, decision.rule, policy.version, decision.providers)

    async def dry_run(self, command: ProcessCommand) -> Evaluation:
        """What ``process`` would decide for the caller's own request: no execution, no record, no quota."""
        principal = self.authenticate(command.credentials)  # a caller we cannot identify gets no explanation
        evaluation = self.evaluate(command, principal, await self._configured(command.action))
        if not evaluation.allowed:
            return evaluation
        spec = self.policies.current.document.profiles[principal.profile].limits
        return evaluation.with_remaining(await self.limits.remaining(principal, principal.profile, spec))

    async def admit(self, command: ProcessCommand) -> Admitted:
        """Every governed step before anything runs: the decision (recorded either way), the limits (held by the
        returned ``Admitted``) and the committed ALLOW. A denial is recorded, then raised."""
        evaluation = self.evaluate(command, configured=await self._configured(command.action))
        admission: Admission | None = None
        if evaluation.allowed and evaluation.principal is not None:
            limits = self.policies.current.document.profiles[evaluation.profile].limits
            try:
                admission = await self.limits.admit(evaluation.principal, evaluation.profile, limits)
            except errors.DomainError as refusal:
                evaluation = evaluation.denied_by(refusal, f"profiles.{evaluation.profile}.limits")
            else:
                evaluation = evaluation.with_remaining(admission.remaining)
        if not evaluation.allowed:
            await self._record_denial(command, evaluation)
            assert evaluation.error is not None
            raise evaluation.error
        try:
            decision = await self._record_allow(command, evaluation)
        except BaseException:
            if admission is not None:
                await admission.release()
            raise
        return Admitted(command, evaluation, decision, admission)

    async def process(self, command: ProcessCommand, *, timeout: float) -> Execution:
        admitted = await self.admit(command)
        try:
            return await self._execute(admitted, timeout)
        finally:
            await admitted.release()

    async def stream(self, command: ProcessCommand, *, timeout: float) -> AsyncGenerator[Chunk | Execution, None]:
        """The answer's chunks as the provider produces them, then its ``Execution`` (after the outcome is
        recorded). Closing the iteration early cancels the executor's call and records the outcome CANCELLED."""
        admitted = await self.admit(command)
        try:
            async with contextlib.aclosing(self._stream(admitted, timeout)) as events:
                async for event in events:
                    yield event
        finally:
            await admitted.release()

    def _check_shape(self, command: ProcessCommand) -> None:
        violations = request_violations(
            action=command.action,
            context_id=command.context_id,
            session_id=command.session_id,
            has_payload=command.payload is not None,
            payload_bytes=command.payload_bytes,
            max_payload_bytes=self.max_payload_bytes,
        )
        if violations:
            raise errors.InvalidArgument(
                reason=Reason.INVALID_ARGUMENT, message="the request is invalid", violations=violations
            )

    async def _configured(self, action: str) -> tuple[str, ...] | errors.DomainError:
        """The executor's providers when the action's providers name ``*`` (else none are needed)."""
        if self.providers is None or not self.policies.current.needs_configured_providers(action):
            return ()
        try:
            return await self.providers.names()
        except errors.DomainError as error:
            return error

    async def _execute(self, admitted: Admitted, timeout: float) -> Execution:
        try:
            execution = await self.executor.execute(admitted.execute_command(), timeout=timeout)
        except errors.DomainError as failure:
            await self._record_failure(admitted, failure, {})
            raise
        await self._record_outcome(admitted, "SUCCEEDED", (), _execution_attributes(execution))
        return execution

    async def _stream(self, admitted: Admitted, timeout: float) -> AsyncGenerator[Chunk | Execution, None]:
        streamed = _Streamed()
        execution: Execution | None = None
        try:
            async with contextlib.aclosing(self.executor.stream(admitted.execute_command(), timeout=timeout)) as events:
                async for event in events:
                    if isinstance(event, Execution):
                        execution = event  # answered once the stream has ended well and its outcome is recorded
                        continue
                    streamed.chunks += 1
                    streamed.characters += len(event.text)
                    yield event
            if execution is None:
                raise errors.Unavailable(
                    reason=Reason.EXECUTOR_UNAVAILABLE, message="the executor's stream ended without its result"
                )
        except errors.DomainError as failure:
            await self._settle(self._record_failure(admitted, failure, streamed.attributes("failed")))
            raise
        except (asyncio.CancelledError, GeneratorExit):  # the client went away (GeneratorExit: between messages)
            await self._settle(self._record_outcome(admitted, "CANCELLED", (), streamed.attributes("cancelled")))
            raise
        attributes = {**_execution_attributes(execution), **streamed.attributes("completed")}
        await self._settle(self._record_outcome(admitted, "SUCCEEDED", (), attributes))
        yield execution

    async def _settle(self, write: Awaitable[None]) -> None:
        """``write`` finishes even when this request is cancelled while it runs (the outcome of a request whose
        client left must still be recorded); the caller waits for it unless cancelled itself."""
        task = asyncio.ensure_future(write)
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)
        await asyncio.shield(task)

    async def _record_allow(self, command: ProcessCommand, evaluation: Evaluation) -> AuditRecord:
        record = _decision_record(command, evaluation)
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
        return record

    async def _record_denial(self, command: ProcessCommand, evaluation: Evaluation) -> None:
        record = _decision_record(command, evaluation)
        self._observe(record, str(evaluation.reason), result="DENY")
        try:
            await self.audit.record(record)
        except Exception as failure:  # the request is denied either way; the failure is counted and logged
            self.observer.audit_failed(AuditKind.DECISION)
            log.error("denial not recorded", extra={"error": type(failure).__name__})

    async def _record_failure(
        self, admitted: Admitted, failure: errors.DomainError, attributes: dict[str, Any]
    ) -> None:
        await self._record_outcome(admitted, "FAILED", (failure.reason,), {"message": failure.message, **attributes})

    async def _record_outcome(
        self, admitted: Admitted, result: str, reasons: tuple[str, ...], attributes: dict[str, Any]
    ) -> None:
        """The outcome names its decision (``decision_event_id``): a trace may hold several requests' events
        (a client may reuse a ``traceparent``), and memory's reconciler closes exactly the decisions left open."""
        command, principal = admitted.command, admitted.evaluation.principal
        record = AuditRecord(
            trace_id=command.trace_id,
            kind=AuditKind.OUTCOME,
            principal_id=principal.id if principal else "",
            action=command.action,
            context_id=command.context_id,
            result=result,
            reason_codes=reasons,
            attributes={**attributes, "decision_event_id": admitted.decision.event_id},
        )
        try:
            await self.audit.record(record)
        except Exception as failure:  # the work is done: answer it, and keep the outcome until memory takes it
            self.observer.audit_failed(AuditKind.OUTCOME)
            if self.outbox is None:
                log.error("outcome not recorded", extra={"error": type(failure).__name__})
                return
            log.warning("outcome not recorded yet; kept in the outbox", extra={"error": type(failure).__name__})
            self.outbox.put(record)

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


def _execution_attributes(execution: Execution) -> dict[str, Any]:
    return {
        "executor_id": execution.executor_id,
        "provider": execution.provider,
        "model": execution.model,
        "input_tokens": execution.input_tokens,
        "output_tokens": execution.output_tokens,
        "execution_time_ms": execution.execution_time_ms,
        "attempts": execution.attempts,
    }


def _decision_record(command: ProcessCommand, evaluation: Evaluation) -> AuditRecord:
    """Everything needed to explain the decision later: who, what, under which policy, which rule, why."""
    principal = evaluation.principal
    attributes: dict[str, Any] = {
        "policy_version": evaluation.policy_version,
        "rule": evaluation.rule,
        "profile": evaluation.profile,
        "credential": principal.kind.value if principal else "",
        "providers": list(evaluation.providers),
    }
    if command.provider:
        attributes["requested_provider"] = _as_recorded(command.provider)
    if evaluation.remaining is not None:
        attributes["remaining_requests"] = evaluation.remaining
    return AuditRecord(
        trace_id=command.trace_id,
        kind=AuditKind.DECISION,
        principal_id=principal.id if principal else "",
        action=_as_recorded(command.action),
        context_id=_as_recorded(command.context_id),
        result="ALLOW" if evaluation.allowed else "DENY",
        reason_codes=(str(evaluation.reason),),
        attributes=attributes,
    )


_RECORDED_TEXT_LENGTH = 256
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _as_recorded(text: str) -> str:
    """A client's identifier as a denial records it: an ALLOW only ever holds valid ones, but a DENY may be for an
    invalid one, which must still be storable and readable (a NUL cannot be stored in PostgreSQL, a newline would
    forge a line in a log of the trail): controls are escaped (``\\x00``), and the length is bounded."""
    escaped = _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)
    return escaped if len(escaped) <= _RECORDED_TEXT_LENGTH else escaped[: _RECORDED_TEXT_LENGTH - 1] + "…"
