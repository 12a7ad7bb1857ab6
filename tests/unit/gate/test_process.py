"""The governed request path, over fakes of every port and the in-process limiters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import struct_pb2

from techno.gate.v1 import gate_pb2
from techno_core import errors
from techno_gate.adapters.limits_local import LocalConcurrencyLimiter, LocalRateLimiter
from techno_gate.adapters.policy_file import StaticPolicySource, load_policy
from techno_gate.application.authenticate import Authenticator, Credentials, NoTokens
from techno_gate.application.limits import LimitGate
from techno_gate.application.process import Gatekeeper, ProcessCommand
from techno_gate.domain.audit import AuditKind
from techno_gate.domain.keys import ApiKeyRecord
from techno_gate.domain.policy import Policy
from techno_gate.domain.reasons import Reason

from .fakes import FakeAudit, FakeExecutor, FakeKeys, FakeObserver, stored_key

POLICY = load_policy(Path(__file__).resolve().parents[3] / "config" / "policy.yaml")
TRACE = "0af7651916cd43dd8448eb211c80319c"
PROCESS = "techno.gate.v1.GateService.Process"


def payload(**fields: Any) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(fields or {"text": "hello"})
    return struct


def command(api_key: str | None, **overrides: object) -> ProcessCommand:
    fields: dict[str, object] = {
        "trace_id": TRACE,
        "method": PROCESS,
        "credentials": Credentials(api_key=api_key),
        "action": "summarize",
        "context_id": "app-1",
        "session_id": "",
        "payload": payload(),
        "payload_bytes": 20,
    }
    fields.update(overrides)
    return ProcessCommand(**fields)  # type: ignore[arg-type]


def gatekeeper(
    *records: ApiKeyRecord,
    audit: FakeAudit | None = None,
    executor: FakeExecutor | None = None,
    policy: Policy = POLICY,
    ready: bool = True,
) -> tuple[Gatekeeper, FakeObserver, FakeAudit, FakeExecutor]:
    observer, audit, executor = FakeObserver(), audit or FakeAudit(), executor or FakeExecutor()
    limits = LimitGate(LocalRateLimiter(), LocalConcurrencyLimiter(), observer)
    subject = Gatekeeper(
        Authenticator(FakeKeys(*records, ready=ready), NoTokens()),
        StaticPolicySource(policy),
        audit,
        executor,
        observer,
        limits,
        max_payload_bytes=1000,
    )
    return subject, observer, audit, executor


async def test_allowed_request_records_the_decision_before_executing_then_the_outcome() -> None:
    key, record = stored_key()
    journal: list[str] = []
    subject, observer, audit, executor = gatekeeper(
        record, audit=FakeAudit(journal=journal), executor=FakeExecutor(journal=journal)
    )
    execution = await subject.process(command(key.secret), timeout=5)
    assert execution.provider == "fake"
    assert journal == ["audit:DECISION", "execute", "audit:OUTCOME"]
    decision, outcome = audit.records
    assert (decision.result, decision.reason_codes, decision.principal_id) == ("ALLOW", ("ALLOWED",), record.key_id)
    assert decision.attributes["policy_version"] == POLICY.version
    assert decision.attributes["rule"] == "profiles.default"
    assert decision.attributes["remaining_requests"] == 999  # burst 1000, one used
    assert (outcome.kind, outcome.result, outcome.trace_id) == (AuditKind.OUTCOME, "SUCCEEDED", TRACE)
    assert key.secret not in repr(audit.records)
    assert observer.decisions == [("ALLOW", "ALLOWED")]
    assert executor.commands[0].profile == "default"
    assert executor.commands[0].providers == ("fake",)


@pytest.mark.parametrize(
    ("presented", "reason"),
    [(None, Reason.CREDENTIALS_MISSING), ("tk_unknown", Reason.API_KEY_INVALID)],
)
async def test_missing_or_unknown_key_is_denied_recorded_and_not_executed(
    presented: str | None, reason: Reason
) -> None:
    subject, _, audit, executor = gatekeeper(stored_key()[1])
    with pytest.raises(errors.Unauthenticated) as raised:
        await subject.process(command(presented), timeout=5)
    assert raised.value.reason == reason
    assert [(r.result, r.reason_codes) for r in audit.records] == [("DENY", (reason.value,))]
    assert executor.commands == []


@pytest.mark.parametrize(
    ("record_options", "reason"),
    [
        ({"revoked": True}, Reason.API_KEY_REVOKED),
        ({"expires_at": datetime.now(UTC) - timedelta(seconds=1)}, Reason.API_KEY_EXPIRED),
    ],
)
async def test_revoked_or_expired_key_is_denied(record_options: dict[str, object], reason: Reason) -> None:
    key, record = stored_key(**record_options)  # type: ignore[arg-type]
    subject, *_ = gatekeeper(record)
    with pytest.raises(errors.Unauthenticated) as raised:
        await subject.process(command(key.secret), timeout=5)
    assert raised.value.reason == reason


async def test_a_key_in_authorization_bearer_works_too() -> None:
    key, record = stored_key()
    subject, *_ = gatekeeper(record)
    await subject.process(command(None, credentials=Credentials(bearer=key.secret)), timeout=5)


async def test_a_jwt_is_refused_when_tokens_are_not_configured() -> None:
    subject, *_ = gatekeeper(stored_key()[1])
    with pytest.raises(errors.Unauthenticated) as raised:
        await subject.process(command(None, credentials=Credentials(bearer="a.b.c")), timeout=5)
    assert raised.value.reason == Reason.TOKEN_INVALID


async def test_a_key_without_the_process_scope_is_refused() -> None:
    key, record = stored_key(scopes=frozenset({"admin"}))
    subject, _, _, executor = gatekeeper(record)
    with pytest.raises(errors.PermissionDenied) as raised:
        await subject.process(command(key.secret), timeout=5)
    assert raised.value.reason == Reason.SCOPE_MISSING
    assert raised.value.metadata == {"scope": "process"}
    assert executor.commands == []


async def test_a_method_without_a_declared_scope_is_refused_to_a_key_holding_every_scope_and_recorded() -> None:
    key, record = stored_key(scopes=frozenset({"process", "audit:read", "admin"}))
    subject, _, audit, executor = gatekeeper(record)
    with pytest.raises(errors.PermissionDenied) as raised:
        await subject.process(command(key.secret, method="techno.gate.v1.GateService.Undeclared"), timeout=5)
    assert raised.value.reason == Reason.SCOPE_MISSING
    [decision] = audit.records
    assert (decision.kind, decision.result, decision.reason_codes) == (AuditKind.DECISION, "DENY", ("SCOPE_MISSING",))
    assert executor.commands == []


async def test_forbidden_action_is_permission_denied_with_the_rule() -> None:
    key, record = stored_key(profile="restricted")
    subject, _, audit, executor = gatekeeper(record)
    with pytest.raises(errors.PermissionDenied) as raised:
        await subject.process(
            command(key.secret, action="chat", context_id="public-1", payload=payload(message="hi")), timeout=5
        )
    assert raised.value.reason == Reason.ACTION_NOT_ALLOWED
    assert audit.records[0].attributes["rule"] == "profiles.restricted.actions"
    assert executor.commands == []


async def test_invalid_request_names_every_bad_field() -> None:
    key, record = stored_key()
    subject, *_ = gatekeeper(record)
    with pytest.raises(errors.InvalidArgument) as raised:
        await subject.process(command(key.secret, action="", context_id="bad id!", payload=None), timeout=5)
    assert {v.field for v in raised.value.violations} == {"action", "context_id", "payload"}


async def test_payload_is_checked_against_the_declared_input() -> None:
    key, record = stored_key()
    subject, _, audit, _ = gatekeeper(record)
    bad = payload(text="a\x00b", extra=1)
    with pytest.raises(errors.InvalidArgument) as raised:
        await subject.process(command(key.secret, payload=bad), timeout=5)
    assert raised.value.reason == Reason.PAYLOAD_INVALID
    assert {(v.field, v.description) for v in raised.value.violations} == {
        ("payload.text", "contains control characters"),
        ("payload.extra", "is not an input of this action"),
    }
    assert audit.records[0].attributes["rule"] == "actions.summarize.input"


async def test_oversize_payload_is_refused() -> None:
    key, record = stored_key()
    subject, *_ = gatekeeper(record)
    with pytest.raises(errors.InvalidArgument) as raised:
        await subject.process(command(key.secret, payload_bytes=1001), timeout=5)
    assert raised.value.violations[0].field == "payload"


async def test_rate_limit_refuses_with_quota_failure_and_retry_after() -> None:
    key, record = stored_key(profile="restricted")  # 60 per minute, burst 60
    subject, observer, audit, executor = gatekeeper(record)
    request = command(key.secret, context_id="public-1")
    for _ in range(60):
        await subject.process(request, timeout=5)
    with pytest.raises(errors.ResourceExhausted) as raised:
        await subject.process(request, timeout=5)
    assert raised.value.reason == Reason.RATE_LIMITED
    assert raised.value.retry_after_seconds is not None
    assert 0 < raised.value.retry_after_seconds <= 1.0  # one unit refills every second
    assert raised.value.quota_violations[0].subject == f"key:{record.key_id}/requests_per_minute"
    assert audit.records[-1].attributes["rule"] == "profiles.restricted.limits"
    assert len(executor.commands) == 60
    assert observer.limit_rejections == ["key"]


async def test_fails_closed_when_the_decision_cannot_be_recorded() -> None:
    key, record = stored_key()
    subject, observer, _, executor = gatekeeper(record, audit=FakeAudit(failing=True))
    with pytest.raises(errors.Unavailable) as raised:
        await subject.process(command(key.secret), timeout=5)
    assert raised.value.reason == Reason.AUDIT_UNAVAILABLE
    assert executor.commands == []
    assert observer.audit_failures == ["DECISION"]
    assert observer.decisions == [("DENY", "AUDIT_UNAVAILABLE")]


async def test_fails_closed_before_the_key_cache_has_loaded() -> None:
    key, record = stored_key()
    subject, _, _, executor = gatekeeper(record, ready=False)
    with pytest.raises(errors.Unavailable) as raised:
        await subject.process(command(key.secret), timeout=5)
    assert raised.value.reason == Reason.AUTH_UNAVAILABLE
    assert executor.commands == []


async def test_executor_failure_is_recorded_as_a_failed_outcome_and_passed_on() -> None:
    key, record = stored_key()
    failure = errors.Unavailable(reason="CIRCUIT_OPEN", message="open", retry_after_seconds=3)
    subject, _, audit, _ = gatekeeper(record, executor=FakeExecutor(failure=failure))
    with pytest.raises(errors.Unavailable) as raised:
        await subject.process(command(key.secret), timeout=5)
    assert raised.value is failure
    assert [(r.kind, r.result, r.reason_codes) for r in audit.records][-1] == (
        AuditKind.OUTCOME,
        "FAILED",
        ("CIRCUIT_OPEN",),
    )


async def test_dry_run_explains_without_executing_recording_or_consuming() -> None:
    key, record = stored_key(profile="restricted")
    subject, _, audit, executor = gatekeeper(record)
    allowed = await subject.dry_run(command(key.secret, context_id="public-1"))
    denied = await subject.dry_run(command(key.secret, context_id="private-1"))
    again = await subject.dry_run(command(key.secret, context_id="public-1"))
    assert (allowed.allowed, allowed.rule, allowed.remaining) == (True, "profiles.restricted", 59)
    assert (denied.allowed, denied.reason, denied.rule) == (
        False,
        Reason.CONTEXT_NOT_ALLOWED,
        "profiles.restricted.contexts",
    )
    assert again.remaining == 59  # the dry runs consumed nothing
    assert audit.records == []
    assert executor.commands == []


def test_reason_mirror_matches_the_proto_enum() -> None:
    proto = {
        name.removeprefix("REASON_CODE_")
        for name in gate_pb2.ReasonCode.DESCRIPTOR.values_by_name
        if name != "REASON_CODE_UNSPECIFIED"
    }
    assert proto == {reason.value for reason in Reason}
