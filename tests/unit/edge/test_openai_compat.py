"""The OpenAI routes' gate requests and answers in protobuf terms (techno_edge.adapters.openai_compat)."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from techno.gate.v1 import gate_pb2
from techno_edge.adapters.openai_compat import ChatStream, ChunkRenderer, completion_of, process_request
from techno_edge.adapters.upstream import UpstreamStream
from techno_edge.domain.errors import HttpError
from techno_edge.domain.openai_chat import ChatRequest, Completion, TextChunk, Usage


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


class ScriptedCall:
    """A server-streaming call that gives its messages, then the end; records ``cancel``."""

    def __init__(self, *messages: gate_pb2.StreamProcessResponse) -> None:
        self._messages = list(messages)
        self.cancelled = False

    async def read(self) -> Any:
        return self._messages.pop(0) if self._messages else grpc.aio.EOF  # type: ignore[attr-defined]

    def cancel(self) -> bool:
        self.cancelled = True
        return True


async def test_a_stream_reads_as_text_chunks_then_the_completion() -> None:
    done = gate_pb2.ProcessResponse(trace_id="t-1", provider="fake")
    done.result.update({"reply": "Hi there"})
    call = ScriptedCall(
        gate_pb2.StreamProcessResponse(trace_id="t-1", chunk=gate_pb2.TextChunk(text="Hi")),
        gate_pb2.StreamProcessResponse(trace_id="t-1"),  # no event set: skipped
        gate_pb2.StreamProcessResponse(trace_id="t-1", done=done),
    )
    stream = ChatStream(UpstreamStream(call))
    assert await stream.read() == TextChunk("t-1", "Hi")
    completion = await stream.read()
    assert isinstance(completion, Completion)
    assert (completion.trace_id, completion.reply) == ("t-1", "Hi there")
    assert await stream.read() is None
    stream.cancel()
    assert call.cancelled


def events(body: bytes) -> list[Any]:
    assert body.endswith(b"\n\n")
    return [e.removeprefix("data: ") for e in body.decode()[:-2].split("\n\n")]


def test_the_renderer_writes_openais_events_role_first_and_done_last() -> None:
    renderer = ChunkRenderer("request-trace", 1, "fake", include_usage=True)
    first = events(renderer.render(TextChunk("stream-trace", "Hel")))
    assert [json.loads(e)["choices"][0]["delta"] for e in first] == [
        {"role": "assistant", "content": ""},
        {"content": "Hel"},
    ]
    assert json.loads(first[0])["id"] == "chatcmpl-stream-trace"  # the gate's trace, once it names one
    assert renderer.render(TextChunk("stream-trace", "")) == b""
    with pytest.raises(HttpError):
        renderer.end()  # no done message yet: a stream that ended short
    last = events(renderer.render(Completion("stream-trace", "Hello", "fake", Usage(1, 2, 3))))
    assert last[-1] == "[DONE]"
    assert json.loads(last[-2])["usage"]["total_tokens"] == 3
    assert "Hello" not in "".join(last)  # streamed already: not repeated
    renderer.end()
    assert renderer.render(TextChunk("stream-trace", "late")) == b""


def test_an_error_event_carries_the_streams_trace_id_once_known() -> None:
    refused = HttpError(503, "UNAVAILABLE", "down", ("PROVIDER_UNAVAILABLE",))
    renderer = ChunkRenderer("request-trace", 1, "fake", include_usage=False)
    (before,) = events(renderer.error(refused, "request-trace"))
    assert json.loads(before)["error"]["trace_id"] == "request-trace"
    renderer.render(TextChunk("stream-trace", "x"))
    (after,) = events(renderer.error(refused, "request-trace"))
    assert json.loads(after)["error"] == {
        **json.loads(after)["error"],
        "trace_id": "stream-trace",
        "code": "PROVIDER_UNAVAILABLE",
    }
