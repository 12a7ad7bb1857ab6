"""The gate's chat, as the OpenAI-compatible routes need it: Process, StreamProcess and ListModels over the
edge's own gate channel, their answers as ``techno_edge.domain.openai_chat`` values and their failures as the
edge's ``HttpError`` (the same translation as every other route, ``upstream.http_error_of``)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import struct_pb2

from techno.gate.v1 import gate_pb2, gate_pb2_grpc
from techno_edge.adapters.upstream import Upstreams, http_error_of
from techno_edge.domain.errors import UPSTREAM_NOT_STARTED, HttpError
from techno_edge.domain.openai_chat import ChatRequest, Completion, TextChunk, Usage
from techno_edge.settings import GATE_SERVICE

CHAT = "chat"
_REPLY = "reply"  # the chat action's output key (config/actions.yaml: output: text: reply)


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

    async def stream(
        self, chat: ChatRequest, context_id: str, options: CallOptions
    ) -> AsyncGenerator[TextChunk | Completion, None]:
        """The answer's text chunks, then its ``Completion``. Closing the iterator, or cancelling the task that
        reads it, cancels the gRPC call: the gate then records the stream as cancelled."""
        request = gate_pb2.StreamProcessRequest(request=process_request(chat, context_id))
        call = self._gate().StreamProcess(request, timeout=options.timeout, metadata=options.metadata)
        try:
            async for message in call:
                event = message.WhichOneof("event")
                if event == "chunk":
                    yield TextChunk(message.trace_id, message.chunk.text)
                elif event == "done":
                    yield completion_of(message.done, message.trace_id)
        except grpc.aio.AioRpcError as error:
            raise http_error_of(error) from None
        finally:
            call.cancel()  # a no-op once the call has ended

    async def models(self, options: CallOptions) -> list[str]:
        """The providers the caller's profile may chat on, in the policy's order of preference."""
        request = gate_pb2.ListModelsRequest(action=CHAT)
        try:
            response = await self._gate().ListModels(request, timeout=options.timeout, metadata=options.metadata)
        except grpc.aio.AioRpcError as error:
            raise http_error_of(error) from None
        return [model.provider for model in response.models]
