"""The action catalogue: what each action needs in its payload, how it asks the model, and what it returns.

The gate decides who may run an action; the executor owns what the action means. Every action validates its
payload first (so nothing malformed reaches a paid provider), renders a prompt in the convention of
``domain.prompt`` and turns the model's answer into a result object. A model answer that does not fit raises
``ActionOutputInvalid`` rather than handing the caller something half-parsed.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from techno_core.errors import FieldViolation, InvalidArgument
from techno_executor.domain.prompt import Prompt

MAX_TEXT_CHARS = 100_000  # the gate caps whole payloads at 256 KiB; this bounds one field below that
MAX_LIST_ITEMS = 50
MAX_ITEM_CHARS = 200


class ActionOutputInvalid(ValueError):
    """The model answered, but not in the shape the action asked for."""


class FieldKind(enum.Enum):
    TEXT = "text"  # a non-empty string
    NAMES = "names"  # a non-empty list of distinct, non-empty short strings (labels, field names)


@dataclass(frozen=True)
class PayloadField:
    name: str
    kind: FieldKind
    description: str


Parser = Callable[[str, Mapping[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Action:
    name: str
    fields: tuple[PayloadField, ...]
    instructions: str
    parse_output: Parser
    json_schema: Mapping[str, str] | None = None

    def validate(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """The declared fields of ``payload`` (others are ignored), or ``InvalidArgument`` PAYLOAD_INVALID
        listing every bad field at once, so a caller fixes them in one round."""
        inputs: dict[str, Any] = {}
        violations: list[FieldViolation] = []
        for spec in self.fields:
            value = payload.get(spec.name)
            problems = _check(spec, value)
            violations.extend(FieldViolation(f"payload.{spec.name}{suffix}", text) for suffix, text in problems)
            if not problems:
                inputs[spec.name] = value
        if violations:
            raise InvalidArgument(
                reason="PAYLOAD_INVALID",
                message=f"invalid payload for action {self.name}",
                violations=violations,
                metadata={"action": self.name},
            )
        return inputs

    def prompt(self, inputs: Mapping[str, Any]) -> str:
        return Prompt(self.name, self.instructions, inputs, self.json_schema).render()

    def parse(self, text: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return self.parse_output(text, inputs)


def _check(spec: PayloadField, value: Any) -> list[tuple[str, str]]:
    """(path suffix, description) of each problem of one field; empty when it is valid."""
    if value is None:
        return [("", f"is required: {spec.description}")]
    if spec.kind is FieldKind.TEXT:
        if not isinstance(value, str) or not value.strip():
            return [("", "must be a non-empty string")]
        if len(value) > MAX_TEXT_CHARS:
            return [("", f"must be at most {MAX_TEXT_CHARS} characters")]
        return []
    if not isinstance(value, list) or not value:
        return [("", "must be a non-empty list of strings")]
    if len(value) > MAX_LIST_ITEMS:
        return [("", f"must have at most {MAX_LIST_ITEMS} items")]
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item.strip() or len(item) > MAX_ITEM_CHARS:
            problems.append((f"[{index}]", f"must be a non-empty string of at most {MAX_ITEM_CHARS} characters"))
        elif item.strip().casefold() in seen:
            problems.append((f"[{index}]", "is a duplicate"))
        else:
            seen.add(item.strip().casefold())
    return problems


def _json_object(text: str) -> dict[str, Any]:
    """The JSON object in a model answer. Models like to wrap JSON in prose or code fences, so read from the
    first ``{`` to the last ``}``."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise ActionOutputInvalid("the model answer holds no JSON object")
    try:
        value = json.loads(text[start : end + 1])
    except json.JSONDecodeError as error:
        raise ActionOutputInvalid(f"the model answer is not valid JSON: {error.msg}") from error
    if not isinstance(value, dict):
        raise ActionOutputInvalid("the model answer is not a JSON object")
    return value


def _plain_text(key: str) -> Parser:
    def parse(text: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        answer = text.strip()
        if not answer:
            raise ActionOutputInvalid("the model answer is empty")
        return {key: answer}

    return parse


def _parse_classification(text: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
    answer = _json_object(text)
    by_key = {label.strip().casefold(): label for label in inputs["labels"]}
    label = answer.get("label")
    if not isinstance(label, str) or label.strip().casefold() not in by_key:
        raise ActionOutputInvalid("the model chose no label from the given labels")
    result: dict[str, Any] = {"label": by_key[label.strip().casefold()]}
    confidence = answer.get("confidence")
    if isinstance(confidence, int | float) and not isinstance(confidence, bool) and 0 <= confidence <= 1:
        result["confidence"] = float(confidence)
    return result


def _parse_extraction(text: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
    answer = _json_object(text)
    # Only the requested fields, each present (None when the model found nothing): a stable result shape.
    return {"fields": {name: _scalar(answer.get(name)) for name in inputs["fields"]}}


def _scalar(value: Any) -> Any:
    return value if value is None or isinstance(value, str | int | float | bool) else json.dumps(value)


def _parse_analysis(text: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
    answer = _json_object(text)
    summary, points = answer.get("summary"), answer.get("key_points", [])
    if not isinstance(summary, str) or not summary.strip():
        raise ActionOutputInvalid("the model answer has no summary")
    if not isinstance(points, list) or not all(isinstance(p, str) for p in points):
        raise ActionOutputInvalid("the model answer's key_points is not a list of strings")
    return {"summary": summary.strip(), "key_points": [p.strip() for p in points if p.strip()]}


def _text(name: str, description: str) -> PayloadField:
    return PayloadField(name, FieldKind.TEXT, description)


def _actions() -> Iterable[Action]:
    yield Action(
        "chat",
        (_text("message", "the user's message"),),
        "Reply helpfully and concisely to INPUT.message.",
        _plain_text("reply"),
    )
    yield Action(
        "summarize",
        (_text("text", "the text to summarize"),),
        "Summarize INPUT.text in at most three sentences. Answer with the summary only.",
        _plain_text("summary"),
    )
    yield Action(
        "classify",
        (_text("text", "the text to classify"), PayloadField("labels", FieldKind.NAMES, "the labels to choose from")),
        "Put INPUT.text into exactly one of INPUT.labels. Answer with the JSON object only.",
        _parse_classification,
        {"label": "one of INPUT.labels, spelled exactly", "confidence": "number from 0 to 1"},
    )
    yield Action(
        "extract",
        (_text("text", "the text to read"), PayloadField("fields", FieldKind.NAMES, "names of the fields to extract")),
        "Extract each of INPUT.fields from INPUT.text. Answer with one JSON object whose keys are exactly "
        "INPUT.fields; use null for a field the text does not give.",
        _parse_extraction,
        {"<each of INPUT.fields>": "its value from the text, or null"},
    )
    yield Action(
        "analyze_document",
        (_text("document", "the document's text"),),
        "Analyze INPUT.document: summarize it and list its key points. Answer with the JSON object only.",
        _parse_analysis,
        {"summary": "two or three sentences", "key_points": "list of short strings"},
    )


class ActionCatalogue:
    def __init__(self, actions: Iterable[Action]) -> None:
        self._actions = {action.name: action for action in actions}

    @property
    def names(self) -> list[str]:
        return sorted(self._actions)

    def get(self, name: str) -> Action:
        action = self._actions.get(name)
        if action is None:
            raise InvalidArgument(
                reason="ACTION_UNKNOWN",
                message=f"the executor has no action {name!r}",
                violations=[FieldViolation("action", f"must be one of {', '.join(self.names)}")],
                metadata={"action": name[:64]},
            )
        return action


def default_catalogue() -> ActionCatalogue:
    return ActionCatalogue(_actions())
