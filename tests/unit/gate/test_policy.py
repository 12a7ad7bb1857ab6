"""Policy loading and evaluation."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from techno_gate.adapters.policy_file import PolicyError, load_policy
from techno_gate.domain.policy import Policy, PolicyDocument
from techno_gate.domain.reasons import Reason

REPO_POLICY = Path(__file__).resolve().parents[3] / "config" / "policy.yaml"


def policy(profiles: dict[str, object], actions: tuple[str, ...] = ("summarize", "chat")) -> Policy:
    document = PolicyDocument.model_validate(
        {"actions": {a: {"description": a} for a in actions}, "profiles": profiles}
    )
    return Policy.from_document(document, b"test")


def test_the_shipped_policy_loads_and_has_a_stable_version() -> None:
    first, second = load_policy(REPO_POLICY), load_policy(REPO_POLICY)
    assert first.version == second.version
    assert len(first.version) == 16
    assert first.evaluate("default", "summarize", "anything").allowed


@pytest.mark.parametrize(
    ("profile", "action", "context", "reason", "rule"),
    [
        ("default", "summarize", "app-1", Reason.ALLOWED, "profiles.default"),
        ("nobody", "summarize", "app-1", Reason.PROFILE_UNKNOWN, "profiles.nobody"),
        ("default", "translate", "app-1", Reason.ACTION_UNKNOWN, "actions"),
        ("narrow", "chat", "public-1", Reason.ACTION_NOT_ALLOWED, "profiles.narrow.actions"),
        ("narrow", "summarize", "private-1", Reason.CONTEXT_NOT_ALLOWED, "profiles.narrow.contexts"),
        ("narrow", "summarize", "public-1", Reason.ALLOWED, "profiles.narrow"),
    ],
)
def test_each_rule_names_itself(profile: str, action: str, context: str, reason: Reason, rule: str) -> None:
    subject = policy(
        {
            "default": {"actions": ["summarize", "chat"]},
            "narrow": {"actions": ["summarize"], "contexts": ["public-*"]},
        }
    )
    decision = subject.evaluate(profile, action, context)
    assert (decision.allowed, decision.reason, decision.rule) == (reason == Reason.ALLOWED, reason, rule)


@given(
    allowed=st.sets(st.sampled_from(["summarize", "chat", "classify"])),
    action=st.sampled_from(["summarize", "chat", "classify", "unknown"]),
    context=st.text(alphabet="abcxyz-", min_size=1, max_size=12),
)
def test_allow_exactly_when_action_and_context_are_granted(allowed: set[str], action: str, context: str) -> None:
    subject = policy(
        {"p": {"actions": sorted(allowed), "contexts": ["abc*"]}}, actions=("summarize", "chat", "classify")
    )
    decision = subject.evaluate("p", action, context)
    assert decision.allowed == (action in allowed and context.startswith("abc"))
    assert decision.allowed == (decision.reason == Reason.ALLOWED)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("actions: {a: {description: x}}\nprofiles: {p: {actions: [b]}}\n", "unknown actions"),
        ("actions: {a: {description: x}}\nprofiles: {p: {actions: [a], extra: 1}}\n", "extra"),
        ("actions: {}\nprofiles: {p: {actions: []}}\n", "actions"),
        ("actions: [unclosed\n", "invalid policy file"),
        ("actions: {Bad-Name: {description: x}}\nprofiles: {p: {actions: []}}\n", "names must match"),
    ],
)
def test_an_invalid_file_is_refused_with_a_clear_message(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError, match=message):
        load_policy(path)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "absent.yaml")
