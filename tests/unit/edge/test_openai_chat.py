"""The OpenAI chat-completions shapes mapped onto the chat action (techno_edge.domain.openai_chat)."""

from __future__ import annotations

from typing import Any

import pytest

from techno_edge.domain.errors import HttpError, Violation
from techno_edge.domain.openai_chat import (
    ChunkWriter,
    Completion,
    Usage,
    completion_body,
    error_body,
    models_body,
    parse_chat_request,
)

USER = {"role": "user", "content": "Hello"}


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "fake", "messages": [USER], **fields}


def refused_param(body: Any) -> str:
    with pytest.raises(HttpError) as caught:
        parse_chat_request(body)
    assert caught.value.status == 400
    assert caught.value.reasons == ("INVALID_ARGUMENT",)
    return caught.value.violations[0].field


def test_a_lone_user_message_is_the_message_as_it_is() -> None:
    request = parse_chat_request(chat())
    assert (request.model, request.message, request.stream, request.include_usage) == ("fake", "Hello", False, False)


def test_a_conversation_is_rendered_with_roles_and_the_instructions_first() -> None:
    messages = [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hello Ada."},
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What is "}, {"type": "text", "text": "my name?"}]},
    ]
    assert parse_chat_request(chat(messages=messages)).message == (
        "system: Be brief.\n\nuser: My name is Ada.\n\nassistant: Hello Ada.\n\nuser: What is my name?"
    )


def test_a_lone_system_message_keeps_its_role() -> None:
    assert parse_chat_request(chat(messages=[{"role": "system", "content": "Hi"}])).message == "system: Hi"


def test_knobs_the_action_lacks_are_accepted_and_ignored_but_type_checked() -> None:
    ignored = {"temperature": 0.2, "top_p": 1, "max_tokens": 50, "user": "u-1", "n": 1, "seed": 7, "store": False}
    assert parse_chat_request(chat(**ignored)).message == "Hello"
    assert parse_chat_request(chat(tools=None, stop=None, logprobs=False)).message == "Hello"  # null = absent
    assert refused_param(chat(temperature="hot")) == "temperature"
    assert refused_param(chat(max_tokens=True)) == "max_tokens"
    assert refused_param(chat(n=2)) == "n"


@pytest.mark.parametrize(
    "field",
    [
        {"tools": [{"type": "function", "function": {"name": "f"}}]},
        {"tool_choice": "auto"},
        {"logprobs": True},
        {"stop": ["\n"]},
        {"response_format": {"type": "json_schema", "json_schema": {}}},
        {"modalities": ["text", "audio"]},
        {"logit_bias": {"50256": -100}},
    ],
)
def test_what_would_change_the_answer_is_refused_naming_the_field(field: dict[str, Any]) -> None:
    assert refused_param(chat(**field)) == next(iter(field))


def test_fields_openai_does_not_define_are_refused() -> None:
    with pytest.raises(HttpError) as caught:
        parse_chat_request(chat(temprature=0.5))
    assert caught.value.message == "Unrecognized request argument supplied: temprature"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ([], "body"),
        ({"messages": [USER]}, "model"),
        ({"model": "", "messages": [USER]}, "model"),
        (chat(messages=[]), "messages"),
        (chat(messages="Hello"), "messages"),
        (chat(messages=["Hello"]), "messages[0]"),
        (chat(messages=[{"role": "robot", "content": "x"}]), "messages[0].role"),
        (chat(messages=[{"role": {}, "content": "x"}]), "messages[0].role"),  # unhashable: was a 500 (fuzzing)
        (chat(messages=[{"role": ["user"], "content": "x"}]), "messages[0].role"),
        (chat(messages=[{"role": "tool", "content": "x", "tool_call_id": "1"}]), "messages[0].role"),
        (chat(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
        (chat(messages=[{"role": "user", "content": None}]), "messages[0].content"),
        (
            chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
            "messages[0].content[0]",
        ),
        (chat(messages=[{"role": "user", "content": "x", "colour": 1}]), "messages[0].colour"),
        (chat(messages=[{"role": "assistant", "content": "", "tool_calls": [{"id": "1"}]}]), "messages[0].tool_calls"),
        (chat(stream="yes"), "stream"),
        (chat(stream_options={"include_usage": True}), "stream_options"),
        (chat(stream=True, stream_options={"include_usage": "yes"}), "stream_options.include_usage"),
        (chat(stream=True, stream_options={"other": True}), "stream_options"),
    ],
)
def test_malformed_requests_are_400s_naming_the_parameter(body: Any, param: str) -> None:
    assert refused_param(body) == param


def test_an_assistant_message_echoed_by_the_sdk_is_accepted() -> None:
    echoed: dict[str, Any] = {"role": "assistant", "content": "Hi", "refusal": None, "tool_calls": [], "name": "bot"}
    assert parse_chat_request(chat(messages=[USER, echoed])).message == "user: Hello\n\nassistant: Hi"


def test_stream_with_usage() -> None:
    request = parse_chat_request(chat(stream=True, stream_options={"include_usage": True}))
    assert (request.stream, request.include_usage) == (True, True)


COMPLETION = Completion("abc123", "Hi there", "fake", Usage(3, 2, 5))


def test_the_completion_body_is_openais() -> None:
    body = completion_body(COMPLETION, created=1700000000, model="fake")
    assert body["id"] == "chatcmpl-abc123"
    assert body["object"] == "chat.completion"
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi there", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def test_chunks_carry_the_role_then_text_then_the_finish_and_usage_last() -> None:
    writer = ChunkWriter("abc123", 1700000000, "fake", include_usage=True)
    chunks = [writer.role(), writer.text("Hi"), writer.finish(), writer.usage(COMPLETION.usage)]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert {c["id"] for c in chunks} == {"chatcmpl-abc123"}
    assert [c["choices"][0]["delta"] for c in chunks[:3]] == [
        {"role": "assistant", "content": ""},
        {"content": "Hi"},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:3]] == [None, None, "stop"]
    assert [c["usage"] for c in chunks[:3]] == [None, None, None]
    assert chunks[3]["choices"] == []
    assert chunks[3]["usage"]["total_tokens"] == 5


def test_without_include_usage_chunks_have_no_usage_key() -> None:
    assert "usage" not in ChunkWriter("t", 0, "fake", include_usage=False).text("x")


def test_models_are_the_providers_once_each_in_order() -> None:
    assert models_body(["fake", "openai", "fake"]) == {
        "object": "list",
        "data": [
            {"id": "fake", "object": "model", "created": 0, "owned_by": "techno"},
            {"id": "openai", "object": "model", "created": 0, "owned_by": "techno"},
        ],
    }


@pytest.mark.parametrize(
    ("error", "kind", "code"),
    [
        (HttpError(401, "UNAUTHENTICATED", "bad key", ("API_KEY_INVALID",)), "authentication_error", "invalid_api_key"),
        (
            HttpError(403, "PERMISSION_DENIED", "no", ("PROVIDER_NOT_ALLOWED",)),
            "permission_error",
            "PROVIDER_NOT_ALLOWED",
        ),
        (HttpError(429, "RESOURCE_EXHAUSTED", "slow", ("RATE_LIMITED",)), "rate_limit_error", "rate_limit_exceeded"),
        (HttpError(400, "INVALID_ARGUMENT", "bad", ("PAYLOAD_INVALID",)), "invalid_request_error", "PAYLOAD_INVALID"),
        (HttpError(503, "UNAVAILABLE", "down", ("CIRCUIT_OPEN",)), "api_error", "CIRCUIT_OPEN"),
        (HttpError(404, "NOT_FOUND", "no such model", ("MODEL_NOT_FOUND",)), "not_found_error", "model_not_found"),
        (HttpError(500, "INTERNAL", "oops"), "api_error", "INTERNAL"),
    ],
)
def test_errors_take_openais_shape_and_keep_the_reason_codes(error: HttpError, kind: str, code: str) -> None:
    body = error_body(error, "trace-1")["error"]
    assert (body["type"], body["code"], body["message"]) == (kind, code, error.message)
    assert body["reason_codes"] == list(error.reasons)
    assert body["trace_id"] == "trace-1"
    assert body["param"] is None


def test_an_error_names_its_first_field_violation_as_param() -> None:
    error = HttpError(400, "INVALID_ARGUMENT", "too long", ("PAYLOAD_INVALID",), (Violation("payload.message", "x"),))
    assert error_body(error, "")["error"]["param"] == "payload.message"
