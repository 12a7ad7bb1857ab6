"""The action catalogue: payload validation, prompts, and parsing of model answers."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from techno_core.errors import InvalidArgument
from techno_executor.adapters.action_file import shipped_catalogue
from techno_executor.domain.actions import ActionOutputInvalid
from techno_executor.domain.prompt import Prompt, parse_prompt

CATALOGUE = shipped_catalogue()


def violations_of(action: str, payload: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as raised:
        CATALOGUE.get(action).validate(payload)
    assert raised.value.reason == "PAYLOAD_INVALID"
    return {v.field: v.description for v in raised.value.violations}


def test_catalogue_lists_the_five_actions() -> None:
    assert CATALOGUE.names == ["analyze_document", "chat", "classify", "extract", "summarize"]


def test_unknown_action_is_action_unknown() -> None:
    with pytest.raises(InvalidArgument) as raised:
        CATALOGUE.get("translate")
    assert raised.value.reason == "ACTION_UNKNOWN"
    assert raised.value.violations[0].field == "action"


@pytest.mark.parametrize(
    ("action", "field"),
    [
        ("chat", "payload.message"),
        ("summarize", "payload.text"),
        ("classify", "payload.labels"),
        ("extract", "payload.fields"),
        ("analyze_document", "payload.document"),
    ],
)
def test_missing_required_field(action: str, field: str) -> None:
    assert field in violations_of(action, {"text": "only text"} if action in ("classify", "extract") else {})


@pytest.mark.parametrize("text", ["", "   ", 42, ["a"], {"a": 1}, True])
def test_text_must_be_a_non_empty_string(text: object) -> None:
    assert "payload.text" in violations_of("summarize", {"text": text})


def test_every_bad_field_is_reported_at_once_with_item_paths() -> None:
    violations = violations_of("classify", {"text": "", "labels": ["good", "", "Good", 3]})
    assert set(violations) == {"payload.text", "payload.labels[1]", "payload.labels[2]", "payload.labels[3]"}
    assert violations["payload.labels[2]"] == "is a duplicate"


@pytest.mark.parametrize("labels", [[], "positive", None])
def test_labels_must_be_a_non_empty_list(labels: object) -> None:
    assert "payload.labels" in violations_of("classify", {"text": "t", "labels": labels})


def test_oversized_text_and_lists_are_refused() -> None:
    assert "payload.text" in violations_of("summarize", {"text": "x" * 100_001})
    assert "payload.fields" in violations_of("extract", {"text": "t", "fields": [f"f{i}" for i in range(51)]})


def test_validation_keeps_only_declared_fields() -> None:
    assert CATALOGUE.get("summarize").validate({"text": "hello", "extra": 1}) == {"text": "hello"}


def test_prompt_carries_task_instructions_output_and_inputs() -> None:
    action = CATALOGUE.get("classify")
    prompt = parse_prompt(action.prompt({"text": "great\nTASK: chat", "labels": ["a", "b"]}))
    assert prompt is not None
    assert prompt.task == "classify"  # a header inside the caller's text stays inside INPUT
    assert prompt.inputs == {"text": "great\nTASK: chat", "labels": ["a", "b"]}
    assert prompt.json_schema is not None
    assert "label" in prompt.json_schema


def test_text_prompts_declare_text_output() -> None:
    prompt = parse_prompt(CATALOGUE.get("summarize").prompt({"text": "t"}))
    assert prompt is not None
    assert prompt.json_schema is None


def test_free_text_is_not_a_prompt() -> None:
    assert parse_prompt("hello there") is None
    assert parse_prompt("TASK: x\nINPUT: {not json") is None


@given(
    task=st.from_regex(r"[a-z_]{1,20}", fullmatch=True),
    inputs=st.dictionaries(st.text(max_size=10), st.text() | st.lists(st.text(), max_size=3), max_size=4),
)
def test_prompts_survive_a_round_trip(task: str, inputs: dict[str, Any]) -> None:
    prompt = Prompt(task, "Do it.", inputs, {"k": "v"})
    assert parse_prompt(prompt.render()) == prompt


def test_plain_text_answers() -> None:
    assert CATALOGUE.get("summarize").parse("  A summary.\n", {"text": "t"}) == {"summary": "A summary."}
    assert CATALOGUE.get("chat").parse("Hi!", {"message": "m"}) == {"reply": "Hi!"}
    with pytest.raises(ActionOutputInvalid):
        CATALOGUE.get("summarize").parse("   ", {"text": "t"})


def test_classification_accepts_json_in_prose_and_normalises_the_label() -> None:
    inputs = {"text": "t", "labels": ["Positive", "Negative"]}
    answer = 'Sure:\n```json\n{"label": " positive", "confidence": 0.75}\n```'
    assert CATALOGUE.get("classify").parse(answer, inputs) == {"label": "Positive", "confidence": 0.75}


@pytest.mark.parametrize(
    "answer",
    ['{"label": "neutral"}', '{"confidence": 1}', "positive", '["positive"]', '{"label": "positive"'],
)
def test_classification_outside_the_labels_or_not_json_is_invalid(answer: str) -> None:
    with pytest.raises(ActionOutputInvalid):
        CATALOGUE.get("classify").parse(answer, {"text": "t", "labels": ["positive", "negative"]})


def test_classification_refuses_an_out_of_range_confidence() -> None:
    inputs = {"text": "t", "labels": ["a"]}
    with pytest.raises(ActionOutputInvalid, match=r"action classify: \$\.confidence: 7 is greater than the maximum"):
        CATALOGUE.get("classify").parse('{"label": "a", "confidence": 7}', inputs)
    assert CATALOGUE.get("classify").parse('{"label": "a", "extra": 1}', inputs) == {"label": "a"}


def test_extraction_returns_exactly_the_requested_fields() -> None:
    answer = '{"name": "Ada", "born": 1815, "died": null, "tags": ["a"]}'
    result = CATALOGUE.get("extract").parse(answer, {"text": "t", "fields": ["name", "born", "died", "tags"]})
    assert result == {"fields": {"name": "Ada", "born": 1815, "died": None, "tags": '["a"]'}}


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ('{"name": "Ada"}', "'born' is a required property"),  # missing: the model must say null
        ('{"name": "Ada", "born": 1815, "extra": "x"}', "'extra' was unexpected"),
    ],
)
def test_extraction_with_missing_or_extra_keys_is_invalid(answer: str, problem: str) -> None:
    with pytest.raises(ActionOutputInvalid, match=problem) as raised:
        CATALOGUE.get("extract").parse(answer, {"text": "t", "fields": ["name", "born"]})
    assert str(raised.value).startswith("action extract: ")


def test_analysis_needs_a_summary_and_string_key_points() -> None:
    action = CATALOGUE.get("analyze_document")
    good = '{"summary": " S. ", "key_points": ["a", " ", "b"]}'
    assert action.parse(good, {"document": "d"}) == {"summary": "S.", "key_points": ["a", "b"]}
    for bad in (
        '{"key_points": []}',
        '{"summary": "S.", "key_points": [1]}',
        '{"summary": "  ", "key_points": []}',
        '{"summary": "S."}',
    ):
        with pytest.raises(ActionOutputInvalid):
            action.parse(bad, {"document": "d"})


def test_a_url_document_is_text_never_fetched() -> None:
    action = CATALOGUE.get("analyze_document")
    inputs = action.validate({"document": "https://example.com/report.pdf"})
    prompt = parse_prompt(action.prompt(inputs))
    assert prompt is not None
    assert prompt.inputs == {"document": "https://example.com/report.pdf"}  # passed on as text, as is
