"""The ExecuteAction use case with a fake ConversationContext: history in the prompt for a chat with a session,
preferences for every action, stateless chat without a session, what fails and what proceeds, and the deadline
handed to memory."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from techno_core.errors import InvalidArgument, NotFound, Unavailable
from techno_executor.adapters.action_file import shipped_catalogue
from techno_executor.application.context import ContextLoader, ConversationContext, Preferences, Turn
from techno_executor.application.execute import ExecuteAction, ExecuteCommand, ProviderRoute
from techno_executor.application.ports import NullObserver
from techno_executor.domain.breaker import CircuitBreaker
from techno_executor.domain.prompt import MAX_HISTORY_TURNS
from techno_executor.domain.retry import RetryPolicy

from .fakes import FakeClock, ScriptedProvider

ALICE, SESSION = "key-alice", "session-1"


@dataclass
class FakeContext:
    """Sessions and preferences in dicts; ``down`` makes every call fail as memory unreachable would."""

    sessions: dict[tuple[str, str], list[Turn]] = field(default_factory=dict)
    stored: dict[str, Preferences] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)  # history | preferences | remember
    timeouts: list[tuple[str, float | None]] = field(default_factory=list)

    def _check(self, what: str, timeout: float | None) -> None:
        self.timeouts.append((what, timeout))
        if what in self.down:
            raise Unavailable(reason="MEMORY_UNAVAILABLE", message="memory is down")

    def _session(self, principal_id: str, session_id: str) -> list[Turn]:
        try:
            return self.sessions[(principal_id, session_id)]
        except KeyError:
            raise NotFound(reason="SESSION_NOT_FOUND", message="no such session") from None

    async def history(self, principal_id: str, session_id: str, *, timeout: float | None = None) -> list[Turn]:
        self._check("history", timeout)
        return list(self._session(principal_id, session_id))

    async def remember(
        self,
        principal_id: str,
        session_id: str,
        user_message: str,
        assistant_reply: str,
        *,
        timeout: float | None = None,
    ) -> None:
        self._check("remember", timeout)
        self._session(principal_id, session_id).extend([("user", user_message), ("assistant", assistant_reply)])

    async def preferences(self, principal_id: str, *, timeout: float | None = None) -> Preferences:
        self._check("preferences", timeout)
        return self.stored.get(principal_id, Preferences())


@dataclass
class Harness:
    use_case: ExecuteAction
    provider: ScriptedProvider
    context: FakeContext
    failures: list[str]
    clock: FakeClock

    def history_line(self, call: int = -1) -> list[dict[str, str]] | None:
        for line in self.provider.prompts[call].split("\n"):
            if line.startswith("HISTORY: "):
                turns: list[dict[str, str]] = json.loads(line.removeprefix("HISTORY: "))
                return turns
        return None


def harness(*steps: str, context: FakeContext | None = None, cost: float = 0.0) -> Harness:
    clock = FakeClock()
    provider = ScriptedProvider(steps or ("An answer.",), clock=clock, cost=cost)
    fake = context or FakeContext(sessions={(ALICE, SESSION): []})
    failures: list[str] = []
    context_port: ConversationContext = fake
    use_case = ExecuteAction(
        catalogue=shipped_catalogue(),
        route=ProviderRoute(provider, CircuitBreaker(provider.name, failure_threshold=3, open_seconds=60, clock=clock)),
        retry=RetryPolicy(max_attempts=1, sleep=clock.sleep, random=lambda: 1.0, clock=clock),
        observer=NullObserver(),
        provider_timeout_seconds=30.0,
        clock=clock,
        context=ContextLoader(context_port, on_failure=failures.append),
    )
    return Harness(use_case, provider, fake, failures, clock)


def chat(message: str, *, session_id: str = SESSION, principal_id: str = ALICE) -> ExecuteCommand:
    return ExecuteCommand(action="chat", payload={"message": message}, session_id=session_id, principal_id=principal_id)


async def test_a_chat_with_a_session_sees_the_earlier_turns_and_is_remembered() -> None:
    h = harness("Hello Ada.", "Your name is Ada.")
    first = await h.use_case.execute(chat("My name is Ada."), timeout=None)
    assert first.result == {"reply": "Hello Ada."}
    assert h.history_line(0) is None  # an empty session: no HISTORY line
    second = await h.use_case.execute(chat("What is my name?"), timeout=None)
    assert second.result == {"reply": "Your name is Ada."}
    assert h.history_line(1) == [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hello Ada."},
    ]
    assert h.context.sessions[(ALICE, SESSION)] == [
        ("user", "My name is Ada."),
        ("assistant", "Hello Ada."),
        ("user", "What is my name?"),
        ("assistant", "Your name is Ada."),
    ]
    assert h.failures == []


async def test_a_long_session_reaches_the_prompt_bounded() -> None:
    turns: list[Turn] = [("user" if i % 2 == 0 else "assistant", f"turn {i}") for i in range(60)]
    h = harness(context=FakeContext(sessions={(ALICE, SESSION): turns}))
    await h.use_case.execute(chat("and now?"), timeout=None)
    history = h.history_line()
    assert history is not None
    assert len(history) == MAX_HISTORY_TURNS
    assert history[-1] == {"role": "assistant", "content": "turn 59"}


async def test_a_chat_without_a_session_is_stateless() -> None:
    h = harness()
    await h.use_case.execute(chat("hi", session_id=""), timeout=None)
    assert h.history_line() is None
    assert [what for what, _ in h.context.timeouts] == ["preferences"]  # no history read, nothing remembered
    assert h.context.sessions[(ALICE, SESSION)] == []


async def test_a_session_given_to_a_non_conversational_action_is_ignored() -> None:
    h = harness()
    command = ExecuteCommand(action="summarize", payload={"text": "t"}, session_id=SESSION, principal_id=ALICE)
    await h.use_case.execute(command, timeout=None)
    assert h.history_line() is None
    assert [what for what, _ in h.context.timeouts] == ["preferences"]


async def test_an_unknown_or_foreign_session_is_session_not_found_before_any_provider_call() -> None:
    h = harness()
    for command in (chat("hi", session_id="nope"), chat("hi", principal_id="key-mallory")):
        with pytest.raises(NotFound) as raised:
            await h.use_case.execute(command, timeout=None)
        assert raised.value.reason == "SESSION_NOT_FOUND"
    assert h.provider.calls == 0
    assert h.failures == []  # the caller's mistake, not memory's trouble


async def test_a_session_without_a_principal_is_refused() -> None:
    h = harness()
    with pytest.raises(InvalidArgument) as raised:
        await h.use_case.execute(chat("hi", principal_id=""), timeout=None)
    assert raised.value.reason == "PRINCIPAL_REQUIRED"
    assert h.provider.calls == 0


async def test_history_unavailable_fails_the_chat_memory_unavailable() -> None:
    h = harness(context=FakeContext(sessions={(ALICE, SESSION): []}, down={"history"}))
    with pytest.raises(Unavailable) as raised:
        await h.use_case.execute(chat("hi"), timeout=None)
    assert raised.value.reason == "MEMORY_UNAVAILABLE"
    assert h.provider.calls == 0
    assert h.failures == ["history"]


async def test_an_unexpected_error_reading_history_is_memory_unavailable() -> None:
    class Broken(FakeContext):
        async def history(self, principal_id: str, session_id: str, *, timeout: float | None = None) -> list[Turn]:
            raise RuntimeError("boom")

    h = harness(context=Broken())
    with pytest.raises(Unavailable) as raised:
        await h.use_case.execute(chat("hi"), timeout=None)
    assert raised.value.reason == "MEMORY_UNAVAILABLE"
    assert h.failures == ["history"]


async def test_preferences_shape_the_prompt_of_every_action() -> None:
    stored = {ALICE: Preferences(tone="formal", format="bullet_points", language="pt-BR")}
    h = harness("Olá.", '{"label": "billing", "confidence": 0.9}', context=FakeContext(stored=stored, sessions={}))
    await h.use_case.execute(chat("hi", session_id=""), timeout=None)
    classify = ExecuteCommand(
        action="classify", payload={"text": "invoice", "labels": ["billing", "support"]}, principal_id=ALICE
    )
    await h.use_case.execute(classify, timeout=None)
    for prompt in h.provider.prompts:
        assert "\nAnswer in language: pt-BR\n" in prompt
        assert "\nTone: formal\n" in prompt
    assert "\nFormat: bullet_points\n" in h.provider.prompts[0]


async def test_no_principal_no_preferences_and_no_memory_call() -> None:
    h = harness(context=FakeContext(stored={"": Preferences(tone="formal")}))
    await h.use_case.execute(ExecuteCommand(action="summarize", payload={"text": "t"}), timeout=None)
    assert h.context.timeouts == []
    assert "Tone" not in h.provider.prompts[0]


async def test_preferences_unavailable_the_action_runs_without_them() -> None:
    h = harness(context=FakeContext(stored={ALICE: Preferences(tone="formal")}, down={"preferences"}))
    execution = await h.use_case.execute(
        ExecuteCommand(action="summarize", payload={"text": "t"}, principal_id=ALICE), timeout=None
    )
    assert execution.result == {"summary": "An answer."}
    assert "Tone" not in h.provider.prompts[0]
    assert h.failures == ["preferences"]


async def test_a_failed_remember_still_returns_the_reply() -> None:
    h = harness("Hello.", context=FakeContext(sessions={(ALICE, SESSION): []}, down={"remember"}))
    execution = await h.use_case.execute(chat("hi"), timeout=None)
    assert execution.result == {"reply": "Hello."}
    assert h.context.sessions[(ALICE, SESSION)] == []
    assert h.failures == ["remember"]


async def test_a_failed_execution_remembers_nothing() -> None:
    h = harness("   ")  # blank answers: PROVIDER_OUTPUT_INVALID
    with pytest.raises(Unavailable):
        await h.use_case.execute(chat("hi"), timeout=None)
    assert h.context.sessions[(ALICE, SESSION)] == []
    assert "remember" not in [what for what, _ in h.context.timeouts]


async def test_memory_calls_are_bounded_by_the_remaining_deadline() -> None:
    h = harness(cost=1.5)
    await h.use_case.execute(chat("hi"), timeout=4.0)
    timeouts = dict(h.context.timeouts)
    assert timeouts["history"] == pytest.approx(4.0)
    assert timeouts["preferences"] == pytest.approx(4.0)
    assert timeouts["remember"] == pytest.approx(2.5)  # the provider call took 1.5 s of the 4


async def test_without_a_context_a_session_is_unavailable_and_stateless_calls_work() -> None:
    clock = FakeClock()
    provider = ScriptedProvider(["Hi."], clock=clock)
    use_case = ExecuteAction(
        catalogue=shipped_catalogue(),
        route=ProviderRoute(provider, CircuitBreaker(provider.name, failure_threshold=3, open_seconds=60, clock=clock)),
        retry=RetryPolicy(max_attempts=1, sleep=clock.sleep, random=lambda: 1.0, clock=clock),
        observer=NullObserver(),
        provider_timeout_seconds=30.0,
        clock=clock,
    )
    assert (await use_case.execute(chat("hi", session_id=""), timeout=None)).result == {"reply": "Hi."}
    with pytest.raises(Unavailable) as raised:
        await use_case.execute(chat("hi"), timeout=None)
    assert raised.value.reason == "MEMORY_UNAVAILABLE"
