"""A refused JSON value explained in the client's terms: which field (by its JSON path) and what it must be.

``json_format``'s own messages name protobuf types (``google.protobuf.Struct``, ``ProcessRequest.payload``) and
Python's (``got 'int'``, ``set_int_max_str_digits``); they go to the log, never to the client. Instead the
failing value is found again by walking the JSON along the message's descriptors, and described from the field's
declared type.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from techno_edge.domain.errors import Violation

_T = FieldDescriptor
_INTEGERS = {
    _T.TYPE_INT32: "a 32-bit integer",
    _T.TYPE_SINT32: "a 32-bit integer",
    _T.TYPE_SFIXED32: "a 32-bit integer",
    _T.TYPE_UINT32: "a non-negative 32-bit integer",
    _T.TYPE_FIXED32: "a non-negative 32-bit integer",
    _T.TYPE_INT64: "a 64-bit integer",
    _T.TYPE_SINT64: "a 64-bit integer",
    _T.TYPE_SFIXED64: "a 64-bit integer",
    _T.TYPE_UINT64: "a non-negative 64-bit integer",
    _T.TYPE_FIXED64: "a non-negative 64-bit integer",
}
_WELL_KNOWN = {
    "google.protobuf.Struct": "an object",
    "google.protobuf.ListValue": "an array",
    "google.protobuf.Value": "a JSON value",
    "google.protobuf.Timestamp": 'an RFC 3339 timestamp such as "2025-01-31T12:00:00Z"',
    "google.protobuf.Duration": 'a duration in seconds such as "1.5s"',
    "google.protobuf.FieldMask": "a comma-separated list of field names",
    "google.protobuf.Empty": "an empty object",
    "google.protobuf.Any": 'an object with an "@type"',
    "google.protobuf.StringValue": "a string",
    "google.protobuf.BytesValue": "base64-encoded bytes",
    "google.protobuf.BoolValue": "true or false",
    "google.protobuf.Int32Value": "a 32-bit integer",
    "google.protobuf.UInt32Value": "a non-negative 32-bit integer",
    "google.protobuf.Int64Value": "a 64-bit integer",
    "google.protobuf.UInt64Value": "a non-negative 64-bit integer",
    "google.protobuf.FloatValue": "a number",
    "google.protobuf.DoubleValue": "a number",
}


def expected(field: FieldDescriptor, *, element: bool = False) -> str:
    """What a JSON value of ``field`` must be, e.g. "a string", "an array of 64-bit integers"."""
    if field.is_repeated and not element:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            return "an object"
        return f"an array whose items are each {expected(field, element=True)}"
    if field.message_type is not None:
        return _WELL_KNOWN.get(field.message_type.full_name, "an object")
    if field.enum_type is not None:
        names = ", ".join(value.name for value in field.enum_type.values)
        return f"one of {names}"
    if field.type in _INTEGERS:
        return _INTEGERS[field.type]
    if field.type in (_T.TYPE_DOUBLE, _T.TYPE_FLOAT):
        return "a number"
    if field.type == _T.TYPE_BOOL:
        return "true or false"
    if field.type == _T.TYPE_BYTES:
        return "base64-encoded bytes"
    return "a string"


def _field(message: Descriptor, name: str) -> FieldDescriptor | None:
    return message.fields_by_name.get(name) or message.fields_by_camelcase_name.get(name)


def _fits(message: Descriptor, name: str, value: Any) -> bool:
    try:
        json_format.ParseDict({name: value}, message_factory.GetMessageClass(message)(), ignore_unknown_fields=False)
    except (json_format.ParseError, ValueError, TypeError, RecursionError):
        return False
    return True


def locate(descriptor: Descriptor, value: Any, prefix: str = "") -> Violation:
    """The first field of ``value`` (a JSON object for the message ``descriptor``) that does not fit, and what it
    must be. ``prefix`` is the JSON path of the object itself ("" for the whole body)."""
    if not isinstance(value, dict):
        return Violation(prefix or "body", "must be an object")
    for name, item in value.items():
        path = f"{prefix}.{name}" if prefix else name
        field = _field(descriptor, name)
        if field is None:
            return Violation(path, "is not a field of this request")
        if _fits(descriptor, name, item):
            continue
        return locate_field(field, item, path)
    return Violation(prefix or "body", "is not a valid request")


def locate_field(field: FieldDescriptor, value: Any, path: str) -> Violation:
    """Why ``value`` does not fit ``field`` (at JSON path ``path``), looking into a plain message's fields."""
    nested = field.message_type
    if nested is not None and not field.is_repeated and isinstance(value, dict) and nested.full_name not in _WELL_KNOWN:
        return locate(nested, value, path)
    return Violation(path, f"must be {expected(field)}")
