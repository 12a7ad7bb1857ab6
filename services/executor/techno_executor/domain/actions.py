"""The action catalogue: what each action needs in its payload, how it asks the model, and what it returns.

The gate decides who may run an action; the executor owns what the action means. The catalogue is
configuration (``config/actions.yaml``, read by ``adapters.action_file``): this module holds its schema
(``ActionsDocument``, validated with pydantic, unknown keys are errors) and the ``Action`` built from each entry.

Every action validates its payload first (so nothing malformed reaches a paid provider), renders a prompt in the
convention of ``domain.prompt`` and turns the model's answer into a result object. A model answer that does not
fit raises ``ActionOutputInvalid`` rather than handing the caller something half-parsed.

Prompt templates. ``instructions`` may name input fields as ``{field}``; a placeholder renders as a reference,
``INPUT.field``, never as the caller's value: caller text stays inside the JSON ``INPUT`` line, where it cannot
pose as instructions. Only declared input fields may be named (checked at load); ``{{`` and ``}}`` are braces.

Output. ``text``: the trimmed answer under the given result key. ``json``: the JSON object in the answer,
validated against the action's JSON Schema (``jsonschema``), with two checks a static schema cannot express,
both declared in the file: ``keys_from`` (the object's keys are exactly the caller's list INPUT.<field>: the
schema is completed per call) and ``choice`` (a property must be one of the caller's list INPUT.<field>,
compared without case or surrounding space, and answered in the caller's spelling). The result keeps the
schema's properties only, with strings trimmed and blank strings dropped from lists, under ``key`` if given.

Conversations. ``conversation: <field>`` makes an action conversational: given a session, its prompt carries
the session's history, and the text input ``<field>`` (the user's turn) and the text answer (the assistant's)
are remembered in the session. Only a text input of an action with a text output qualifies (checked at load).
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Self

import jsonschema  # type: ignore[import-untyped]
from pydantic import BaseModel, ConfigDict, Field, model_validator

from techno_core.errors import FieldViolation, InvalidArgument
from techno_executor.domain.prompt import NO_PREFERENCES, Preferences, Prompt, Turn

MAX_TEXT_CHARS = 100_000  # the gate caps whole payloads at 256 KiB; this bounds one field below that
MAX_LIST_ITEMS = 50
MAX_ITEM_CHARS = 200

# Anchored: pydantic's ``Field(pattern=...)`` searches (a bare pattern would accept any text holding a lowercase
# letter); ``_matches_name`` matches it whole (re.fullmatch), so a trailing newline is refused there too.
_NAME = r"^[a-z][a-z0-9_]{0,63}$"
_STRICT = ConfigDict(extra="forbid", frozen=True)
_VALIDATOR = jsonschema.Draft202012Validator


class ActionOutputInvalid(ValueError):
    """The model answered, but not in the shape the action asked for."""


class ActionCatalogError(ValueError):
    """The action catalogue (file) is invalid; the message, one line, says where and why."""


FieldKind = Literal["text", "names"]
# text: a non-empty string; names: a non-empty list of distinct, non-empty short strings (labels, field names)


# --- The document (config/actions.yaml) --------------------------------------------------------------------------


class InputFieldSpec(BaseModel):
    model_config = _STRICT

    kind: FieldKind
    description: str = Field(min_length=1)
    required: bool = True


class ChoiceSpec(BaseModel):
    """``field`` of the answer must be one of the caller's list INPUT.<from>."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    field: str = Field(pattern=_NAME)
    from_: str = Field(alias="from", pattern=_NAME)


class JsonOutputSpec(BaseModel):
    model_config = _STRICT

    json_schema: dict[str, Any] = Field(alias="schema", description="JSON Schema of the answer (an object)")
    key: str | None = Field(None, pattern=_NAME, description="nest the result under this key")
    keys_from: str | None = Field(None, pattern=_NAME, description="the answer's keys are exactly INPUT.<this>")
    choice: ChoiceSpec | None = None

    @model_validator(mode="after")
    def _schema_is_valid(self) -> Self:
        try:
            _VALIDATOR.check_schema(self.json_schema)
        except jsonschema.SchemaError as error:
            raise ValueError(f"not a valid JSON Schema: {error.message}") from error
        if self.json_schema.get("type") != "object":
            raise ValueError("the schema must describe an object (type: object)")
        if self.choice is not None and self.choice.field not in self.json_schema.get("properties", {}):
            raise ValueError(f"choice.field {self.choice.field!r} is not a property of the schema")
        return self


class OutputSpec(BaseModel):
    """Exactly one of ``text`` (the result key of the trimmed answer) or ``json``."""

    model_config = _STRICT

    text: str | None = Field(None, pattern=_NAME)
    json_: JsonOutputSpec | None = Field(None, alias="json")

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.text is None) == (self.json_ is None):
            raise ValueError("give exactly one of text or json")
        return self


class ActionSpec(BaseModel):
    model_config = _STRICT

    description: str = Field(min_length=1)
    instructions: str = Field(min_length=1, description="prompt template; {field} names an input field")
    input: dict[str, InputFieldSpec] = Field(min_length=1)
    output: OutputSpec
    conversation: str | None = Field(
        None, pattern=_NAME, description="the text input holding the user's turn: the action keeps a session"
    )

    @model_validator(mode="after")
    def _references_are_declared(self) -> Self:
        if self.conversation is not None:
            declared = self.input.get(self.conversation)
            if declared is None or declared.kind != "text" or self.output.text is None:
                raise ValueError(
                    f"conversation {self.conversation!r} must be a declared text input of an action with a text output"
                )
        for name in self.input:
            if not _matches_name(name):
                raise ValueError(f"input field {name!r} must match {_NAME}")
        for name in placeholders(self.instructions):
            if name not in self.input:
                raise ValueError(f"instructions name {{{name}}}, which is not a declared input field")
        out = self.output.json_
        if out is not None:
            references = (("keys_from", out.keys_from), ("choice.from", out.choice.from_ if out.choice else None))
            for what, ref in references:
                if ref is not None and (ref not in self.input or self.input[ref].kind != "names"):
                    raise ValueError(f"output.json.{what} {ref!r} is not a declared input field of kind names")
        return self


class ActionsDocument(BaseModel):
    model_config = _STRICT

    actions: dict[str, ActionSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _names(self) -> Self:
        for name in self.actions:
            if not _matches_name(name):
                raise ValueError(f"action name {name!r} must match {_NAME}")
        return self


def _matches_name(name: str) -> bool:
    return re.fullmatch(_NAME, name) is not None


def placeholders(template: str) -> list[str]:
    """The field names of ``template``'s ``{placeholders}``; ``ValueError`` for a malformed template or one
    with a conversion, format spec, attribute or index (a placeholder is a plain field name)."""
    names: list[str] = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if spec or conversion or not name.isidentifier():
            raise ValueError(f"instructions placeholder {{{name}}} must be a plain input field name")
        names.append(name)
    return names


# --- The action ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PayloadField:
    name: str
    kind: FieldKind
    description: str
    required: bool = True


@dataclass(frozen=True)
class Action:
    name: str
    fields: tuple[PayloadField, ...]
    instructions: str  # already rendered: placeholders replaced by INPUT.<field>
    output: OutputSpec
    # The text input holding the user's turn when the action keeps a conversation; None: it never does.
    conversation: str | None = None

    @classmethod
    def from_spec(cls, name: str, spec: ActionSpec) -> Action:
        fields = tuple(PayloadField(n, f.kind, f.description, f.required) for n, f in spec.input.items())
        instructions = spec.instructions.format_map({n: f"INPUT.{n}" for n in spec.input})
        return cls(name, fields, instructions, spec.output, spec.conversation)

    def turn(self, inputs: Mapping[str, Any], result: Mapping[str, Any]) -> tuple[str, str] | None:
        """(user message, assistant reply) of a conversational action's execution; None for other actions."""
        if self.conversation is None or self.output.text is None:
            return None
        return str(inputs[self.conversation]), str(result[self.output.text])

    def validate(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """The declared fields of ``payload`` (others are ignored), or ``InvalidArgument`` PAYLOAD_INVALID
        listing every bad field at once, so a caller fixes them in one round."""
        inputs: dict[str, Any] = {}
        violations: list[FieldViolation] = []
        for spec in self.fields:
            value = payload.get(spec.name)
            if value is None and not spec.required:
                continue
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

    def prompt(
        self,
        inputs: Mapping[str, Any],
        *,
        history: Sequence[Turn] = (),
        preferences: Preferences = NO_PREFERENCES,
    ) -> str:
        """The rendered prompt; ``history`` (the session's messages, oldest first) and ``preferences`` (the
        caller's) are optional."""
        return Prompt(self.name, self.instructions, inputs, self._output_keys(), history, preferences).render()

    def _output_keys(self) -> dict[str, str] | None:
        """The OUTPUT header: each expected key with its description; None for a plain text answer."""
        out = self.output.json_
        if out is None:
            return None
        schema = out.json_schema
        if out.keys_from is not None:
            value = schema.get("additionalProperties")
            described = value.get("description", "its value") if isinstance(value, dict) else "its value"
            return {f"<each of INPUT.{out.keys_from}>": described}
        return {key: _describe(prop) for key, prop in schema.get("properties", {}).items()}

    def parse(self, text: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        if self.output.text is not None:
            answer = text.strip()
            if not answer:
                raise ActionOutputInvalid(f"action {self.name}: the model answer is empty")
            return {self.output.text: answer}
        assert self.output.json_ is not None  # one of the two, checked at load
        try:
            return _parse_json(self.output.json_, text, inputs)
        except ActionOutputInvalid as error:
            raise ActionOutputInvalid(f"action {self.name}: {error}") from error


def _describe(prop: Any) -> str:
    if not isinstance(prop, dict):
        return "a value"
    return str(prop.get("description") or prop.get("type") or "a value")


def _check(spec: PayloadField, value: Any) -> list[tuple[str, str]]:
    """(path suffix, description) of each problem of one field; empty when it is valid."""
    if value is None:
        return [("", f"is required: {spec.description}")]
    if spec.kind == "text":
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


# --- JSON answers ----------------------------------------------------------------------------------------------


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


def _parse_json(out: JsonOutputSpec, text: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
    answer = _json_object(text)
    schema = out.json_schema
    if out.keys_from is not None:
        # Completed per call: exactly the caller's keys, each value as the schema's additionalProperties says.
        names = [str(name) for name in inputs[out.keys_from]]
        value_schema = schema.get("additionalProperties", True)
        schema = {
            **schema,
            "properties": dict.fromkeys(names, value_schema),
            "required": names,
            "additionalProperties": False,
        }
    error = jsonschema.exceptions.best_match(_VALIDATOR(schema).iter_errors(answer))
    if error is not None:
        where = error.json_path if error.json_path != "$" else "the answer"
        raise ActionOutputInvalid(f"{where}: {error.message}")
    result = {key: _tidy(answer[key]) for key in schema.get("properties", {}) if key in answer}
    if out.choice is not None and out.choice.field in result:
        result[out.choice.field] = _choose(result[out.choice.field], inputs[out.choice.from_], out.choice)
    if out.keys_from is not None:
        result = {key: _scalar(value) for key, value in result.items()}
    return {out.key: result} if out.key else result


def _choose(value: Any, options: Iterable[str], choice: ChoiceSpec) -> str:
    by_key = {option.strip().casefold(): option for option in options}
    if not isinstance(value, str) or value.casefold() not in by_key:
        raise ActionOutputInvalid(f"{choice.field} {str(value)[:80]!r} is not one of INPUT.{choice.from_}")
    return by_key[value.casefold()]


def _tidy(value: Any) -> Any:
    """Strings trimmed, blank strings dropped from lists."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list):
        return [_tidy(item) for item in value if not (isinstance(item, str) and not item.strip())]
    return value


def _scalar(value: Any) -> Any:
    return value if value is None or isinstance(value, str | int | float | bool) else json.dumps(value)


# --- The catalogue ---------------------------------------------------------------------------------------------


class ActionCatalogue:
    def __init__(self, actions: Iterable[Action]) -> None:
        self._actions = {action.name: action for action in actions}

    @classmethod
    def from_document(cls, document: ActionsDocument) -> ActionCatalogue:
        return cls(Action.from_spec(name, spec) for name, spec in document.actions.items())

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
