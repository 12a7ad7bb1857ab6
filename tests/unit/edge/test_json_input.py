"""Strict JSON bodies and refusals in the client's terms (techno_edge.adapters.json_input, field_errors)."""

from __future__ import annotations

import json

import pytest

from techno_edge.adapters.bindings import Binding, import_proto_modules, load_bindings
from techno_edge.adapters.json_input import MAX_DEPTH, loads
from techno_edge.adapters.transcoding import build_request
from techno_edge.domain.errors import HttpError
from techno_edge.settings import GATE_PROTO_MODULES, GATE_SERVICE


@pytest.fixture(scope="module")
def bindings() -> dict[str, Binding]:
    import_proto_modules(GATE_PROTO_MODULES)
    return {b.method.name: b for b in load_bindings([GATE_SERVICE])}


def refused(body: bytes) -> HttpError:
    with pytest.raises(HttpError) as raised:
        loads(body)
    assert raised.value.status == 400
    assert raised.value.reasons == ("INVALID_ARGUMENT",)
    return raised.value


def arrays(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_depth_is_bounded_exactly() -> None:
    assert loads(arrays(MAX_DEPTH)) is not None
    assert loads(b'{"a":' * (MAX_DEPTH - 1) + b"{}" + b"}" * (MAX_DEPTH - 1)) is not None
    assert "nested" in refused(arrays(MAX_DEPTH + 1)).message
    assert refused(b'{"a":' * MAX_DEPTH + b"{}" + b"}" * MAX_DEPTH).violations[0].field == "body"


def test_many_shallow_brackets_are_fine() -> None:
    assert len(loads(json.dumps([[i] for i in range(1000)]).encode())) == 1000


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_depth_past_the_decoder_recursion_is_400(depth: int) -> None:
    assert "nested" in refused(arrays(depth)).message


def test_a_repeated_key_is_refused() -> None:
    assert "'a'" in refused(b'{"a": 1, "b": {"a": 2, "a": 3}}').message
    assert loads(b'{"a": 1, "b": {"a": 2}}') == {"a": 1, "b": {"a": 2}}


@pytest.mark.parametrize("body", [b'{"n": NaN}', b'{"n": Infinity}', b'{"n": -Infinity}', b'{"n": 1e400}'])
def test_numbers_without_a_json_form_are_refused(body: bytes) -> None:
    refused(body)


def test_a_huge_integer_is_refused_in_json_terms() -> None:
    error = refused(b'{"n": ' + b"9" * 5000 + b"}")
    assert "digits" in error.message
    assert "sys." not in error.message


def test_json_syntax_errors_keep_the_position() -> None:
    assert "line 1 column 2" in refused(b"{broken").message


@pytest.mark.parametrize(
    ("body", "field", "description"),
    [
        ({"payload": "x"}, "payload", "must be an object"),
        ({"payload": [1]}, "payload", "must be an object"),
        ({"action": 5}, "action", "must be a string"),
        ({"sessionId": ["a"]}, "sessionId", "must be a string"),
        ({"action": "a", "bogus": 1}, "bogus", "is not a field of this request"),
    ],
)
def test_a_value_that_does_not_fit_names_its_field(
    bindings: dict[str, Binding], body: dict[str, object], field: str, description: str
) -> None:
    with pytest.raises(HttpError) as raised:
        build_request(bindings["Process"], {}, b"", json.dumps(body).encode())
    violation = raised.value.violations[0]
    assert (violation.field, violation.description) == (field, description)
    assert "google.protobuf" not in raised.value.message
    assert "ProcessRequest" not in raised.value.message


def test_query_parameters_on_a_whole_body_method_are_refused(bindings: dict[str, Binding]) -> None:
    with pytest.raises(HttpError) as raised:
        build_request(bindings["Process"], {}, b"dry_run=true", b'{"action": "a"}')
    assert raised.value.status == 400
    assert raised.value.violations[0].field == "dry_run"
