"""The governed request path, over fakes of every port."""

from __future__ import annotations

from pathlib import Path

import pytest

from techno.gate.v1 import gate_pb2
from techno_core import errors
from techno_gate.adapters.policy_file import load_policy
from techno_gate.application.process import Gatekeeper, ProcessCommand
from techno_gate.domain.audit import AuditKind
from techno_gate.domain.reasons import Reason

from .fakes import FakeAudit, FakeExecutor, FakeKeys, FakeObserver, FakePolicies, stored_key

POLICY = load_policy(Path(__file__).resolve().parents[3] / "config" / "policy.yaml")
TRACE = "0af7651916cd43dd8448eb211c80319c"


def command(api_key: str | None, **overrides: object) -> ProcessCommand:
    fields: dict[str, object] = {
        "trace_id": TRACE,
        "api_key": api_key,
        "action": "summarize",
        "context_id": "app-1",
        "session_id": "",
        "payload": {"text": "hello"},
        "payload_bytes": 20,
        "has_payload": True,
    }
    fields.update(overrides)
    return ProcessCommand(**fields)  # type: ignore[arg-type]


def gatekeeper(keys: FakeKeys, audit: FakeAudit, executor: FakeExecutor) -> tuple[Gatekeeper, FakeObserver]:
    observer = FakeObserver()
    return Gatekeeper(keys, FakePolicies(POLICY), audit, executor, observer, max_payload_bytes=1000), observer


async def test_allowed_request_records_the_decision_before_executing_then_the_outcome() -> None:
    key, record = stored_key()
    journal: list[str] = []
    audit, executor = FakeAudit(journal=journal), FakeExecutor(journal=journal)
    subject, observer = gatekeeper(FakeKeys(record), audit, executor)
    execution = await subject.process(command(key.secret), timeout=5)
    assert execution.provider == "fake"
    assert journal == ["audit:DECISION", "execute", "audit:OUTCOME"]
    decision, outcome = audit.records
    assert (decision.result, decision.reason_codes, decision.principal_id) == ("ALLOW", ("ALLOWED",), record.key_id)
    assert decision.attributes["policy_version"] == POLICY.version
    assert decision.attributes["rule"] == "profiles.default"
    assert (outcome.kind, outcome.result, outcome.trace_id) == (AuditKind.OUTCOME, "SUCCEEDED", TRACE)
    assert key.secret not in repr(audit.records)
    assert observer.decisions == [("ALLOW", "ALLOWED")]
    assert executor.commands[0].profile == "default"


@pytest.mark.parametrize(
    ("presented", "error", "reason"),
    [
        (None, errors.Unauthenticated, Reason.CREDENTIALS_MISSING),
        ("tk_unknown", errors.Unauthenticated, Reason.API_KEY_INVALID),
    ],
)
async def test_missing_or_unknown_key_is_denied_recorded_and_not_executed(
    presented: str | None, error: type[errors.DomainError], reason: Reason
) -> None:
    audit, executor = FakeAudit(), FakeExecutor()
    subject, _ = gatekeeper(FakeKeys(stored_key()[1]), audit, executor)
    with pytest.raises(error) as raised:
        await subject.process(command(presented), timeout=5)
    assert raised.value.reason == reason
    assert [(r.result, r.reason_codes) for r in audit.records] == [("DENY", (reason.value,))]
    assert executor.commands == []


async def test_revoked_key_is_denied() -> None:
    key, record = stored_key(revoked=True)
    subject, _ = gatekeeper(FakeKeys(record), FakeAudit(), FakeExecutor())
    with pytest.raises(errors.Unauthenticated) as raised:
        await subject.process(command(key.secret), timeout=5)
    assert raised.value.reason == Reason.API_KEY_REVOKED


async def test_forbidden_action_is_permission_denied_with_the_rule() -> None:
    key, record = stored_key(profile="restricted")
    audit, executor = FakeAudit(), FakeExecutor()
    subject, _ = gatekeeper(FakeKeys(record), audit, executor)
    with pytest.raises(errors.PermissionDenied) as raised:
        await subject.process(command(key.secret, action="chat", context_id="public-1"), timeout=5)
    assert raised.value.reason == Reason.ACTION_NOT_ALLOWED
    assert audit.records[0].attributes["rule"] == "profiles.restricted.actions"
    assert executor.commands == []


async def test_invalid_request_names_every_bad_field() -> None:
    key, record = stored_key()
    subject, _ = gatekeeper(FakeKeys(record), FakeAudit(), FakeExecutor())
    with pytest.raises(errors.InvalidArgument) as raised:
        await subject.process(
            command(key.secret, action="", context_id="bad id!", has_payload=False, payload_bytes=0), timeout=5
        )
    assert {v.field for v in raised.value.violations} == {"action", "context_id", "payload"}


async def test_oversize_payload_is_refused() -> None:
    key, record = stored_key()
    subject, _ = gatekeeper(FakeKeys(record), FakeAudit(), FakeExecutor())
    with pytest.raises(errors.InvalidArgument) as raised:
        await subject.process(command(key.secret, payload_bytes=1001), timeout=5)
    assert raised.value.violations[0].field == "payload"


async def test_fails_closed_when_the_decision_cannot_be_recorded() -> None:
    key, record = stored_key()
    audit, executor = FakeAudit(failing=True), FakeExecutor()
    subject, observer = gatekeeper(FakeKeys(record), audit, executor)
    with pytest.raises(errors.Unavailable) as raised:
        await subject.process(command(key.secret), timeout=5)
    assert raised.value.reason == Reason.AUDIT_UNAVAILABLE
    assert executor.commands == []
    assert observer.audit_failures == ["DECISION"]
    assert observer.decisions == [("DENY", "AUDIT_UNAVAILABLE")]


async def test_fails_closed_before_the_key_cache_has_loaded() -> None:
    key, record = stored_key()
    executor = FakeExecutor()
    subject, _ = gatekeeper(FakeKeys(record, ready=False), FakeAudit(), executor)
    with pytest.raises(errors.Unavailable) as raised:
        await subject.process(command(key.secret), timeout=5)
    assert raised.value.reason == Reason.AUTH_UNAVAILABLE
    assert executor.commands == []


async def test_executor_failure_is_recorded_as_a_failed_outcome_and_passed_on() -> None:
    key, record = stored_key()
    failure = errors.Unavailable(reason="CIRCUIT_OPEN", message="open", retry_after_seconds=3)
    audit = FakeAudit()
    subject, _ = gatekeeper(FakeKeys(record), audit, FakeExecutor(failure=failure))
    with pytest.raises(errors.Unavailable) as raised:
        await subject.process(command(key.secret), timeout=5)
    assert raised.value is failure
    assert [(r.kind, r.result, r.reason_codes) for r in audit.records][-1] == (
        AuditKind.OUTCOME,
        "FAILED",
        ("CIRCUIT_OPEN",),
    )


def test_reason_mirror_matches_the_proto_enum() -> None:
    proto = {
        name.removeprefix("REASON_CODE_")
        for name in gate_pb2.ReasonCode.DESCRIPTOR.values_by_name
        if name != "REASON_CODE_UNSPECIFIED"
    }
    assert proto == {reason.value for reason in Reason}
