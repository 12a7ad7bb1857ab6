"""OpenAI's chat-completions request and response shapes, mapped onto the governed ``chat`` action.

The mapping (also in the README, "Quickest way in: the OpenAI SDK"):

- ``model`` is the provider to run on (``ProcessRequest.provider``); ``GET /v1/models`` lists the ones the
  caller's profile allows, and any other is refused by the gate (403, code ``PROVIDER_NOT_ALLOWED``).
- ``messages`` become the action's one ``message`` input. A lone user message is sent as it is; a conversation
  is rendered as text, its system and developer messages first, then the turns in order, each as
  ``<role>: <content>`` separated by blank lines. The request is stateless, as OpenAI's is: no session is used
  and nothing is remembered. The gate's own limits apply to the rendered text (``max_length``).
- Accepted and ignored, because the action has no such knobs: ``temperature``, ``top_p``, ``max_tokens``,
  ``max_completion_tokens``, ``presence_penalty``, ``frequency_penalty``, ``seed``, ``user``, ``store``,
  ``metadata``, ``service_tier``, ``reasoning_effort``, ``parallel_tool_calls``, ``n: 1`` and a message's
  ``name``. Their types are still checked.
- Refused with a 400 naming the field, never silently dropped: what would change the answer's meaning or shape
  (``tools``, ``tool_choice``, ``functions``, ``function_call``, ``n`` above 1, ``logprobs``, ``top_logprobs``,
  ``logit_bias``, ``stop``, ``response_format`` other than text, ``audio``, ``modalities`` other than text,
  ``prediction``, ``web_search_options``), tool and function messages, non-text content parts, and any field
  OpenAI does not define.

Errors keep OpenAI's shape (``{"error": {"message", "type", "param", "code"}}``) with the gate's reason codes
and the trace id beside them. Nothing here imports grpc: the adapter turns the gate's answers into ``Completion``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from techno_edge.domain.errors import HttpError, Violation, invalid_argument

ROLES_FIRST = ("system", "developer")
_ROLES = frozenset({*ROLES_FIRST, "user", "assistant"})
_MESSAGE_KEYS = frozenset({"role", "content", "name", "refusal", "tool_calls", "function_call", "audio"})
# Keys of an assistant message that are fine when empty (the SDK echoes them back as null).
_EMPTY_OK = ("refusal", "tool_calls", "function_call", "audio")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# Accepted and ignored: what each must be. A wrong type is still a 400, so a typo'd value is not mistaken for a
# value that was honoured.
_IGNORED: dict[str, tuple[Callable[[Any], bool], str]] = {
    "temperature": (_number, "a number"),
    "top_p": (_number, "a number"),
    "max_tokens": (_integer, "an integer"),
    "max_completion_tokens": (_integer, "an integer"),
    "presence_penalty": (_number, "a number"),
    "frequency_penalty": (_number, "a number"),
    "seed": (_integer, "an integer"),
    "user": (lambda v: isinstance(v, str), "a string"),
    "store": (lambda v: isinstance(v, bool), "a boolean"),
    "metadata": (lambda v: isinstance(v, dict), "an object"),
    "service_tier": (lambda v: isinstance(v, str), "a string"),
    "reasoning_effort": (lambda v: isinstance(v, str), "a string"),
    "parallel_tool_calls": (lambda v: isinstance(v, bool), "a boolean"),
    "n": (lambda v: v == 1 and _integer(v), "1: one choice is all the chat action answers"),
}
# Refused when present (and not null, nor the one value that means "off").
_UNSUPPORTED: dict[str, Callable[[Any], bool]] = {
    "tools": lambda v: v == [],
    "tool_choice": lambda v: v == "none",
    "functions": lambda v: v == [],
    "function_call": lambda v: v == "none",
    "logprobs": lambda v: v is False,
    "top_logprobs": lambda v: False,
    "logit_bias": lambda v: v == {},
    "stop": lambda v: False,
    "response_format": lambda v: v == {"type": "text"},
    "audio": lambda v: False,
    "modalities": lambda v: v == ["text"],
    "prediction": lambda v: False,
    "web_search_options": lambda v: False,
}
_KNOWN = frozenset({"model", "messages", "stream", "stream_options", *_IGNORED, *_UNSUPPORTED})


@dataclass(frozen=True)
class ChatRequest:
    model: str
    message: str  # the rendered conversation: the chat action's one input
    stream: bool
    include_usage: bool


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    def body(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True)
class Completion:
    """The gate's answer to one chat: the reply, the provider that ran it and what it cost."""

    trace_id: str
    reply: str
    provider: str
    usage: Usage


@dataclass(frozen=True)
class TextChunk:
    trace_id: str
    text: str


def _refused(param: str, message: str) -> HttpError:
    return invalid_argument(message, Violation(param, message))


def parse_chat_request(body: Any) -> ChatRequest:
    """The request, or a 400 ``HttpError`` whose field violation names the offending parameter."""
    if not isinstance(body, dict):
        raise _refused("body", "the request body must be a JSON object")
    for name, value in body.items():
        _check_field(name, value)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _refused("model", "model is required: a provider name from GET /v1/models")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _refused("stream", "stream must be a boolean")
    return ChatRequest(model, render_messages(body.get("messages")), bool(stream), _include_usage(body, bool(stream)))


def _check_field(name: str, value: Any) -> None:
    if name not in _KNOWN:
        raise _refused(name, f"Unrecognized request argument supplied: {name}")
    if value is None:
        return
    if name in _UNSUPPORTED and not _UNSUPPORTED[name](value):
        raise _refused(name, f"{name} is not supported: the chat action answers with plain text and one choice")
    if name in _IGNORED:
        accepts, kind = _IGNORED[name]
        if not accepts(value):
            raise _refused(name, f"{name} must be {kind}")


def _include_usage(body: Mapping[str, Any], stream: bool) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not stream:
        raise _refused("stream_options", "stream_options is only allowed when stream is true")
    if not isinstance(options, dict) or set(options) - {"include_usage"}:
        raise _refused("stream_options", "stream_options may only have include_usage")
    include = options.get("include_usage")
    if include is not None and not isinstance(include, bool):
        raise _refused("stream_options.include_usage", "stream_options.include_usage must be a boolean")
    return bool(include)


def render_messages(messages: Any) -> str:
    """The conversation as the chat action's one ``message``: a lone user message as it is, else every turn as
    ``<role>: <content>``, the system and developer instructions first."""
    if not isinstance(messages, list) or not messages:
        raise _refused("messages", "messages must be a non-empty array")
    turns = [_turn(index, message) for index, message in enumerate(messages)]
    if len(turns) == 1 and turns[0][0] == "user":
        return turns[0][1]
    ordered = [t for t in turns if t[0] in ROLES_FIRST] + [t for t in turns if t[0] not in ROLES_FIRST]
    return "\n\n".join(f"{role}: {content}" for role, content in ordered)


def _turn(index: int, message: Any) -> tuple[str, str]:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise _refused(where, f"{where} must be an object")
    role = message.get("role")
    if role in ("tool", "function"):
        raise _refused(f"{where}.role", f"{where}: {role} messages are not supported: the chat action has no tools")
    if not isinstance(role, str) or role not in _ROLES:  # an object or a list is not even hashable
        raise _refused(f"{where}.role", f"{where}.role must be one of: {', '.join(sorted(_ROLES))}")
    for key, value in message.items():
        if key not in _MESSAGE_KEYS:
            raise _refused(f"{where}.{key}", f"{where}: unrecognized field {key}")
        if key in _EMPTY_OK and value not in (None, [], ""):
            raise _refused(f"{where}.{key}", f"{where}.{key} is not supported: the chat action has no tools or audio")
    if "name" in message and not isinstance(message["name"], str):
        raise _refused(f"{where}.name", f"{where}.name must be a string")
    return role, _content(where, message.get("content"))


def _content(where: str, content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_text_part(f"{where}.content[{i}]", part) for i, part in enumerate(content))
    raise _refused(f"{where}.content", f"{where}.content must be a string or an array of text parts")


def _text_part(where: str, part: Any) -> str:
    if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
        raise _refused(where, f"{where}: only text parts ({{'type': 'text', 'text': ...}}) are supported")
    if set(part) - {"type", "text"}:
        raise _refused(where, f"{where}: a text part has only type and text")
    text: str = part["text"]
    return text


def completion_id(trace_id: str) -> str:
    return f"chatcmpl-{trace_id}"


def completion_body(completion: Completion, *, created: int, model: str) -> dict[str, Any]:
    return {
        "id": completion_id(completion.trace_id),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": completion.reply, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": completion.usage.body(),
    }


@dataclass(frozen=True)
class ChunkWriter:
    """The ``chat.completion.chunk`` objects of one stream, in OpenAI's order: the role, the text pieces, the
    finish reason, then (with ``include_usage``) the usage alone with no choices."""

    trace_id: str
    created: int
    model: str
    include_usage: bool

    def _chunk(self, choices: list[dict[str, Any]], usage: Usage | None = None) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": completion_id(self.trace_id),
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if self.include_usage:  # null on every chunk but the last, as OpenAI sends it
            chunk["usage"] = None if usage is None else usage.body()
        return chunk

    def _delta(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return self._chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}])

    def role(self) -> dict[str, Any]:
        return self._delta({"role": "assistant", "content": ""})

    def text(self, text: str) -> dict[str, Any]:
        return self._delta({"content": text})

    def finish(self) -> dict[str, Any]:
        return self._delta({}, "stop")

    def usage(self, usage: Usage) -> dict[str, Any]:
        return self._chunk([], usage)


MODEL_NOT_FOUND = "MODEL_NOT_FOUND"  # the edge's reason for a model the caller may not use (or that is none)


def model_body(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "techno"}


def models_body(providers: list[str]) -> dict[str, Any]:
    """``GET /v1/models``: one model per provider (its id is what ``model`` takes), in the policy's order."""
    return {"object": "list", "data": [model_body(name) for name in dict.fromkeys(providers)]}


def model_not_found(model: str) -> HttpError:
    """``GET /v1/models/{model}`` for a model the caller's profile does not allow: not told apart from one that
    does not exist, as OpenAI does not tell them apart either."""
    message = f"The model {model!r} does not exist or you do not have access to it"
    return HttpError(404, "NOT_FOUND", message, (MODEL_NOT_FOUND,))


# OpenAI's error types by HTTP status; the SDK picks its exception class from the status alone.
_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}
# OpenAI's own codes where clients test for them; otherwise the gate's reason code.
_CODES = {401: "invalid_api_key", 429: "rate_limit_exceeded"}
_CODES_BY_REASON = {MODEL_NOT_FOUND: "model_not_found"}


def error_body(error: HttpError, trace_id: str) -> dict[str, Any]:
    """OpenAI's error object for one of the edge's errors, with the reason codes and trace id kept beside it."""
    kind = _TYPES.get(error.status, "api_error" if error.status >= 500 else "invalid_request_error")
    reason = error.reasons[0] if error.reasons else error.grpc_code
    code = _CODES.get(error.status) or _CODES_BY_REASON.get(reason, reason)
    return {
        "error": {
            "message": error.message,
            "type": kind,
            "param": error.violations[0].field if error.violations else None,
            "code": code,
            "reason_codes": list(error.reasons),
            "trace_id": trace_id,
        }
    }
