"""``techno_core.structs.struct_dict`` gives what ``json_format.MessageToDict`` gives for a Struct, which it
replaces on the hot paths: any drift would change audit hashes and the executor's inputs."""

from __future__ import annotations

import math
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2

from techno_core.structs import struct_dict


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"text": "Techno governs every AI action.", "n": 3, "ratio": 0.25, "ok": True, "off": False, "none": None},
        {"nested": {"list": [1, "two", None, {"deep": [True, 2.5]}, []], "empty": {}}},
        {"big": 2**60, "negative": -7, "unicode": "é😀"},
    ],
)
def test_struct_dict_equals_message_to_dict(values: dict[str, Any]) -> None:
    struct = _struct(values)
    assert struct_dict(struct) == json_format.MessageToDict(struct)


def test_a_value_with_no_kind_set_reads_as_null_like_message_to_dict() -> None:
    struct = struct_pb2.Struct()
    struct.fields["unset"].Clear()
    assert struct_dict(struct) == json_format.MessageToDict(struct) == {"unset": None}


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_numbers_without_a_json_form_are_refused_like_message_to_dict(number: float) -> None:
    struct = _struct({"x": number})
    with pytest.raises(ValueError, match="Fail to serialize"):
        json_format.MessageToDict(struct)
    with pytest.raises(ValueError, match="Fail to serialize"):
        struct_dict(struct)
