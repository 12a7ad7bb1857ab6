"""Streaming through the governed path (Gatekeeper.stream), requested providers, '*' in an action's providers,
and the executor's provider catalogue: over fakes of every port and the in-process limiters."""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
from pathlib import Path

import pytest

from techno_core import errors
from techno_gate.adapters.policy_file import parse_policy
from techno_gate.application.ports import Chunk, Execution, ProviderInfo
from techno_gate.application.process import Gatekeeper, ProcessCommand
from techno_gate.application.providers import ProviderCatalogue
from techno_gate.domain.audit import AuditKind
from techno_gate.domain.reasons import Reason

from .fakes import EXECUTION, FakeAudit, FakeExecutor, stored_key
from .test_process import command, gatekeeper

POLICY = parse_policy(
    Path("stream-policy.yaml"),
    textwrap.dedent(
        """
        actions:
          summarize:
            description: Summarize.
            providers: [fake, "*"]
            input:
              text: {type: string, required: true}
        profiles:
          default:
            actions: [summarize]
            providers: ["*"]
            limits: {max_in_flight: 1}
          narrow:
            actions: [summarize]
            providers: [fake, open*]
        """
    ).encode(),
)
CONFIGURED = (ProviderInfo("openai", "gpt"), ProviderInfo("fake", "fake-1"), ProviderInfo("xai", "grok"))


def streaming(
    executor: FakeExecutor | None = None, audit: FakeAudit | None = None, profile: str = "default"
) -> tuple[Gatekeeper, FakeAudit, FakeExecutor, str]:
    key, record = stored_key(profile)
    executor = executor or FakeExecutor(configured=CONFIGURED)
    subject, _, audit, executor = gatekeeper(record, audit=audit, executor=executor, policy=POLICY)
    subject.providers = ProviderCatalogue(executor.providers)
    return subject, audit, executor, key.secret


async def collect(subject: Gatekeeper, request: ProcessCommand) -> list[Chunk | Execution]:
    return [event async for event in subject.stream(request, timeout=5)]


def outcome_of(audit: FakeAudit) -> tuple[str, tuple[str, ...], dict[str, object]]:
    record = audit.records[-1]
    assert record.kind == AuditKind.OUTCOME
    return record.result, record.reason_codes, record.attributes


async def test_a_stream_is_decided_and_recorded_before_it_runs_and_ends_with_its_result() -> None:
    journal: list[str] = []
    subject, audit, executor, key = streaming(
        FakeExecutor(configured=CONFIGURED, journal=journal), FakeAudit(journal=journal)
    )
    events = await collect(subject, command(key))
    assert events == [Chunk("He"), Chunk("llo"), EXECUTION]
    assert journal == ["audit:DECISION", "stream", "audit:OUTCOME"]  # the result is answered after its outcome
    result, _, attributes = outcome_of(audit)
    assert result == "SUCCEEDED"
    assert attributes["stream"] == "completed"
    assert (attributes["provider"], attributes["input_tokens"], attributes["output_tokens"]) == ("fake", 3, 2)
    assert (attributes["chunks"], attributes["streamed_characters"]) == (2, 5)
    assert executor.commands[0].providers == ("fake", "openai", "xai")  # '*': the executor's others, in order
    await collect(subject, command(key))  # the key's one in-flight slot was given back


async def test_closing_a_stream_between_chunks_cancels_the_executor_records_cancelled_and_frees_the_slot() -> None:
    subject, audit, executor, key = streaming()
    events = subject.stream(command(key), timeout=5)
    assert await anext(events) == Chunk("He")
    await events.aclose()  # what grpc.aio does when the client leaves while the answer is being sent
    assert executor.closed.is_set()
    result, reasons, attributes = outcome_of(audit)
    assert (result, reasons) == ("CANCELLED", ())
    assert (attributes["stream"], attributes["chunks"]) == ("cancelled", 1)
    assert attributes["decision_event_id"] == audit.records[0].event_id
    await collect(subject, command(key))


async def test_a_cancelled_stream_still_records_its_outcome() -> None:
    """The client's cancellation arrives while the gate waits for the executor's next chunk."""
    subject, audit, _, key = streaming()
    waiting = asyncio.Event()

    class Hanging(FakeExecutor):
        async def stream(self, command, *, timeout):  # type: ignore[no-untyped-def]
            yield Chunk("He")
            try:
                waiting.set()
                await asyncio.Event().wait()
            finally:
                self.closed.set()

    subject.executor = hanging = Hanging()
    task = asyncio.ensure_future(collect(subject, command(key)))
    await waiting.wait()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert hanging.closed.is_set()
    assert outcome_of(audit)[0] == "CANCELLED"


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (errors.Unavailable(reason="PROVIDER_TIMEOUT", message="slow"), "PROVIDER_TIMEOUT"),
        (None, Reason.EXECUTOR_UNAVAILABLE),  # the executor's stream ended without its result
    ],
)
async def test_a_stream_that_fails_midway_is_recorded_failed_and_raises(
    failure: errors.DomainError | None, reason: str
) -> None:
    subject, audit, executor, key = streaming(FakeExecutor(failure=failure, result=False))
    received: list[Chunk | Execution] = []
    with pytest.raises(errors.Unavailable) as raised:  # noqa: PT012 (and the chunks before the failure)
        async for event in subject.stream(command(key), timeout=5):
            received.append(event)  # noqa: PERF401
    assert raised.value.reason == reason
    assert received == [Chunk("He"), Chunk("llo")]
    result, reasons, attributes = outcome_of(audit)
    assert (result, reasons, attributes["stream"], attributes["chunks"]) == ("FAILED", (reason,), "failed", 2)
    executor.failure, executor.result = None, True
    await collect(subject, command(key))  # the slot was given back


async def test_a_denied_stream_never_reaches_the_executor() -> None:
    subject, audit, executor, key = streaming()
    with pytest.raises(errors.PermissionDenied):
        await collect(subject, command(key, action="summarize", provider="anthropic"))
    assert executor.commands == []
    assert [(r.result, r.reason_codes) for r in audit.records] == [("DENY", ("PROVIDER_NOT_ALLOWED",))]


@pytest.mark.parametrize(
    ("profile", "provider", "providers"),
    [
        ("default", "xai", ("xai",)),  # named by '*'
        ("narrow", "openai", ("openai",)),
        ("narrow", "", ("fake", "openai")),
    ],
)
async def test_a_requested_provider_runs_alone(profile: str, provider: str, providers: tuple[str, ...]) -> None:
    subject, audit, executor, key = streaming(profile=profile)
    await subject.process(command(key, provider=provider), timeout=5)
    assert executor.commands[0].providers == providers
    assert audit.records[0].attributes.get("requested_provider", "") == provider


@pytest.mark.parametrize(
    ("profile", "provider", "rule"),
    [
        ("narrow", "xai", "profiles.narrow.providers"),  # the action has it, the profile's globs do not
        ("default", "anthropic", "actions.summarize.providers"),  # not configured, so '*' does not name it
    ],
)
async def test_a_requested_provider_not_allowed_is_denied_naming_the_rule(
    profile: str, provider: str, rule: str
) -> None:
    subject, audit, executor, key = streaming(profile=profile)
    with pytest.raises(errors.PermissionDenied) as denied:
        await subject.process(command(key, provider=provider), timeout=5)
    assert denied.value.reason == Reason.PROVIDER_NOT_ALLOWED
    assert (audit.records[0].result, audit.records[0].attributes["rule"]) == ("DENY", rule)
    assert audit.records[0].attributes["requested_provider"] == provider
    assert executor.commands == []


async def test_an_action_naming_every_provider_is_denied_when_the_executor_cannot_say_which() -> None:
    subject, audit, executor, key = streaming()

    async def unreachable() -> tuple[ProviderInfo, ...]:
        raise errors.Unavailable(reason=Reason.EXECUTOR_UNAVAILABLE, message="down")

    subject.providers = ProviderCatalogue(unreachable)
    with pytest.raises(errors.Unavailable):
        await subject.process(command(key), timeout=5)
    assert [(r.result, r.reason_codes) for r in audit.records] == [("DENY", ("EXECUTOR_UNAVAILABLE",))]
    assert executor.commands == []


async def test_the_catalogue_asks_once_for_many_callers_and_again_when_stale_or_after_a_failure() -> None:
    now = [0.0]
    asked: list[int] = []
    failing = [False]
    release = asyncio.Event()

    async def fetch() -> tuple[ProviderInfo, ...]:
        asked.append(1)
        await release.wait()
        if failing[0]:
            raise errors.Unavailable(reason=Reason.EXECUTOR_UNAVAILABLE, message="down")
        return CONFIGURED

    catalogue = ProviderCatalogue(fetch, ttl_seconds=10, clock=lambda: now[0])
    waiting = [asyncio.ensure_future(catalogue.names()) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*waiting) == [("openai", "fake", "xai")] * 5
    assert len(asked) == 1
    now[0] = 9.9
    await catalogue.providers()
    assert len(asked) == 1
    now[0], failing[0] = 10.0, True
    with pytest.raises(errors.Unavailable):
        await catalogue.providers()
    failing[0] = False
    assert await catalogue.providers() == CONFIGURED
    assert len(asked) == 3
