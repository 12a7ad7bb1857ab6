"""OpenAPI 3.1 document generated from the same bindings the router serves, so the contract cannot drift.

Schemas follow the proto3 JSON mapping the transcoder speaks: lowerCamelCase (``json_name``) properties, 64-bit
integers as strings, enums as their value names, well-known types in their JSON form (Struct → object,
Timestamp → date-time string …), repeated → array, map → object, other messages → ``$ref`` components named by
their full proto name. Generated descriptors carry no source info, so proto comments are not available here.

The document is as strict as the server, so a client generated from it neither sends what is refused nor refuses
what is sent: unknown properties are refused (``additionalProperties: false``, as the transcoder does), the
rules of fields that every caller must obey (lengths, patterns, choices) come from ``techno_core.contract``, the
table the services validate with, and ``Idempotency-Key`` is declared only on the methods that honour it.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import metadata
from typing import Any

from google.api import field_behavior_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from techno_core.contract import EXPLAINED_FIELDS, FIELDS, IDEMPOTENCY_KEY, IDEMPOTENT_METHODS, REQUEST_TIMEOUT
from techno_edge.adapters.bindings import Binding

JsonSchema = dict[str, Any]
_REF = "#/components/schemas/"
_QUERY_DEPTH = 4  # nested request messages are flattened into dotted query parameters up to this depth

_SCALARS: dict[int, JsonSchema] = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "minimum": 0, "maximum": 4_294_967_295},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "minimum": 0, "maximum": 4_294_967_295},
    # proto3 JSON prints 64-bit integers as strings: a JavaScript number cannot hold them exactly.
    FieldDescriptor.TYPE_INT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_SINT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FieldDescriptor.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}


def _nullable(schema: JsonSchema) -> JsonSchema:
    return {**schema, "type": [schema["type"], "null"]}


_WELL_KNOWN: dict[str, JsonSchema] = {
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {"description": "Any JSON value."},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$", "examples": ["1.5s"]},
    "google.protobuf.FieldMask": {"type": "string", "description": "Comma-separated lowerCamelCase field paths."},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
        "additionalProperties": True,
    },
    "google.protobuf.DoubleValue": _nullable(_SCALARS[FieldDescriptor.TYPE_DOUBLE]),
    "google.protobuf.FloatValue": _nullable(_SCALARS[FieldDescriptor.TYPE_FLOAT]),
    "google.protobuf.Int64Value": _nullable(_SCALARS[FieldDescriptor.TYPE_INT64]),
    "google.protobuf.UInt64Value": _nullable(_SCALARS[FieldDescriptor.TYPE_UINT64]),
    "google.protobuf.Int32Value": _nullable(_SCALARS[FieldDescriptor.TYPE_INT32]),
    "google.protobuf.UInt32Value": _nullable(_SCALARS[FieldDescriptor.TYPE_UINT32]),
    "google.protobuf.BoolValue": _nullable(_SCALARS[FieldDescriptor.TYPE_BOOL]),
    "google.protobuf.StringValue": _nullable(_SCALARS[FieldDescriptor.TYPE_STRING]),
    "google.protobuf.BytesValue": _nullable(_SCALARS[FieldDescriptor.TYPE_BYTES]),
}

_ERROR_SCHEMA: JsonSchema = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "status", "message", "reason_codes", "trace_id"],
            "properties": {
                "code": {"type": "integer", "description": "The HTTP status code."},
                "status": {"type": "string", "description": "The gRPC status code name, e.g. PERMISSION_DENIED."},
                "message": {"type": "string"},
                "reason_codes": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Machine-readable reasons (google.rpc.ErrorInfo), e.g. API_KEY_INVALID.",
                },
                "trace_id": {"type": "string", "description": "W3C trace id of the request."},
                "field_violations": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["field", "description"],
                        "properties": {"field": {"type": "string"}, "description": {"type": "string"}},
                    },
                },
                "quota_violations": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["subject", "description"],
                        "properties": {"subject": {"type": "string"}, "description": {"type": "string"}},
                    },
                },
            },
        }
    },
}
_TRACE_HEADER = {"description": "W3C trace id of the request.", "schema": {"type": "string"}}


def _behaviors(field: FieldDescriptor) -> list[int]:
    return list(field.GetOptions().Extensions[field_behavior_pb2.field_behavior])


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _or_null(schema: JsonSchema) -> JsonSchema:
    """``schema`` that also admits JSON null, which the proto3 JSON mapping reads as the field's default."""
    kind = schema.get("type")
    if isinstance(kind, str) and kind != "null":
        widened = {**schema, "type": [kind, "null"]}
        if "enum" in widened:
            widened["enum"] = [*widened["enum"], None]
        return widened
    if "$ref" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    return schema  # already any JSON value


class _Schemas:
    """Component schemas by full proto name. ``checked`` false describes messages with their types only (no
    required fields, no contract rules), under names ending in ``.Explained``, for requests the server explains
    rather than refuses (``EXPLAINED_FIELDS``)."""

    def __init__(self, components: dict[str, JsonSchema] | None = None, *, checked: bool = True) -> None:
        self.components: dict[str, JsonSchema] = {} if components is None else components
        self._checked = checked
        self._explained: _Schemas | None = None

    def _name(self, full_name: str) -> str:
        return full_name if self._checked else f"{full_name}.Explained"

    def message(self, descriptor: Descriptor) -> JsonSchema:
        well_known = _WELL_KNOWN.get(descriptor.full_name)
        if well_known is not None:
            return dict(well_known)
        name = self._name(descriptor.full_name)
        if name not in self.components:
            self.components[name] = {}  # reserved first: recursive messages refer to themselves
            self.components[name] = self._object(descriptor)
        return {"$ref": _REF + name}

    def enum(self, descriptor: EnumDescriptor) -> JsonSchema:
        if descriptor.full_name == "google.protobuf.NullValue":
            return {"type": "null"}
        if descriptor.full_name not in self.components:
            self.components[descriptor.full_name] = {"type": "string", "enum": [v.name for v in descriptor.values]}
        return {"$ref": _REF + descriptor.full_name}

    def _required(self, field: FieldDescriptor) -> bool:
        message = field.containing_type
        explained = message is not None and (message.full_name, field.name) in EXPLAINED_FIELDS
        return self._checked and not explained and field_behavior_pb2.REQUIRED in _behaviors(field)

    def required(self, fields: Iterable[FieldDescriptor]) -> bool:
        return any(self._required(field) for field in fields)

    def _object(self, descriptor: Descriptor) -> JsonSchema:
        # The transcoder refuses unknown fields (ignore_unknown_fields=False), so the schema does too. A field
        # that is not required may be null: the proto3 JSON mapping reads null as the default value.
        schema: JsonSchema = {
            "type": "object",
            "properties": {
                field.json_name: self.field(field) if self._required(field) else _or_null(self.field(field))
                for field in descriptor.fields
            },
            "additionalProperties": False,
        }
        required = [f.json_name for f in descriptor.fields if self._required(f)]
        if required:
            schema["required"] = required
        return schema

    def request_body(self, descriptor: Descriptor, path_fields: set[str]) -> JsonSchema:
        """The schema of a ``body: "*"`` request: the message without the fields its path sets (the path wins)."""
        if not path_fields:
            return self.message(descriptor)
        schema = self._object(descriptor)
        for field in descriptor.fields:
            if field.name in path_fields:
                del schema["properties"][field.json_name]
        if "required" in schema:
            schema["required"] = [name for name in schema["required"] if name in schema["properties"]]
            if not schema["required"]:
                del schema["required"]
        return schema

    def single(self, field: FieldDescriptor) -> JsonSchema:
        """The schema of one value of ``field`` (an item, for a repeated field)."""
        if field.message_type is not None:
            return self.message(field.message_type)
        if field.enum_type is not None:
            return self.enum(field.enum_type)
        return dict(_SCALARS[field.type])

    def _explaining(self) -> _Schemas:
        if self._explained is None:
            self._explained = _Schemas(self.components, checked=False)
        return self._explained

    def field(self, field: FieldDescriptor) -> JsonSchema:
        key = (field.containing_type.full_name, field.name) if field.containing_type else ("", field.name)
        if key in EXPLAINED_FIELDS and self._checked:
            return self._explaining().field(field)
        if field.message_type is not None and _is_map(field):
            value = field.message_type.fields_by_name["value"]
            schema: JsonSchema = {"type": "object", "additionalProperties": self.single(value)}
        elif field.is_repeated:
            schema = {"type": "array", "items": self.single(field)}
            if field_behavior_pb2.REQUIRED in _behaviors(field):  # a required list is a non-empty one
                schema["minItems"] = 1
        else:
            schema = self.single(field)
        rule = FIELDS.get(key) if self._checked else None
        if rule is not None:  # a repeated field's rule is its items'
            (schema["items"] if field.is_repeated else schema).update(rule.json_schema())
        if field_behavior_pb2.OUTPUT_ONLY in _behaviors(field):
            schema["readOnly"] = True
        return schema


def _query_parameters(
    schemas: _Schemas, descriptor: Descriptor, excluded: set[str], prefix: str = "", depth: int = 0
) -> list[JsonSchema]:
    parameters: list[JsonSchema] = []
    for field in descriptor.fields:
        name = prefix + field.json_name
        if name in excluded or f"{prefix}{field.name}" in excluded or _is_map(field):
            continue
        message = field.message_type
        if message is not None and message.full_name not in _WELL_KNOWN and not field.is_repeated:
            if depth < _QUERY_DEPTH:
                parameters.extend(_query_parameters(schemas, message, excluded, name + ".", depth + 1))
            continue
        if message is not None and message.full_name in {"google.protobuf.Struct", "google.protobuf.Value"}:
            continue  # no query-string form
        parameters.append({"name": name, "in": "query", "required": False, "schema": schemas.field(field)})
    return parameters


def _path_parameter(schemas: _Schemas, binding: Binding, name: str, segments: tuple[str, ...]) -> JsonSchema:
    schema = schemas.field(binding.path_fields[name][-1])
    if schema.get("type") == "string":
        schema.setdefault("minLength", 1)  # an empty segment matches no route
    if segments != ("*",) and schema.get("type") == "string":
        pattern = "/".join({"*": "[^/]+", "**": ".+"}.get(s, s) for s in segments)
        schema["pattern"] = f"^{pattern}$"
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _operation(schemas: _Schemas, binding: Binding) -> JsonSchema:
    request, response = binding.method.input_type, binding.method.output_type
    parameters = [_path_parameter(schemas, binding, v.name, v.segments) for v in binding.template.variables]
    if binding.body != "*":
        excluded = set(binding.path_fields) | ({binding.body} if binding.body else set())
        parameters.extend(_query_parameters(schemas, request, excluded))
    parameters.append({"$ref": "#/components/parameters/RequestTimeout"})
    if binding.method.full_name in IDEMPOTENT_METHODS:
        parameters.append({"$ref": "#/components/parameters/IdempotencyKey"})
    operation: JsonSchema = {
        "operationId": binding.operation_id,
        "tags": [binding.method.containing_service.name],
        "summary": f"{binding.service}.{binding.method.name}",
        "parameters": parameters,
    }
    if binding.body:
        if binding.body == "*":
            path_fields = {chain[0].name for chain in binding.path_fields.values() if len(chain) == 1}
            body_schema = schemas.request_body(request, path_fields)
            # An absent body is the empty message, which is enough unless a field is required.
            required = schemas.required(f for f in request.fields if f.name not in path_fields)
        else:
            # One field as the body: null (or no body) is that field's default, as for any field.
            body_schema, required = _or_null(schemas.field(request.fields_by_name[binding.body])), False
        operation["requestBody"] = {"required": required, "content": {"application/json": {"schema": body_schema}}}
    response_schema = (
        schemas.field(response.fields_by_name[binding.response_body])
        if binding.response_body
        else schemas.message(response)
    )
    operation["responses"] = {
        "200": {
            "description": "OK",
            "headers": {"X-Trace-Id": _TRACE_HEADER},
            "content": {"application/json": {"schema": response_schema}},
        },
        "default": {"$ref": "#/components/responses/Error"},
    }
    return operation


def _version() -> str:
    try:
        return metadata.version("techno")
    except metadata.PackageNotFoundError:
        return "0"


def build_openapi(bindings: Iterable[Binding], *, title: str = "Techno API") -> dict[str, Any]:
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for binding in bindings:
        item = paths.setdefault(binding.template.openapi_path(), {})
        method = binding.http_method.lower()
        if method in {"get", "put", "post", "delete", "patch", "options", "head", "trace"} and method not in item:
            item[method] = _operation(schemas, binding)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": _version(),
            "description": "REST/JSON front door of the Techno gateway, generated from the gRPC annotations.",
        },
        "paths": paths,
        "security": [{"ApiKeyAuth": []}, {"BearerAuth": []}],
        "components": {
            "schemas": {**dict(sorted(schemas.components.items())), "Error": _ERROR_SCHEMA},
            "responses": {
                "Error": {
                    "description": "An error, with the gRPC status it maps from.",
                    "headers": {
                        "X-Trace-Id": _TRACE_HEADER,
                        "Retry-After": {
                            "description": "Seconds to wait before retrying, when the service said so.",
                            "schema": {"type": "integer"},
                        },
                    },
                    "content": {"application/json": {"schema": {"$ref": _REF + "Error"}}},
                }
            },
            "parameters": {
                "RequestTimeout": {
                    "name": "X-Request-Timeout",
                    "in": "header",
                    "required": False,
                    "description": REQUEST_TIMEOUT.description,
                    "schema": {k: v for k, v in REQUEST_TIMEOUT.json_schema().items() if k != "description"},
                },
                "IdempotencyKey": {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "description": "A unique value per distinct request (e.g. a UUID). POST /v1/process runs at most "
                    "once per caller and key: a repeat, even concurrent, gets the first one's response (kept 24 h). "
                    "Printable ASCII without spaces, at most 255 characters.",
                    "schema": IDEMPOTENCY_KEY.json_schema(),
                },
            },
            "securitySchemes": {
                "ApiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "BearerAuth": {"type": "http", "scheme": "bearer"},
            },
        },
    }
