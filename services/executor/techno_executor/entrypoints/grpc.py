"""The thin gRPC face of the executor: proto in → use case → proto out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import grpc
from google.protobuf import struct_pb2

from techno.executor.v1 import executor_pb2, executor_pb2_grpc
from techno_core.structs import struct_dict
from techno_executor.application.execute import ExecuteAction, ExecuteCommand, Execution
from techno_executor.application.stream import StreamAction

Context = grpc.aio.ServicerContext[Any, Any]


class ExecutorServicer(executor_pb2_grpc.ExecutorServiceServicer):
    def __init__(self, use_case: ExecuteAction, streams: StreamAction, *, executor_id: str) -> None:
        self._use_case = use_case
        self._streams = streams
        self._executor_id = executor_id

    async def Execute(self, request: executor_pb2.ExecuteRequest, context: Context) -> executor_pb2.ExecuteResponse:
        # gRPC Python does not hand the caller's deadline to our code by itself: take what is left of it.
        execution = await self._use_case.execute(_command(request), timeout=context.time_remaining())
        return self._response(execution)

    async def StreamExecute(
        self, request: executor_pb2.StreamExecuteRequest, context: Context
    ) -> AsyncIterator[executor_pb2.StreamExecuteResponse]:
        stream = self._streams.stream(_command(request.request), timeout=context.time_remaining())
        # aclosing: when the caller cancels, the use case's stream (and the provider's HTTP call) is closed now,
        # not whenever the garbage collector finalises the generator.
        async with aclosing(stream) as outputs:
            async for output in outputs:
                if isinstance(output, str):
                    yield executor_pb2.StreamExecuteResponse(chunk=executor_pb2.TextChunk(text=output))
                else:
                    yield executor_pb2.StreamExecuteResponse(done=self._response(output))

    async def ListProviders(
        self, request: executor_pb2.ListProvidersRequest, context: Context
    ) -> executor_pb2.ListProvidersResponse:
        return executor_pb2.ListProvidersResponse(
            providers=[
                executor_pb2.ProviderInfo(name=name, model=route.provider.model)
                for name, route in self._use_case.routes.items()
            ]
        )

    def _response(self, execution: Execution) -> executor_pb2.ExecuteResponse:
        result = struct_pb2.Struct()
        result.update(execution.result)
        return executor_pb2.ExecuteResponse(
            result=result,
            executor_id=self._executor_id,
            provider=execution.provider,
            model=execution.model,
            usage=executor_pb2.Usage(input_tokens=execution.input_tokens, output_tokens=execution.output_tokens),
            execution_time_ms=execution.execution_time_ms,
            attempts=execution.attempts,
        )


def _command(request: executor_pb2.ExecuteRequest) -> ExecuteCommand:
    return ExecuteCommand(
        action=request.action,
        payload=struct_dict(request.payload),
        context_id=request.context_id,
        session_id=request.session_id,
        profile=request.profile,
        providers=tuple(request.providers),
        principal_id=request.principal_id,
    )
