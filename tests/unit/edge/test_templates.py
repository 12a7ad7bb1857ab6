"""The hand-written google.api.http path template parser and matcher."""

from __future__ import annotations

import pytest

from techno_edge.domain.templates import TemplateError, Variable, parse_template


def test_literal_template_matches_only_itself() -> None:
    template = parse_template("/v1/process")
    assert template.is_literal
    assert template.match("/v1/process") == {}
    assert template.match("/v1/process/") is None
    assert template.match("/v1/processes") is None


def test_short_variable_is_one_segment() -> None:
    template = parse_template("/v1/things/{name}")
    assert template.variables == (Variable(("name",), ("*",)),)
    assert template.match("/v1/things/abc") == {"name": "abc"}
    assert template.match("/v1/things/a/b") is None
    assert template.match("/v1/things/") is None


def test_variable_with_pattern_captures_its_literals() -> None:
    template = parse_template("/v1/{name=things/*}")
    assert template.match("/v1/things/abc") == {"name": "things/abc"}
    assert template.match("/v1/shelves/abc") is None


def test_nested_field_path() -> None:
    template = parse_template("/v1/{thing.name=things/*}/parts/{part_id}")
    assert [v.field_path for v in template.variables] == [("thing", "name"), ("part_id",)]
    assert template.match("/v1/things/x/parts/7") == {"thing.name": "things/x", "part_id": "7"}


def test_double_wildcard_spans_segments_and_keeps_encoded_slash() -> None:
    template = parse_template("/v1/{path=files/**}")
    assert template.match("/v1/files/a/b%20c/d%2Fe") == {"path": "files/a/b c/d%2Fe"}


def test_single_segment_value_is_fully_decoded() -> None:
    assert parse_template("/v1/things/{name}").match("/v1/things/a%2Fb%20c") == {"name": "a/b c"}


def test_verb_suffix() -> None:
    template = parse_template("/v1/{name=things/*}:cancel")
    assert template.verb == "cancel"
    assert template.match("/v1/things/x:cancel") == {"name": "things/x"}
    assert template.match("/v1/things/x") is None
    assert template.openapi_path() == "/v1/{name}:cancel"


def test_regex_metacharacters_in_literals_are_literal() -> None:
    template = parse_template("/v1/a.b+c")
    assert template.match("/v1/a.b+c") == {}
    assert template.match("/v1/aXbbc") is None


def test_openapi_path_names_each_variable_once() -> None:
    assert parse_template("/v1/{thing.name=things/*}").openapi_path() == "/v1/{thing.name}"


@pytest.mark.parametrize(
    "source",
    ["v1/x", "/v1/{name", "/v1/{}", "/v1/{a={b}}", "/v1/{a}/{a}", "/v1//x", "/v1/{a.}", "/v1/x:", "/v1/{1a}"],
)
def test_malformed_templates_are_refused(source: str) -> None:
    with pytest.raises(TemplateError):
        parse_template(source)
