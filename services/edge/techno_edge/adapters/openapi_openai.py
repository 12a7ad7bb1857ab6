"""The OpenAI-compatible routes in the OpenAPI document, described by hand: they are not gRPC bindings, so nothing
can be generated for them (``techno_edge.entrypoints.openai_routes``, mapped by ``techno_edge.domain.openai_chat``).

The schemas are OpenAI's shapes as far as the edge serves them, and as strict as the edge: the request lists the
fields that are accepted (used, or accepted and ignored) and refuses any other (``additionalProperties: false``),
so the fields the edge refuses (``tools``, ``stop`` …) are not in it. Their errors are OpenAI's error object, not
the AIP-193 ``Error`` of the other routes, with the reason codes and trace id beside OpenAI's fields. A streamed
completion (``"stream": true``) is ``text/event-stream``: unnamed events whose ``data`` is a
``chat.completion.chunk``, then ``[DONE]``; a failure after the first event is one event with the error object
and no ``[DONE]``. Unit tests check that every example fits its schema and that the bodies the edge renders do.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from techno_core.contract import CONTEXT_ID
from techno_edge.adapters.openapi_errors import TRACE_HEADER

JsonSchema = dict[str, Any]
TAG = "OpenAI-compatible"
_REF = "#/components/schemas/"
_ERROR_RESPONSE = "OpenAI.Error"
CHAT_REQUEST, CHAT_COMPLETION, CHUNK = (
    "OpenAI.ChatCompletionRequest",
    "OpenAI.ChatCompletion",
    "OpenAI.ChatCompletionChunk",
)
MESSAGE, USAGE, MODEL, MODEL_LIST, ERROR = (
    "OpenAI.ChatMessage",
    "OpenAI.CompletionUsage",
    "OpenAI.Model",
    "OpenAI.ModelList",
    "OpenAI.Error",
)
TAG_DESCRIPTION = (
    "OpenAI's chat-completions API on the governed `chat` action, so the OpenAI SDKs work by setting `base_url` "
    "to `<edge>/v1` and `api_key` to a Techno key (sent as `Authorization: Bearer`; `X-API-Key` works too). "
    "`model` is the provider to run on (`GET /v1/models` lists those the caller's profile allows); "
    "`X-Techno-Context` sets the policy context. Errors have OpenAI's shape, "
    '`{"error": {"message", "type", "param", "code", "reason_codes", "trace_id"}}`, not the AIP-193 `Error` '
    "of the other operations: `code` is OpenAI's where clients test for it (`invalid_api_key`, "
    "`rate_limit_exceeded`, `model_not_found`), else the reason code."
)


def _ref(name: str) -> JsonSchema:
    return {"$ref": _REF + name}


def _nullable(kind: str, description: str = "") -> JsonSchema:
    schema: JsonSchema = {"type": [kind, "null"]}
    return {**schema, "description": description} if description else schema


_IGNORED = "Accepted and ignored: the chat action has no such setting."
_EMPTY = {
    "anyOf": [{"type": "null"}, {"type": "string", "maxLength": 0}, {"type": "array", "items": {}, "maxItems": 0}],
    "description": "Only empty (as the SDK echoes an assistant message back): the chat action has no tools or audio.",
}
_TEXT_PART: JsonSchema = {
    "type": "object",
    "required": ["type", "text"],
    "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
    "additionalProperties": False,
}
_CHAT_REQUEST: JsonSchema = {
    "type": "object",
    "description": "OpenAI's chat-completion request, as far as the chat action can honour it. A lone user "
    "message is the action's `message` as it is; a conversation is rendered as text (system and developer "
    "messages first, then each turn as `<role>: <content>`). Nothing is remembered between requests. Refused "
    "with 400 (the `param` names the field): tools and functions, `n` above 1, log probabilities, `logit_bias`, "
    "`stop`, a `response_format` other than text, audio, predictions, web search, and any other field.",
    "required": ["model", "messages"],
    "properties": {
        "model": {
            "type": "string",
            "minLength": 1,
            "description": "The provider to run on: one of `GET /v1/models`; any other is refused 403 "
            "(`PROVIDER_NOT_ALLOWED`).",
        },
        "messages": {"type": "array", "minItems": 1, "items": _ref(MESSAGE)},
        "stream": _nullable("boolean", "Answer as Server-Sent Events of `chat.completion.chunk`, then `[DONE]`."),
        "stream_options": {
            "anyOf": [
                {
                    "type": "object",
                    "properties": {"include_usage": _nullable("boolean")},
                    "additionalProperties": False,
                },
                {"type": "null"},
            ],
            "description": "Only with `stream: true`. `include_usage`: a last chunk with the usage and no choices.",
        },
        **{name: _nullable("number", _IGNORED) for name in ("temperature", "top_p")},
        **{name: _nullable("number", _IGNORED) for name in ("presence_penalty", "frequency_penalty")},
        **{name: _nullable("integer", _IGNORED) for name in ("max_tokens", "max_completion_tokens", "seed")},
        **{name: _nullable("string", _IGNORED) for name in ("user", "service_tier", "reasoning_effort")},
        **{name: _nullable("boolean", _IGNORED) for name in ("store", "parallel_tool_calls")},
        "metadata": {"type": ["object", "null"], "description": _IGNORED},
        "n": {"enum": [1, None], "description": "One choice is all the chat action answers."},
    },
    "additionalProperties": False,
    # stream_options only with stream: true, as OpenAI has it (the edge refuses it otherwise).
    "if": {"properties": {"stream_options": {"type": "object"}}, "required": ["stream_options"]},
    "then": {"properties": {"stream": {"const": True}}, "required": ["stream"]},
}
_MESSAGE: JsonSchema = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {
            "enum": ["system", "developer", "user", "assistant"],
            "description": "Tool and function messages are refused: the chat action has no tools.",
        },
        "content": {
            "anyOf": [{"type": "string"}, {"type": "array", "items": _TEXT_PART}],
            "description": "Text, or text parts (joined); other parts (images, audio, files) are refused.",
        },
        "name": {"type": "string", "description": _IGNORED},
        **dict.fromkeys(("refusal", "tool_calls", "function_call", "audio"), _EMPTY),
    },
    "additionalProperties": False,
}
_INTEGER = {"type": "integer", "minimum": 0}
_USAGE: JsonSchema = {
    "type": "object",
    "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
    "properties": dict.fromkeys(("prompt_tokens", "completion_tokens", "total_tokens"), _INTEGER),
}
_ID = {"type": "string", "description": "`chatcmpl-` and the request's trace id (its audit trail's)."}


def _head(kind: str) -> JsonSchema:
    """The properties a completion and its chunks share; ``kind`` is their ``object``."""
    return {"id": _ID, "object": {"const": kind}, "created": _INTEGER, "model": {"type": "string"}}


def _choices(field: str, schema: JsonSchema, finish_reason: JsonSchema) -> JsonSchema:
    """The one choice of a completion (its ``message``) or of a chunk (its ``delta``)."""
    return {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["index", field, "finish_reason"],
            "properties": {
                "index": _INTEGER,
                field: schema,
                "logprobs": {"type": "null"},
                "finish_reason": finish_reason,
            },
        },
    }


_CHAT_COMPLETION: JsonSchema = {
    "type": "object",
    "description": "The provider's reply, as one choice.",
    "required": ["id", "object", "created", "model", "choices", "usage"],
    "properties": {
        **_head("chat.completion"),
        "choices": _choices(
            "message",
            {
                "type": "object",
                "required": ["role", "content"],
                "properties": {
                    "role": {"const": "assistant"},
                    "content": {"type": "string"},
                    "refusal": {"type": "null"},
                },
            },
            {"const": "stop"},
        ),
        "usage": _ref(USAGE),
    },
}
_CHUNK: JsonSchema = {
    "type": "object",
    "description": "One piece of a streamed completion: the role first, then the text, then the finish reason; "
    "with `stream_options.include_usage`, a last chunk with no choices and the usage (null before it).",
    "required": ["id", "object", "created", "model", "choices"],
    "properties": {
        **_head("chat.completion.chunk"),
        "choices": _choices(
            "delta",
            {"type": "object", "properties": {"role": {"const": "assistant"}, "content": {"type": "string"}}},
            {"enum": ["stop", None]},
        ),
        "usage": {"anyOf": [_ref(USAGE), {"type": "null"}]},
    },
}
_MODEL: JsonSchema = {
    "type": "object",
    "description": "A provider the caller's profile may chat on; its `id` is what `model` takes.",
    "required": ["id", "object", "created", "owned_by"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "model"},
        "created": _INTEGER,
        "owned_by": {"type": "string"},
    },
}
_MODEL_LIST: JsonSchema = {
    "type": "object",
    "required": ["object", "data"],
    "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": _ref(MODEL)}},
}
_ERROR: JsonSchema = {
    "type": "object",
    "description": "OpenAI's error object (not the AIP-193 `Error` of the other operations), with the reason "
    "codes and the trace id beside it. A failure in the middle of a stream is one event carrying it.",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code", "reason_codes", "trace_id"],
            "properties": {
                "message": {"type": "string"},
                "type": {
                    "type": "string",
                    "description": "By status: `authentication_error` (401), `permission_error` (403), "
                    "`not_found_error` (404), `rate_limit_error` (429), `api_error` (5xx), else "
                    "`invalid_request_error`.",
                },
                "param": {"type": ["string", "null"], "description": "The invalid field, for a 400."},
                "code": {
                    "type": ["string", "null"],
                    "description": "`invalid_api_key` (401), `rate_limit_exceeded` (429), `model_not_found`, "
                    "else the first reason code (docs/reason-codes.md).",
                },
                "reason_codes": {"type": "array", "items": {"type": "string"}},
                "trace_id": {"type": "string", "description": "The request's trace id, as in `X-Trace-Id`."},
            },
        }
    },
}

_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
_CHUNK_BASE = {"id": f"chatcmpl-{_TRACE}", "object": "chat.completion.chunk", "created": 1767225600, "model": "fake"}
EXAMPLES: dict[str, Any] = {
    "request": {
        "model": "fake",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What does Techno govern?"},
        ],
    },
    "completion": {
        "id": f"chatcmpl-{_TRACE}",
        "object": "chat.completion",
        "created": 1767225600,
        "model": "fake",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Every AI action.", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16},
    },
    "chunks": [
        {
            **_CHUNK_BASE,
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
            ],
        },
        {
            **_CHUNK_BASE,
            "choices": [{"index": 0, "delta": {"content": "Every AI"}, "logprobs": None, "finish_reason": None}],
        },
        {
            **_CHUNK_BASE,
            "choices": [{"index": 0, "delta": {"content": " action."}, "logprobs": None, "finish_reason": None}],
        },
        {**_CHUNK_BASE, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]},
    ],
    "models": {"object": "list", "data": [{"id": "fake", "object": "model", "created": 0, "owned_by": "techno"}]},
    "model": {"id": "fake", "object": "model", "created": 0, "owned_by": "techno"},
    "error": {
        "error": {
            "message": "provider 'openai' is not allowed for this profile",
            "type": "permission_error",
            "param": None,
            "code": "PROVIDER_NOT_ALLOWED",
            "reason_codes": ["PROVIDER_NOT_ALLOWED"],
            "trace_id": _TRACE,
        }
    },
}


def stream_example() -> str:
    """The chunks of ``EXAMPLES`` as the event stream they are sent as."""
    events = (json.dumps(chunk, separators=(",", ":")) for chunk in EXAMPLES["chunks"])
    return "".join(f"data: {event}\n\n" for event in events) + "data: [DONE]\n\n"


def _data(schema: JsonSchema) -> JsonSchema:
    return {"type": "string", "contentMediaType": "application/json", "contentSchema": schema}


# The stream's events, after the convention of the REST streams' (an event's schema; OpenAPI 3.1 has no form
# for a stream of items): unnamed, so only ``data``. ``anyOf``: the data of every event is a string.
_EVENT_STREAM: JsonSchema = {
    "description": "Server-Sent Events, unnamed: each `data` one `chat.completion.chunk` in JSON, then `[DONE]`. "
    "A failure after the first event is one event whose `data` is the error object, and no `[DONE]`. Comment "
    "lines (`: keep-alive`) keep a quiet stream open; the SDKs skip them.",
    "anyOf": [
        {"type": "object", "required": ["data"], "properties": {"data": _data(_ref(CHUNK))}},
        {"type": "object", "required": ["data"], "properties": {"data": {"const": "[DONE]"}}},
        {"type": "object", "required": ["data"], "properties": {"data": _data(_ref(ERROR))}},
        {"type": "string", "description": "The whole stream, as read at once."},
    ],
}


def _ok(description: str, content: JsonSchema) -> JsonSchema:
    return {"description": description, "headers": {"X-Trace-Id": TRACE_HEADER}, "content": content}


def _json(name: str, example: Any) -> JsonSchema:
    return {"application/json": {"schema": _ref(name), "examples": {"example": {"value": example}}}}


def _errors(statuses: tuple[str, ...]) -> JsonSchema:
    return {status: {"$ref": f"#/components/responses/{_ERROR_RESPONSE}"} for status in statuses}


_ERROR_STATUSES = ("400", "401", "403", "404", "429", "4XX", "5XX")


def _security(scope: str) -> JsonSchema:
    scopes = [scope] if scope else []
    return {"security": [{"ApiKeyAuth": scopes}, {"BearerAuth": scopes}], "x-required-scopes": scopes}


def _scope_text(scope: str) -> str:
    if not scope:
        return "**Required scope:** none: any valid API key or bearer token."
    return f"**Required scope:** `{scope}`; without it the answer is 403 with code SCOPE_MISSING."


_CONTEXT = {
    "name": "X-Techno-Context",
    "in": "header",
    "required": False,
    "description": "The context the policy is evaluated in (e.g. a tenant or channel); the edge's configured "
    "default when absent or empty (TECHNO_EDGE_OPENAI_CONTEXT_ID).",
    # The contract's context id (the gate refuses any other), or empty for the default.
    "schema": {k: v for k, v in replace(CONTEXT_ID, min_length=0).json_schema().items() if k != "description"},
    "example": "support-chat",
}
_TIMEOUT = {"$ref": "#/components/parameters/RequestTimeout"}


def paths() -> dict[str, JsonSchema]:
    chat = {
        "operationId": "OpenAI_CreateChatCompletion",
        "tags": [TAG],
        "summary": "Create a chat completion, plain or streamed, on the governed chat action",
        "description": "OpenAI's `POST /v1/chat/completions`, run as the `chat` action (`POST /v1/process`): "
        "decided, limited and audited by the gate, its trace id in the completion's `id`.\n\n" + _scope_text("process"),
        "parameters": [_CONTEXT, _TIMEOUT, {"$ref": "#/components/parameters/IdempotencyKey"}],
        **_security("process"),
        "requestBody": {"required": True, "content": _json(CHAT_REQUEST, EXAMPLES["request"])},
        "responses": {
            "200": _ok(
                "The completion; with `stream: true`, its chunks as Server-Sent Events.",
                {
                    **_json(CHAT_COMPLETION, EXAMPLES["completion"]),
                    "text/event-stream": {"schema": _EVENT_STREAM, "examples": {"stream": {"value": stream_example()}}},
                },
            ),
            **_errors(_ERROR_STATUSES),
        },
    }
    models = {
        "operationId": "OpenAI_ListModels",
        "tags": [TAG],
        "summary": "List the models (providers) the caller may chat on",
        "description": "OpenAI's `GET /v1/models`: the providers the caller's profile allows for the chat action, "
        "in the policy's order.\n\n" + _scope_text(""),
        "parameters": [_TIMEOUT],
        **_security(""),
        "responses": {"200": _ok("The models.", _json(MODEL_LIST, EXAMPLES["models"])), **_errors(_ERROR_STATUSES)},
    }
    model = {
        "operationId": "OpenAI_RetrieveModel",
        "tags": [TAG],
        "summary": "Retrieve a model the caller may chat on",
        "description": "OpenAI's `GET /v1/models/{model}`: the model when the caller's profile allows it, else "
        "404 with code `model_not_found` (a provider the caller may not use is not told apart from none).\n\n"
        + _scope_text(""),
        "parameters": [
            {
                "name": "model",
                "in": "path",
                "required": True,
                "description": "The model's id, a provider name.",
                "schema": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"},
                "example": "fake",
            },
            _TIMEOUT,
        ],
        **_security(""),
        "responses": {"200": _ok("The model.", _json(MODEL, EXAMPLES["model"])), **_errors(_ERROR_STATUSES)},
    }
    return {"/v1/chat/completions": {"post": chat}, "/v1/models": {"get": models}, "/v1/models/{model}": {"get": model}}


def schemas() -> dict[str, JsonSchema]:
    return {
        CHAT_REQUEST: _CHAT_REQUEST,
        MESSAGE: _MESSAGE,
        CHAT_COMPLETION: _CHAT_COMPLETION,
        CHUNK: _CHUNK,
        USAGE: _USAGE,
        MODEL: _MODEL,
        MODEL_LIST: _MODEL_LIST,
        ERROR: _ERROR,
    }


def responses() -> dict[str, JsonSchema]:
    return {
        _ERROR_RESPONSE: {
            "description": "A refusal or failure, in OpenAI's error shape (see the tag's description).",
            "headers": {
                "X-Trace-Id": TRACE_HEADER,
                "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}},
            },
            "content": _json(ERROR, EXAMPLES["error"]),
        }
    }
