"""The shared field rules match whole values, and their JSON Schema form says the same as ``accepts``."""

from __future__ import annotations

import re

import pytest

from techno_core.contract import (
    ACTION_NAME,
    CONTEXT_ID,
    FIELDS,
    IDEMPOTENCY_KEY,
    LANGUAGE_TAG,
    SESSION_ID,
    TRACE_ID,
    Text,
)


@pytest.mark.parametrize(
    ("rule", "good"),
    [
        (ACTION_NAME, "summarize"),
        (CONTEXT_ID, "public-x"),
        (SESSION_ID, "abc"),
        (TRACE_ID, "0af7651916cd43dd8448eb211c80319c"),
        (IDEMPOTENCY_KEY, "a-uuid"),
        (LANGUAGE_TAG, "pt-BR"),
    ],
)
@pytest.mark.parametrize("suffix", ["\n", "\r\n", "\x00", " "])
def test_a_trailing_newline_or_control_character_is_refused(rule: Text, good: str, suffix: str) -> None:
    assert rule.accepts(good)
    assert not rule.accepts(good + suffix)


def test_optional_and_required() -> None:
    assert SESSION_ID.accepts("")
    assert not CONTEXT_ID.accepts("")
    assert not TRACE_ID.accepts("0" * 32)


@pytest.mark.parametrize("key", sorted(FIELDS))
def test_the_schema_pattern_agrees_with_accepts(key: tuple[str, str]) -> None:
    rule = FIELDS[key]
    if not isinstance(rule, Text):
        return
    schema = rule.json_schema()
    samples = ["", "a", "abc", "summarize", "public-x", "en", "pt-BR", "neutral", "x" * 129, "a\n", "a b"]
    for value in samples:
        by_schema = (
            value in schema["enum"]
            if "enum" in schema
            else len(value) >= schema.get("minLength", 0)
            and len(value) <= schema.get("maxLength", len(value))
            # ECMA-262's $ is the very end; Python's is not, hence \Z here.
            and ("pattern" not in schema or re.search(schema["pattern"].removesuffix("$") + r"\Z", value) is not None)
        )
        assert by_schema == rule.accepts(value), (key, value)
