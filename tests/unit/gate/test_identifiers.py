"""Identifiers are matched whole: a trailing newline (which ``$`` lets through) or any control character is refused
by the request checks, and no policy glob grants a context or provider that has one."""

from __future__ import annotations

import pytest

from techno_gate.domain.policy import Policy, PolicyDocument, glob_matches
from techno_gate.domain.reasons import Reason
from techno_gate.domain.validation import request_violations

TRAILING = ["\n", "\r\n", "\r", "\x00", "\t", " "]


def violations(action: str = "summarize", context_id: str = "public-x", session_id: str = "") -> set[str]:
    found = request_violations(
        action=action,
        context_id=context_id,
        session_id=session_id,
        has_payload=True,
        payload_bytes=10,
        max_payload_bytes=100,
    )
    return {v.field for v in found}


def test_well_formed_identifiers_pass() -> None:
    assert violations(session_id="abc.1:2-3_x") == set()
    assert violations(context_id="a" * 128, session_id="s" * 128) == set()


@pytest.mark.parametrize("suffix", TRAILING)
def test_a_trailing_newline_or_control_character_is_refused_in_each_identifier(suffix: str) -> None:
    assert violations(action="summarize" + suffix) == {"action"}
    assert violations(context_id="public-x" + suffix) == {"context_id"}
    assert violations(session_id="abc" + suffix) == {"session_id"}


def test_lengths_are_bounded() -> None:
    assert violations(context_id="a" * 129, session_id="s" * 129, action="a" * 65) == {
        "action",
        "context_id",
        "session_id",
    }


@pytest.mark.parametrize("value", ["public-x\n", "public-\n", "public-x\r", "public-\x00x", "public-x\u2028"])
def test_no_glob_matches_a_value_with_a_control_or_separator_character(value: str) -> None:
    assert not glob_matches(value, "public-*")
    assert not glob_matches(value, "*")


def test_globs_still_match_printable_values() -> None:
    assert glob_matches("public-x", "public-*")
    assert glob_matches("anything at all", "*")
    assert not glob_matches("Public-x", "public-*")


def test_the_restricted_profile_does_not_grant_a_context_with_a_trailing_newline() -> None:
    document = PolicyDocument.model_validate(
        {
            "actions": {"summarize": {"description": "s"}},
            "profiles": {"restricted": {"actions": ["summarize"], "contexts": ["public-*"], "providers": ["fa*"]}},
        }
    )
    policy = Policy.from_document(document, b"test")
    assert policy.evaluate("restricted", "summarize", "public-x").allowed
    refused = policy.evaluate("restricted", "summarize", "public-x\n")
    assert (refused.allowed, refused.reason) == (False, Reason.CONTEXT_NOT_ALLOWED)


@pytest.mark.parametrize(
    "document",
    [
        {"actions": {"summarize\n": {"description": "s"}}, "profiles": {"p": {"actions": []}}},
        {"actions": {"summarize": {"description": "s"}}, "profiles": {"p\n": {"actions": []}}},
        {
            "actions": {"summarize": {"description": "s", "input": {"text\n": {"type": "string"}}}},
            "profiles": {"p": {"actions": []}},
        },
    ],
)
def test_policy_names_with_a_trailing_newline_are_refused(document: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must match"):
        PolicyDocument.model_validate(document)
