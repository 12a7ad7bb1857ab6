"""The error half of the OpenAPI document: the AIP-193 body every 4xx and 5xx answers with
(``techno_edge.domain.errors``), its ``google.rpc`` details and the error responses every operation lists.

The detail schemas are made from the ``google.rpc`` descriptors by the same code as every message (so a field the
installed googleapis protos add, such as ``BadRequest.FieldViolation.reason``, is documented too), then given
their ``@type`` as a constant: a client tells the details apart by it, and a generated client's union of the four
tries each in turn and keeps the one whose ``@type`` matches. ErrorInfo's ``reason`` lists the gate's
``ReasonCode`` values with their proto comments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor
from google.rpc import error_details_pb2

from techno_edge.adapters.proto_docs import ProtoDocs

JsonSchema = dict[str, Any]
REF = "#/components/schemas/"
ERROR = "Error"
TYPE_URL_PREFIX = "type.googleapis.com/"
REASON_ENUM, REASON_PREFIX = "techno.gate.v1.ReasonCode", "REASON_CODE_"
_NOT_ERRORS = frozenset({"UNSPECIFIED", "ALLOWED"})  # reasons of the audit trail, never of an error
TRACE_HEADER: JsonSchema = {"description": "W3C trace id of the request.", "schema": {"type": "string"}}

DETAILS: tuple[Descriptor, ...] = (
    error_details_pb2.ErrorInfo.DESCRIPTOR,
    error_details_pb2.BadRequest.DESCRIPTOR,
    error_details_pb2.QuotaFailure.DESCRIPTOR,
    error_details_pb2.RetryInfo.DESCRIPTOR,
)
# Fields the edge always fills (so never null), by message.
_ALWAYS: dict[str, tuple[str, ...]] = {
    "google.rpc.ErrorInfo": ("reason", "domain"),
    "google.rpc.BadRequest": ("fieldViolations",),
    "google.rpc.BadRequest.FieldViolation": ("field", "description"),
    "google.rpc.QuotaFailure": ("violations",),
    "google.rpc.QuotaFailure.Violation": ("subject", "description"),
    "google.rpc.RetryInfo": ("retryDelay",),
}
_DESCRIPTIONS: dict[str, str] = {
    "google.rpc.ErrorInfo": "Why the request failed, machine-readable. Every error body has one.",
    "google.rpc.BadRequest": "The fields of the request that are invalid, and why.",
    "google.rpc.QuotaFailure": "The limits the request exceeded.",
    "google.rpc.RetryInfo": "When the request may be retried (also the Retry-After header, in whole seconds).",
}
# The error responses of every operation: status pattern → (component name, description).
RESPONSES: dict[str, tuple[str, str]] = {
    "400": ("BadRequest", "The request is invalid: a BadRequest detail names the fields (INVALID_ARGUMENT, …)."),
    "401": ("Unauthenticated", "No, unknown, revoked or expired credentials (CREDENTIALS_MISSING, …)."),
    "403": (
        "PermissionDenied",
        "The credentials lack the operation's scope, or the policy refuses (SCOPE_MISSING, …).",
    ),
    "429": (
        "TooManyRequests",
        "A limit is reached: QuotaFailure names it, RetryInfo and Retry-After say when to retry.",
    ),
    "4XX": ("ClientError", "Another refusal of the request (no route, conflict, body too large, …)."),
    "5XX": ("ServerError", "The gateway or a dependency failed; RetryInfo says when to retry, when known."),
}


def _non_null(schema: JsonSchema) -> JsonSchema:
    """``schema`` without the JSON null that optional message fields admit."""
    if "anyOf" in schema:
        return next(s for s in schema["anyOf"] if s.get("type") != "null")
    kind = schema.get("type")
    if isinstance(kind, list):
        return {**schema, "type": next(k for k in kind if k != "null")}
    return schema


def _reasons(docs: ProtoDocs, pool: descriptor_pool.DescriptorPool) -> str:
    try:
        enum = pool.FindEnumTypeByName(REASON_ENUM)
    except KeyError:
        return ""
    lines = [
        f"- `{value.name.removeprefix(REASON_PREFIX)}`: {' '.join(docs.of(f'{enum.full_name}.{value.name}').split())}"
        for value in enum.values
        if value.name.removeprefix(REASON_PREFIX) not in _NOT_ERRORS
    ]
    return "\n\nThe gate's reasons (the `ReasonCode` values without their prefix):\n\n" + "\n".join(lines)


def _detail(components: dict[str, JsonSchema], descriptor: Descriptor) -> None:
    """Gives the generated component of ``descriptor`` its ``@type`` and its always-present fields."""
    for name, fields in _ALWAYS.items():
        component = components.get(name)
        if component is not None:
            for field in fields:
                component["properties"][field] = _non_null(component["properties"][field])
            component["required"] = sorted({*component.get("required", []), *fields})
    component = components[descriptor.full_name]
    type_url = TYPE_URL_PREFIX + descriptor.full_name
    component["properties"] = {"@type": {"type": "string", "const": type_url}, **component["properties"]}
    component["required"] = ["@type", *component["required"]]
    component["description"] = _DESCRIPTIONS[descriptor.full_name]


def add_error_schemas(
    components: dict[str, JsonSchema],
    message: Callable[[Descriptor], JsonSchema],
    docs: ProtoDocs,
    pool: descriptor_pool.DescriptorPool | None = None,
) -> None:
    """Adds ``Error`` and its detail schemas to ``components``; ``message`` makes (and registers) a message's."""
    details = [message(descriptor) for descriptor in DETAILS]
    for descriptor in DETAILS:
        _detail(components, descriptor)
    info = components["google.rpc.ErrorInfo"]["properties"]
    info["reason"]["description"] = (
        "The reason code (UPPER_SNAKE_CASE), stable for programs to act on; docs/reason-codes.md lists them with "
        "what to do, the edge's own (ROUTE_NOT_FOUND, BODY_TOO_LARGE, …) included."
        + _reasons(docs, pool or descriptor_pool.Default())
    )
    info["domain"]["description"] = "The service that decided: techno.dev."
    info["metadata"]["description"] = "Context of the error; `traceId` is the request's W3C trace id, always set."
    components[ERROR] = {
        "type": "object",
        "description": "The body of every error (AIP-193): a google.rpc.Status with the HTTP status as `code`.",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "status", "details"],
                "properties": {
                    "code": {"type": "integer", "description": "The HTTP status code."},
                    "message": {"type": "string", "description": "For people; programs read the ErrorInfo reason."},
                    "status": {"type": "string", "description": "The gRPC status code name, e.g. PERMISSION_DENIED."},
                    "details": {
                        "type": "array",
                        "minItems": 1,
                        "description": "google.rpc details in proto3 JSON, told apart by `@type`; always an ErrorInfo.",
                        "items": {"oneOf": details},
                    },
                },
            }
        },
    }


def error_responses(examples: dict[str, Any]) -> dict[str, JsonSchema]:
    """The ``components/responses`` every operation refers to, one per entry of ``RESPONSES``."""
    responses: dict[str, JsonSchema] = {}
    for pattern, (name, description) in RESPONSES.items():
        content: JsonSchema = {"schema": {"$ref": REF + ERROR}}
        if pattern in examples:
            content["examples"] = {name: {"value": examples[pattern]}}
        responses[name] = {
            "description": description,
            "headers": {
                "X-Trace-Id": TRACE_HEADER,
                "Retry-After": {
                    "description": "Seconds to wait before retrying, when the service said so.",
                    "schema": {"type": "integer"},
                },
            },
            "content": {"application/json": content},
        }
    return responses


def operation_errors() -> dict[str, JsonSchema]:
    return {pattern: {"$ref": f"#/components/responses/{name}"} for pattern, (name, _) in RESPONSES.items()}
