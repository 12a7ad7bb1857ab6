"""The action catalogue file: the shipped one loads and round-trips with the fake provider; invalid files are
refused with one clear line."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from techno_executor.action_settings import ActionSettings
from techno_executor.adapters.action_file import (
    SHIPPED_ACTIONS_FILE,
    ActionCatalogError,
    load_catalogue,
    shipped_catalogue,
)
from techno_executor.adapters.fake_provider import FakeProvider

from .test_fake_provider import PAYLOADS

SHIPPED: dict[str, Any] = yaml.safe_load(SHIPPED_ACTIONS_FILE.read_text())


def write(tmp_path: Path, document: Any) -> Path:
    path = tmp_path / "actions.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def refused(tmp_path: Path, document: Any) -> str:
    with pytest.raises(ActionCatalogError) as raised:
        load_catalogue(write(tmp_path, document))
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("invalid action catalogue ")
    return message


def shipped() -> dict[str, Any]:
    return copy.deepcopy(SHIPPED)


def test_the_shipped_file_loads_the_five_actions() -> None:
    catalogue = load_catalogue(SHIPPED_ACTIONS_FILE)
    assert catalogue.names == ["analyze_document", "chat", "classify", "extract", "summarize"]
    assert shipped_catalogue().names == catalogue.names


def test_settings_default_to_the_shipped_file(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ActionSettings().executor_actions_file == "config/actions.yaml"
    assert Path(__file__).resolve().parents[3] / "config" / "actions.yaml" == SHIPPED_ACTIONS_FILE
    monkeypatch.setenv("TECHNO_EXECUTOR_ACTIONS_FILE", "/etc/techno/actions.yaml")
    assert ActionSettings().executor_actions_file == "/etc/techno/actions.yaml"


@pytest.mark.parametrize("action_name", sorted(PAYLOADS))
async def test_every_action_round_trips_with_the_fake_provider(action_name: str) -> None:
    action = load_catalogue(SHIPPED_ACTIONS_FILE).get(action_name)
    inputs = action.validate(PAYLOADS[action_name])
    completion = await FakeProvider().complete(action.prompt(inputs), timeout=1)
    result = action.parse(completion.text, inputs)
    assert result
    if action_name == "extract":
        assert set(result["fields"]) == set(inputs["fields"])


def test_a_new_action_needs_only_configuration(tmp_path: Path) -> None:
    document = shipped()
    document["actions"]["translate"] = {
        "description": "Translate a text.",
        "instructions": "Translate {text} into {language}; literal {{braces}} stay.",
        "input": {
            "text": {"kind": "text", "description": "the text"},
            "language": {"kind": "text", "description": "target language", "required": False},
        },
        "output": {"text": "translation"},
    }
    action = load_catalogue(write(tmp_path, document)).get("translate")
    assert action.instructions == "Translate INPUT.text into INPUT.language; literal {braces} stay."
    assert action.validate({"text": "hola"}) == {"text": "hola"}  # an optional field may be absent
    assert action.parse(" hello ", {"text": "hola"}) == {"translation": "hello"}


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ActionCatalogError, match="cannot read action catalogue"):
        load_catalogue(tmp_path / "absent.yaml")


def test_a_file_that_is_not_yaml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "actions.yaml"
    path.write_text("actions: [unclosed\n  - x: {")
    with pytest.raises(ActionCatalogError, match="not YAML") as raised:
        load_catalogue(path)
    assert "\n" not in str(raised.value)


def test_an_unknown_key_is_refused(tmp_path: Path) -> None:
    document = shipped()
    document["actions"]["chat"]["temperature"] = 0.2
    assert "actions.chat.temperature: Extra inputs are not permitted" in refused(tmp_path, document)


def test_an_unknown_key_in_an_input_field_is_refused(tmp_path: Path) -> None:
    document = shipped()
    document["actions"]["chat"]["input"]["message"]["max_length"] = 5
    assert "actions.chat.input.message.max_length" in refused(tmp_path, document)


def test_a_placeholder_that_names_no_input_is_refused(tmp_path: Path) -> None:
    document = shipped()
    document["actions"]["summarize"]["instructions"] = "Summarize {text} for {audience}."
    message = refused(tmp_path, document)
    assert "actions.summarize: instructions name {audience}, which is not a declared input field" in message


@pytest.mark.parametrize("template", ["Say {text!r}", "Say {text:>10}", "Say {text.upper}", "Say {0}", "Say {"])
def test_a_placeholder_must_be_a_plain_field_name(tmp_path: Path, template: str) -> None:
    document = shipped()
    document["actions"]["summarize"]["instructions"] = template
    assert "actions.summarize" in refused(tmp_path, document)


def test_a_bad_json_schema_is_refused(tmp_path: Path) -> None:
    document = shipped()
    document["actions"]["classify"]["output"]["json"]["schema"]["properties"]["label"]["type"] = "text"
    assert "not a valid JSON Schema" in refused(tmp_path, document)


def test_a_schema_must_describe_an_object(tmp_path: Path) -> None:
    document = shipped()
    document["actions"]["analyze_document"]["output"]["json"]["schema"] = {"type": "array"}
    assert "type: object" in refused(tmp_path, document)


def test_output_is_text_or_json_not_both(tmp_path: Path) -> None:
    document = shipped()
    document["actions"]["chat"]["output"]["json"] = document["actions"]["analyze_document"]["output"]["json"]
    assert "exactly one of text or json" in refused(tmp_path, document)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"keys_from": "text"}, "keys_from 'text' is not a declared input field of kind names"),
        ({"choice": {"field": "label", "from": "colours"}}, "choice.from 'colours'"),
        ({"choice": {"field": "colour", "from": "labels"}}, "choice.field 'colour' is not a property"),
    ],
)
def test_output_checks_must_name_declared_things(tmp_path: Path, change: dict[str, Any], problem: str) -> None:
    document = shipped()
    document["actions"]["classify"]["output"]["json"].update(change)
    assert problem in refused(tmp_path, document)


@pytest.mark.parametrize("document", [None, [], {"actions": {}}, {"actions": {"Bad-Name": {}}}])
def test_an_empty_or_malformed_document_is_refused(tmp_path: Path, document: Any) -> None:
    refused(tmp_path, document)
