"""OpenAPI 3.1 document generated from the same bindings the router serves, so the contract cannot drift.

Schemas follow the proto3 JSON mapping the transcoder speaks: lowerCamelCase (``json_name``) properties, 64-bit
integers as strings, enums as their value names, well-known types in their JSON form (Struct → object,
Timestamp → date-time string …), repeated → array, map → object, other messages → ``$ref`` components named by
their full proto name.

It documents as well as it constrains: descriptions are the proto comments (``proto_docs``: services become tags,
an RPC's comment its operation's summary and description, message, field and enum value comments their schemas'),
every operation names the scope it needs (``techno_core.contract.METHOD_SCOPES``, the table the gate's behaviour
is tested against) in its security requirement, carries a hand-written request and response example
(``openapi_examples``) and lists the AIP-193 error responses (``openapi_errors``). A server-streaming method is
documented as the Server-Sent Events it is served as.

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

from techno_core.contract import (
    EXPLAINED_FIELDS,
    FIELDS,
    IDEMPOTENCY_KEY,
    IDEMPOTENT_METHODS,
    METHOD_SCOPES,
    REQUEST_TIMEOUT,
)
from techno_edge.adapters import openapi_errors, openapi_openai
from techno_edge.adapters.bindings import Binding
from techno_edge.adapters.openapi_errors import ERROR, TRACE_HEADER
from techno_edge.adapters.openapi_examples import Examples, OperationExamples
from techno_edge.adapters.proto_docs import ProtoDocs

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

    def __init__(
        self, docs: ProtoDocs, components: dict[str, JsonSchema] | None = None, *, checked: bool = True
    ) -> None:
        self.docs = docs
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
            self.components[descriptor.full_name] = self._enum(descriptor)
        return {"$ref": _REF + descriptor.full_name}

    def _enum(self, descriptor: EnumDescriptor) -> JsonSchema:
        # JSON Schema has no place for a description per enum value: they go into the description as a list, and
        # into x-enum-descriptions (in value order) for the generators that read it.
        values = [(value.name, self.docs.of(f"{descriptor.full_name}.{value.name}")) for value in descriptor.values]
        schema: JsonSchema = {"type": "string", "enum": [name for name, _ in values]}
        listed = "\n".join(f"- `{name}`: {' '.join(text.split())}" for name, text in values if text)
        description = "\n\n".join(part for part in (self.docs.of(descriptor.full_name), listed) if part)
        if description:
            schema["description"] = description
        if listed:
            schema["x-enum-descriptions"] = [" ".join(text.split()) for _, text in values]
        return schema

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
            "properties": {field.json_name: self.property(field) for field in descriptor.fields},
            "additionalProperties": False,
        }
        description = self.docs.of(descriptor.full_name)
        if description:
            schema["description"] = description
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

    def property(self, field: FieldDescriptor) -> JsonSchema:
        """``field`` as a property of its message's object: described, and nullable unless required."""
        schema = self.field(field) if self._required(field) else _or_null(self.field(field))
        return self.described(schema, field)

    def described(self, schema: JsonSchema, field: FieldDescriptor) -> JsonSchema:
        """``schema`` with the field's proto comment before the contract's own description, if any."""
        comment = self.docs.of(field.full_name)
        if not comment:
            return schema
        rule = schema.get("description", "")
        return {**schema, "description": comment if rule in ("", comment) else f"{comment}\n\n{rule}"}

    def single(self, field: FieldDescriptor) -> JsonSchema:
        """The schema of one value of ``field`` (an item, for a repeated field)."""
        if field.message_type is not None:
            return self.message(field.message_type)
        if field.enum_type is not None:
            return self.enum(field.enum_type)
        return dict(_SCALARS[field.type])

    def _explaining(self) -> _Schemas:
        if self._explained is None:
            self._explained = _Schemas(self.docs, self.components, checked=False)
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
        parameter = {"name": name, "in": "query", "required": False, "schema": schemas.field(field)}
        parameters.append(_described(parameter, schemas.docs.of(field.full_name)))
    return parameters


def _path_parameter(schemas: _Schemas, binding: Binding, name: str, segments: tuple[str, ...]) -> JsonSchema:
    field = binding.path_fields[name][-1]
    schema = schemas.field(field)
    if schema.get("type") == "string":
        schema.setdefault("minLength", 1)  # an empty segment matches no route
    if segments != ("*",) and schema.get("type") == "string":
        pattern = "/".join({"*": "[^/]+", "**": ".+"}.get(s, s) for s in segments)
        schema["pattern"] = f"^{pattern}$"
    return _described(
        {"name": name, "in": "path", "required": True, "schema": schema}, schemas.docs.of(field.full_name)
    )


def _described(item: JsonSchema, description: str) -> JsonSchema:
    return {**item, "description": description} if description else item


def _parameters(schemas: _Schemas, binding: Binding, examples: dict[str, Any]) -> list[JsonSchema]:
    parameters = [_path_parameter(schemas, binding, v.name, v.segments) for v in binding.template.variables]
    if binding.body != "*":
        excluded = set(binding.path_fields) | ({binding.body} if binding.body else set())
        parameters.extend(_query_parameters(schemas, binding.method.input_type, excluded))
    for parameter in parameters:
        if parameter["name"] in examples:
            parameter["example"] = examples[parameter["name"]]
    parameters.append({"$ref": "#/components/parameters/RequestTimeout"})
    if binding.method.full_name in IDEMPOTENT_METHODS:
        parameters.append({"$ref": "#/components/parameters/IdempotencyKey"})
    return parameters


def _summary(comment: str) -> str:
    """The comment's first sentence, without its full stop."""
    first = " ".join(comment.split("\n\n", 1)[0].split())
    end = first.find(". ")
    return (first if end < 0 else first[:end]).rstrip(".")


def _scope_text(scope: str) -> str:
    if not scope:
        return "**Required scope:** none: any valid API key or bearer token."
    return (
        f"**Required scope:** `{scope}`: an API key created with it, or a bearer token whose `scope` claim lists it; "
        "without it the answer is 403 with reason SCOPE_MISSING."
    )


def _texts(docs: ProtoDocs, binding: Binding) -> JsonSchema:
    method = binding.method
    comment = docs.of(method.full_name)
    scope = METHOD_SCOPES.get(method.full_name)
    parts = [comment, "" if scope is None else _scope_text(scope), f"gRPC: `{binding.grpc_path}`."]
    return {
        "summary": _summary(comment) or f"{binding.service}.{method.name}",
        "description": "\n\n".join(part for part in parts if part),
    }


def _security(binding: Binding) -> JsonSchema:
    """The operation's scope as OpenAPI 3.1 states it: the list of a security requirement is the scopes (OAuth) or,
    for other schemes such as an API key, the "role names required for the execution". ``x-required-scopes``
    repeats it for tools that only read scopes of OAuth schemes. An upstream's method the table does not know
    keeps the document-wide requirement (credentials, no known scope)."""
    scope = METHOD_SCOPES.get(binding.method.full_name)
    if scope is None:
        return {}
    scopes = [scope] if scope else []
    return {"security": [{"ApiKeyAuth": scopes}, {"BearerAuth": scopes}], "x-required-scopes": scopes}


def _with_example(content: JsonSchema, name: str, example: Any) -> JsonSchema:
    return content if example is None else {**content, "examples": {name: {"value": example}}}


def _request_body(schemas: _Schemas, binding: Binding, example: Any) -> JsonSchema | None:
    request = binding.method.input_type
    if binding.body == "*":
        path_fields = {chain[0].name for chain in binding.path_fields.values() if len(chain) == 1}
        schema = schemas.request_body(request, path_fields)
        # An absent body is the empty message, which is enough unless a field is required.
        required = schemas.required(f for f in request.fields if f.name not in path_fields)
    elif binding.body:
        # One field as the body: no body (or null) is that field's default, refused only when the field is
        # required and its default, the empty message, lacks required fields of its own.
        field = request.fields_by_name[binding.body]
        message = field.message_type
        required = schemas.required([field]) and message is not None and schemas.required(message.fields)
        schema = schemas.described(schemas.field(field) if required else _or_null(schemas.field(field)), field)
    else:
        return None
    content = _with_example({"schema": schema}, binding.method.name, example)
    return {"required": required, "content": {"application/json": content}}


def _event_names(message: Descriptor) -> list[str]:
    """The events a stream of ``message`` is served as (``techno_edge.adapters.sse``): one per field of its one
    oneof, named by the field; ``message`` (the default event name) for a message without one. A proto3
    ``optional`` field's synthetic oneof (its name begins with "_") does not count."""
    oneofs = [oneof for oneof in message.oneofs if not oneof.name.startswith("_")]
    return [field.json_name for field in oneofs[0].fields] if len(oneofs) == 1 else ["message"]


def _event(name: str, data: JsonSchema) -> JsonSchema:
    """One kind of event, as OpenAPI 3.2's ``itemSchema`` spells an event (fields ``event``, ``data``, ``id``,
    ``retry``); its ``data`` is JSON text, described by ``contentSchema``. ``message`` events carry no name."""
    return {
        "type": "object",
        "required": ["data"] if name == "message" else ["event", "data"],
        "properties": {
            "event": {"const": name},
            "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": data},
        },
    }


def _event_stream(schemas: _Schemas, binding: Binding, example: Any) -> JsonSchema:
    """A server-streaming method, served as Server-Sent Events: each message of the stream is one event.

    OpenAPI 3.1 has no form for a stream of items (3.2 adds ``itemSchema``); the convention of 3.1 tools such as
    schemathesis is that an event stream's ``schema`` describes one event. The last alternative, a string, is the
    whole stream read at once, which is what a client generated from the document returns."""
    response = binding.method.output_type
    data = schemas.message(response)
    names = _event_names(response)
    schema = {
        "description": f"Server-Sent Events: {', '.join(f'`{name}`' for name in names)}, each with one "
        f"`{response.full_name}` in JSON as its `data`, the field of its name set. A failure after the stream "
        "has started ends it with an `error` event whose `data` is an `Error` body; one before it started is an "
        "ordinary error response. Comment lines (`: keep-alive`) keep a quiet stream open.",
        "oneOf": [
            *(_event(name, data) for name in names),
            _event("error", {"$ref": _REF + ERROR}),
            {"type": "string", "description": "The whole stream, as read at once."},
        ],
    }
    return {
        "description": schemas.docs.of(response.full_name) or "OK",
        "headers": {"X-Trace-Id": TRACE_HEADER},
        "content": {"text/event-stream": _with_example({"schema": schema}, binding.method.name, example)},
    }


def _success(schemas: _Schemas, binding: Binding, example: Any) -> JsonSchema:
    if binding.method.server_streaming:
        return _event_stream(schemas, binding, example)
    response = binding.method.output_type
    schema = (
        schemas.field(response.fields_by_name[binding.response_body])
        if binding.response_body
        else schemas.message(response)
    )
    return {
        "description": schemas.docs.of(response.full_name) or "OK",
        "headers": {"X-Trace-Id": TRACE_HEADER},
        "content": {"application/json": _with_example({"schema": schema}, binding.method.name, example)},
    }


def _operation(schemas: _Schemas, binding: Binding, examples: OperationExamples) -> JsonSchema:
    operation: JsonSchema = {
        "operationId": binding.operation_id,
        "tags": [binding.method.containing_service.name],
        **_texts(schemas.docs, binding),
        "parameters": _parameters(schemas, binding, examples.parameters),
        **_security(binding),
    }
    body = _request_body(schemas, binding, examples.request)
    if body is not None:
        operation["requestBody"] = body
    operation["responses"] = {"200": _success(schemas, binding, examples.response), **openapi_errors.operation_errors()}
    return operation


def _version() -> str:
    try:
        return metadata.version("techno")
    except metadata.PackageNotFoundError:
        return "0"


_DESCRIPTION = """REST/JSON front door of the Techno gateway, generated from the gRPC services' `google.api.http` \
annotations and proto comments.

**Authentication.** Every operation needs credentials: an API key in `X-API-Key`, or a bearer token (JWT) in \
`Authorization: Bearer …`. Each operation states the scope it needs besides (`process`, `audit:read` or `admin`) in \
its security requirement, its `x-required-scopes` and its description.

**Errors.** Every 4xx and 5xx answers an `Error` body (AIP-193): `{"error": {"code", "message", "status", \
"details"}}`, whose details always include a `google.rpc.ErrorInfo` with the machine-readable `reason` and the \
request's `traceId`, and, as the case may be, `BadRequest` field violations, `QuotaFailure` and `RetryInfo` (also \
sent as `Retry-After`). Every response carries `X-Trace-Id`. The errors of the OpenAI-compatible operations are \
not `Error` bodies but OpenAI's error object (`{"error": {"message", "type", "param", "code", "reason_codes", \
"trace_id"}}`), which the OpenAI SDKs read.

**Deadlines and retries.** `X-Request-Timeout` lowers the deadline; the operations that honour \
`Idempotency-Key` list it."""

_SECURITY_SCHEMES: JsonSchema = {
    "ApiKeyAuth": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "An API key (tk_…), made by POST /v1/admin/keys or techno-keys, with the scopes given then.",
    },
    "BearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A JWT from the configured issuer; its `scope` (or `scp`) claim lists its scopes.",
    },
}


def _components(schemas: _Schemas, examples: Examples) -> JsonSchema:
    openapi_errors.add_error_schemas(schemas.components, schemas.message, schemas.docs)
    schemas.components.update(openapi_openai.schemas())
    return {
        "schemas": dict(sorted(schemas.components.items())),
        "responses": {**openapi_errors.error_responses(examples.errors), **openapi_openai.responses()},
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
                "description": "A unique value per distinct request (e.g. a UUID). The request runs at most once "
                "per caller and key: a repeat, even concurrent, gets the first one's response (kept 24 h; for a "
                "stream that completed, one `done` event), and a key reused for another request is refused "
                "(IDEMPOTENCY_KEY_REUSED). A stream that failed or was cancelled frees its key. Printable ASCII "
                "without spaces, at most 255 characters.",
                "schema": IDEMPOTENCY_KEY.json_schema(),
            },
        },
        "securitySchemes": _SECURITY_SCHEMES,
    }


SERVERS = ({"url": "/", "description": "The edge serving this document (a URL relative to it)."},)


def build_openapi(
    bindings: Iterable[Binding],
    *,
    title: str = "Techno API",
    docs: ProtoDocs | None = None,
    examples: Examples | None = None,
    servers: Iterable[JsonSchema] = SERVERS,
) -> dict[str, Any]:
    """``docs`` and ``examples`` default to the packaged ones (the protos' comments, the hand-written examples)."""
    schemas = _Schemas(ProtoDocs.packaged() if docs is None else docs)
    examples = Examples.packaged() if examples is None else examples
    paths: dict[str, dict[str, Any]] = {}
    tags: dict[str, str] = {}
    for binding in bindings:
        service = binding.method.containing_service
        tags.setdefault(service.name, schemas.docs.of(service.full_name))
        item = paths.setdefault(binding.template.openapi_path(), {})
        method = binding.http_method.lower()
        if method in {"get", "put", "post", "delete", "patch", "options", "head", "trace"} and method not in item:
            item[method] = _operation(schemas, binding, examples.of(binding.operation_id))
    # Served in front of the bindings' routes by the edge itself (``entrypoints.openai_routes``), described by hand.
    paths.update(openapi_openai.paths())
    tags[openapi_openai.TAG] = openapi_openai.TAG_DESCRIPTION
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": _version(), "description": _DESCRIPTION},
        "servers": [dict(server) for server in servers],
        "tags": [_described({"name": name}, description) for name, description in tags.items()],
        "paths": paths,
        "security": [{"ApiKeyAuth": []}, {"BearerAuth": []}],
        "components": _components(schemas, examples),
    }
