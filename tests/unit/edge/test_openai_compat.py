"""The OpenAI routes' gate requests and answers in protobuf terms (techno_edge.adapters.openai_compat)."""

from __future__ import annotations

from google.protobuf import json_format

from techno.gate.v1 import gate_pb2
from techno_edge.adapters.openai_compat import completion_of, process_request
from techno_edge.domain.openai_chat import ChatRequest, Usage


def test_a_chat_is_the_chat_action_on_the_model_as_provider_without_a_session() -> None:
    request = process_request(ChatRequest("fake", "user: hi", stream=False, include_usage=False), "shop")
    assert json_format.MessageToDict(request) == {
        "action": "chat",
        "contextId": "shop",
        "payload": {"message": "user: hi"},
        "provider": "fake",
    }


def test_the_answer_is_the_reply_the_provider_and_the_usage() -> None:
    response = gate_pb2.ProcessResponse(
        trace_id="t-1", provider="fake", usage=gate_pb2.TokenUsage(input_tokens=3, output_tokens=4, total_tokens=7)
    )
    response.result.update({"reply": "Hello"})
    completion = completion_of(response, "other")
    assert (completion.trace_id, completion.reply, completion.provider) == ("t-1", "Hello", "fake")
    assert completion.usage == Usage(3, 4, 7)


def test_a_done_message_without_its_own_trace_id_takes_the_streams() -> None:
    assert completion_of(gate_pb2.ProcessResponse(), "stream-trace").trace_id == "stream-trace"
    assert completion_of(gate_pb2.ProcessResponse(), "stream-trace").reply == ""
