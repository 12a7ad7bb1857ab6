"""HTTP request → protobuf request, protobuf response → JSON, by the proto3 JSON mapping (``json_format``).

Order of precedence, as in grpc-gateway: the body (``*`` or one field) first, then query parameters (only when
the body is not ``*``: then every field is in the body, and any query parameter is a 400), then path variables,
which win. Unknown fields and unknown query parameters are a 400 (``ignore_unknown_fields=False``): a typo must
not silently become a default value. A value that does not fit is a 400 naming its JSON path and what it must be
(``field_errors``); json_format's own message, which names protobuf types, goes to the debug log only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from techno_edge.adapters import json_input
from techno_edge.adapters.bindings import Binding, resolve_field_path
from techno_edge.adapters.field_errors import locate, locate_field
from techno_edge.domain.errors import HttpError, Violation, invalid_argument

log = logging.getLogger(__name__)
# What json_format raises for a value that does not fit; RecursionError only as a last line of defence, the
# body's depth is bounded before (json_input.MAX_DEPTH).
_PARSE_ERRORS = (json_format.ParseError, ValueError, TypeError, RecursionError)

# Message types whose JSON form is a scalar, so a query parameter can carry them.
_SCALAR_JSON_MESSAGES = frozenset(
    {
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "google.protobuf.FieldMask",
        "google.protobuf.StringValue",
        "google.protobuf.BytesValue",
        "google.protobuf.BoolValue",
        "google.protobuf.Int32Value",
        "google.protobuf.Int64Value",
        "google.protobuf.UInt32Value",
        "google.protobuf.UInt64Value",
        "google.protobuf.FloatValue",
        "google.protobuf.DoubleValue",
    }
)
_DUMPS = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _is_bool(field: FieldDescriptor) -> bool:
    if field.message_type is not None:
        return field.message_type.full_name == "google.protobuf.BoolValue"
    return field.type == FieldDescriptor.TYPE_BOOL


def _text_value(field: FieldDescriptor, name: str, text: str) -> Any:
    """A path or query string as the JSON value json_format expects: it parses numbers and enum names from
    strings itself, but insists on a real JSON boolean."""
    if not _is_bool(field):
        return text
    if text in ("true", "false"):
        return text == "true"
    raise invalid_argument(f"{name} must be true or false", Violation(name, "must be true or false"))


def _merge(parent: Message, field: FieldDescriptor, value: Any, name: str) -> None:
    """Set one field of ``parent`` from its JSON value. ParseDict clears a repeated field before filling it, and
    overwrites a scalar, so a later source overrides an earlier one."""
    try:
        json_format.ParseDict({field.name: value}, parent, ignore_unknown_fields=False)
    except _PARSE_ERRORS as error:
        raise _refused(locate_field(field, value, name), error) from None


def _refused(violation: Violation, error: BaseException) -> HttpError:
    log.debug("refused %s: %s", violation.field, error)
    return invalid_argument(f"{violation.field} {violation.description}", violation)


def _parent_of(message: Message, chain: Sequence[FieldDescriptor]) -> Message:
    for field in chain[:-1]:
        message = getattr(message, field.name)
    return message


def _merge_body(message: Message, binding: Binding, body: bytes) -> None:
    if not body.strip():
        return  # an empty body is an empty message, as with grpc-gateway
    value = json_input.loads(body)
    if binding.body == "*":
        if not isinstance(value, dict):
            raise invalid_argument("request body must be a JSON object", Violation("body", "must be an object"))
        try:
            json_format.ParseDict(value, message, ignore_unknown_fields=False)
        except _PARSE_ERRORS as error:
            raise _refused(locate(binding.method.input_type, value), error) from None
        return
    field = binding.method.input_type.fields_by_name[binding.body]
    try:
        json_format.ParseDict({field.name: value}, message, ignore_unknown_fields=False)
    except _PARSE_ERRORS as error:
        raise _refused(_body_violation(field, value), error) from None


def _body_violation(field: FieldDescriptor, value: Any) -> Violation:
    """Where a body bound to one field is wrong, as a JSON path of the body the client sent: ``payload``, not
    ``request.payload``, so a body reads the same whichever method it is sent to."""
    nested = field.message_type
    if nested is None or field.is_repeated or nested.full_name.startswith("google.protobuf."):
        return locate_field(field, value, "body")
    return locate(nested, value)


def _merge_query(message: Message, binding: Binding, query_string: bytes) -> None:
    grouped: dict[str, list[str]] = {}
    try:
        pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise invalid_argument("query string is not valid UTF-8") from None
    for name, value in pairs:
        grouped.setdefault(name, []).append(value)
    for name, values in grouped.items():
        chain = resolve_field_path(binding.method.input_type, name.split("."))
        if chain is None:
            raise invalid_argument(f"unknown query parameter {name!r}", Violation(name, "unknown field"))
        leaf = chain[-1]
        bound = name in binding.path_fields or (binding.body and chain[0].name == binding.body)
        # Maps and other messages have no query-string form (a map entry is a message, so it lands here too).
        scalar_like = leaf.message_type is None or leaf.message_type.full_name in _SCALAR_JSON_MESSAGES
        if bound or not scalar_like:
            raise invalid_argument(
                f"query parameter {name!r} cannot set this field", Violation(name, "cannot be set from the query")
            )
        repeated = leaf.is_repeated
        if not repeated and len(values) > 1:
            raise invalid_argument(f"query parameter {name!r} repeated", Violation(name, "must appear once"))
        converted = [_text_value(leaf, name, v) for v in values]
        _merge(_parent_of(message, chain), leaf, converted if repeated else converted[0], name)


def _refuse_query(query_string: bytes) -> None:
    """With ``body: "*"`` every field comes from the body, so a query parameter could only be ignored."""
    names = [name for name, _ in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)]
    name = names[0] if names else query_string.decode("latin-1")
    raise invalid_argument(
        f"unknown query parameter {name!r}: this method takes its fields from the body",
        Violation(name, "unknown query parameter"),
    )


def build_request(binding: Binding, path_values: dict[str, str], query_string: bytes, body: bytes) -> Message:
    """Raises ``techno_edge.domain.errors.HttpError`` (400) when the request does not fit the method's input message."""
    message = binding.request_class()
    if binding.body:
        _merge_body(message, binding, body)
    if binding.body == "*" and query_string:
        _refuse_query(query_string)
    elif query_string:
        _merge_query(message, binding, query_string)
    for name, value in path_values.items():
        chain = binding.path_fields[name]
        _merge(_parent_of(message, chain), chain[-1], _text_value(chain[-1], name, value), name)
    return message


def render_response(binding: Binding, response: Message) -> bytes:
    """Fields at their default value are printed too: a REST client expects ``"actions": []``, not a missing key."""
    selected: Any = response
    if binding.response_body:
        field = binding.method.output_type.fields_by_name[binding.response_body]
        selected = getattr(response, field.name)
        if field.message_type is None or field.is_repeated:
            rendered = json_format.MessageToDict(response, always_print_fields_with_no_presence=True)
            return dumps(rendered[field.json_name])
    return dumps(json_format.MessageToDict(selected, always_print_fields_with_no_presence=True))


def dumps(value: Any) -> bytes:
    return _DUMPS(value).encode()
