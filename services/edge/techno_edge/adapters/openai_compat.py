"""The gate's chat, as the OpenAI-compatible routes need it: Process, StreamProcess and ListModels over the
edge's own gate channel, their answers as ``techno_edge.domain.openai_chat`` values and their failures as the
edge's ``HttpError`` (the same translation as every other route, ``upstream.http_error_of``); and a stream's
answer as OpenAI's Server-Sent Events (``ChunkRenderer``, for the edge's one event-stream loop)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import struct_pb2

from techno.gate.v1 import gate_pb2, gate_pb2_grpc
from techno_edge.adapters import sse, transcoding
from techno_edge.adapters.upstream import Upstreams, UpstreamStream, http_error_of
from techno_edge.domain import errors
from techno_edge.domain.errors import UPSTREAM_NOT_STARTED, HttpError
from techno_edge.domain.openai_chat import ChatRequest, ChunkWriter, Completion, TextChunk, Usage, error_body
from techno_edge.settings import GATE_SERVICE

CHAT = "chat"
_REPLY = "reply"  # the chat action's output key (config/actions.yaml: output: text: reply)
DONE_EVENT = b"data: [DONE]\n\n"


@dataclass(frozen=True)
class CallOptions:
    """What every call carries: the client's forwarded credentials and idempotency key, and its deadline."""

    metadata: tuple[tuple[str, str], ...]
    timeout: float


def process_request(chat: ChatRequest, context_id: str) -> gate_pb2.ProcessRequest:
    payload = struct_pb2.Struct()
    payload.update({"message": chat.message})
    return gate_pb2.ProcessRequest(action=CHAT, context_id=context_id, payload=payload, provider=chat.model)


def completion_of(response: gate_pb2.ProcessResponse, trace_id: str) -> Completion:
    reply = response.result.fields.get(_REPLY)
    usage = response.usage
    return Completion(
        trace_id=response.trace_id or trace_id,
        reply=reply.string_value if reply is not None else "",
        provider=response.provider,
        usage=Usage(usage.input_tokens, usage.output_tokens, usage.total_tokens),
    )


class GateChat:
    """The gate, reached through the channel the edge's other routes use (mutual TLS, tracing, one per target)."""

    def __init__(self, upstreams: Upstreams) -> None:
        self._upstreams = upstreams
        self._stub: tuple[grpc.aio.Channel, Any] | None = None  # the stub of the channel it was made for

    def _gate(self) -> Any:
        channel = self._upstreams.channel_for(GATE_SERVICE)
        if channel is None:
            raise HttpError(503, "UNAVAILABLE", "the edge is not started", (UPSTREAM_NOT_STARTED,))
        if self._stub is None or self._stub[0] is not channel:
            self._stub = (channel, gate_pb2_grpc.GateServiceStub(channel))
        return self._stub[1]

    async def complete(self, chat: ChatRequest, context_id: str, options: CallOptions) -> Completion:
        request = process_request(chat, context_id)
        try:
            response = await self._gate().Process(request, timeout=options.timeout, metadata=options.metadata)
        except grpc.aio.AioRpcError as error:
            raise http_error_of(error) from None
        return completion_of(response, "")

    def stream(self, chat: ChatRequest, context_id: str, options: CallOptions) -> ChatStream:
        """The call, started; nothing is awaited until its first ``read``."""
        request = gate_pb2.StreamProcessRequest(request=process_request(chat, context_id))
        return ChatStream(
            UpstreamStream(self._gate().StreamProcess(request, timeout=options.timeout, metadata=options.metadata))
        )

    async def models(self, options: CallOptions) -> list[str]:
        """The providers the caller's profile may chat on, in the policy's order of preference."""
        request = gate_pb2.ListModelsRequest(action=CHAT)
        try:
            response = await self._gate().ListModels(request, timeout=options.timeout, metadata=options.metadata)
        except grpc.aio.AioRpcError as error:
            raise http_error_of(error) from None
        return [model.provider for model in response.models]


class ChatStream:
    """A StreamProcess call read as the answer's text chunks, then its ``Completion``. ``cancel`` (or cancelling
    a pending ``read``) cancels the gRPC call: the gate then records the stream as cancelled."""

    def __init__(self, stream: UpstreamStream) -> None:
        self._stream = stream

    async def read(self) -> TextChunk | Completion | None:
        while (message := await self._stream.read()) is not None:
            event = message.WhichOneof("event")
            if event == "chunk":
                return TextChunk(message.trace_id, message.chunk.text)  # type: ignore[attr-defined]
            if event == "done":
                return completion_of(message.done, message.trace_id)  # type: ignore[attr-defined]
        return None

    def cancel(self) -> None:
        self._stream.cancel()


class ChunkRenderer:
    """One chat stream as OpenAI sends it: a ``data:`` event per ``chat.completion.chunk`` (the role first, then
    the text, the finish reason and, asked for, the usage), then ``data: [DONE]``; a failure is one event carrying
    OpenAI's error object, and no ``[DONE]``."""

    def __init__(self, trace_id: str, created: int, model: str, include_usage: bool) -> None:
        self._trace_id = trace_id  # the request's, until the gate's first message names the stream's
        self._created = created
        self._model = model
        self._include_usage = include_usage
        self._writer: ChunkWriter | None = None
        self._streamed = False
        self._done = False

    def render(self, message: TextChunk | Completion) -> bytes:
        if self._done:
            return b""
        events = []
        if self._writer is None:
            self._writer = ChunkWriter(
                message.trace_id or self._trace_id, self._created, self._model, self._include_usage
            )
            events.append(self._writer.role())
        if isinstance(message, TextChunk):
            if message.text:
                events.append(self._writer.text(message.text))
                self._streamed = True
            return _events(events)
        if not self._streamed and message.reply:  # a repeat of an Idempotency-Key: the stored answer, in one piece
            events.append(self._writer.text(message.reply))
        events.append(self._writer.finish())
        if self._include_usage:
            events.append(self._writer.usage(message.usage))
        self._done = True
        return _events(events) + DONE_EVENT

    def error(self, error: HttpError, trace_id: str) -> bytes:
        return _events([error_body(error, self._writer.trace_id if self._writer else trace_id)])

    def end(self) -> None:
        if not self._done:
            raise errors.internal()  # the gate ended the stream without its done message


def _events(values: list[dict[str, Any]]) -> bytes:
    return b"".join(sse.frame(transcoding.dumps(value)) for value in values)
