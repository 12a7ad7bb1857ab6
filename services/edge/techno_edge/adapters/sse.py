"""Server-Sent Events framing (the WHATWG HTML "event stream" format) of a server-streaming method's messages.

Each response message is one event whose ``data`` is the message in proto3 JSON, as a unary answer would be, and
whose ``event`` name is the field set in the message's oneof, when it has one (``StreamProcessResponse``:
``chunk``, then ``done``); a message type without a oneof gives unnamed events (``message`` to a browser's
``EventSource``). A failure after the first event is an ``error`` event carrying the AIP-193 error body. While
nothing is sent, a comment line keeps proxies and clients from taking the quiet connection for a dead one.
"""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from techno_edge.adapters import transcoding
from techno_edge.adapters.bindings import Binding
from techno_edge.domain.errors import HttpError

CONTENT_TYPE = b"text/event-stream"
KEEP_ALIVE = b": keep-alive\n\n"  # a comment: ignored by every client, but bytes on the wire
ERROR_EVENT = "error"


# Line breaks to Unicode but not to the event stream format, which ends lines at CR and LF only. JSON leaves them
# raw in strings; clients that split lines as Python's str.splitlines does (httpx's aiter_lines) would cut an event
# there. Escaped, JSON reads them back as the same characters.
_UNICODE_BREAKS = ((b"\xc2\x85", b"\\u0085"), (b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"))


def frame(data: bytes, event: str | None = None) -> bytes:
    """One event whose data is a JSON document. JSON from ``transcoding.dumps`` has no CR or LF (they are escaped
    in strings), but data that had one would become several ``data:`` lines, which a client joins back with LF."""
    head = b"event: " + event.encode() + b"\n" if event else b""
    if b"\xc2\x85" in data or b"\xe2\x80" in data:
        for raw, escaped in _UNICODE_BREAKS:
            data = data.replace(raw, escaped)
    if b"\n" in data or b"\r" in data:
        lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        return head + b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"
    return head + b"data: " + data + b"\n\n"


def _event_oneof(message: Descriptor) -> str | None:
    """The message's one real oneof, whose set field names events. protoc names the synthetic oneof of a proto3
    ``optional`` field after it with a leading underscore (and the Python descriptors offer no other test)."""
    real = [oneof.name for oneof in message.oneofs if not oneof.name.startswith("_")]
    return real[0] if len(real) == 1 else None


class EventRenderer:
    """Renders one binding's response messages as events; the oneof is looked up once, at construction."""

    def __init__(self, binding: Binding) -> None:
        self._binding = binding
        self._oneof = _event_oneof(binding.method.output_type)
        self._names = {f.name: f.json_name for f in binding.method.output_type.fields}

    def render(self, message: Message) -> bytes:
        event = None
        if self._oneof is not None:
            which = message.WhichOneof(self._oneof)
            event = self._names[which] if which else None
        return frame(transcoding.render_response(self._binding, message), event)

    def error(self, error: HttpError, trace_id: str) -> bytes:
        return frame(transcoding.dumps(error.body(trace_id)), ERROR_EVENT)

    def end(self) -> None:
        """Any number of messages is a whole stream."""
