"""Server-Sent Events framing: one event per response message, named by the field set in its oneof."""

from __future__ import annotations

import json

import pytest

from techno.gate.v1 import gate_pb2
from techno_edge.adapters.bindings import Binding, load_bindings
from techno_edge.adapters.sse import KEEP_ALIVE, EventRenderer, frame
from techno_edge.settings import GATE_SERVICE


@pytest.fixture(scope="module")
def renderer() -> EventRenderer:
    bindings: dict[str, Binding] = {b.method.name: b for b in load_bindings([GATE_SERVICE])}
    return EventRenderer(bindings["StreamProcess"])


def _parse(event: bytes) -> tuple[str | None, str]:
    """As a client does: ``event`` and ``data`` fields up to the blank line that ends the event."""
    assert event.endswith(b"\n\n")
    assert event.count(b"\n\n") == 1
    name, data = None, []
    for line in event.decode().splitlines():
        field, _, value = line.partition(": ")
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
    return name, "\n".join(data)


def test_a_chunk_is_a_chunk_event_with_the_message_as_proto3_json(renderer: EventRenderer) -> None:
    message = gate_pb2.StreamProcessResponse(trace_id="t1", chunk=gate_pb2.TextChunk(text="Hel"))
    name, data = _parse(renderer.render(message))
    assert name == "chunk"
    assert json.loads(data) == {"traceId": "t1", "chunk": {"text": "Hel"}}


def test_the_done_message_is_a_done_event(renderer: EventRenderer) -> None:
    done = gate_pb2.ProcessResponse(trace_id="t1", provider="fake", usage=gate_pb2.TokenUsage(total_tokens=3))
    name, data = _parse(renderer.render(gate_pb2.StreamProcessResponse(trace_id="t1", done=done)))
    assert name == "done"
    assert json.loads(data)["done"]["usage"]["totalTokens"] == 3


def test_line_breaks_in_text_stay_inside_one_data_line(renderer: EventRenderer) -> None:
    """Also the breaks Python's str.splitlines (and so httpx's aiter_lines) cuts lines at, though the event stream
    format does not: escaped, as JSON allows."""
    text = "one\ntwo\r\nthree\rfour \u2028 five \u2029 six \x85 seven \x0b\x0c\x1c\x1d\x1e é"
    message = gate_pb2.StreamProcessResponse(trace_id="t", chunk=gate_pb2.TextChunk(text=text))
    rendered = renderer.render(message)
    lines = rendered.decode()
    assert lines.splitlines() == lines.split("\n")[:-1]  # splitlines cuts nowhere but at the LFs
    assert json.loads(_parse(rendered)[1])["chunk"]["text"] == text


def test_a_message_without_a_set_oneof_field_is_an_unnamed_event(renderer: EventRenderer) -> None:
    assert _parse(renderer.render(gate_pb2.StreamProcessResponse(trace_id="t"))) == (None, '{"traceId":"t"}')


def test_data_with_line_breaks_is_split_into_data_lines_a_client_joins_back() -> None:
    assert frame(b"a\nb\r\nc", "x") == b"event: x\ndata: a\ndata: b\ndata: c\n\n"
    assert _parse(frame(b"a\nb\rc")) == (None, "a\nb\nc")


def test_keep_alive_is_a_comment() -> None:
    assert KEEP_ALIVE.startswith(b":")
    assert KEEP_ALIVE.endswith(b"\n\n")
