"""The thin gRPC face of the executor: proto in → use case → proto out."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2

from techno.executor.v1 import executor_pb2, executor_pb2_grpc
from techno_executor.application.execute import ExecuteAction, ExecuteCommand

Context = grpc.aio.ServicerContext[Any, Any]


class ExecutorServicer(executor_pb2_grpc.ExecutorServiceServicer):
    def __init__(self, use_case: ExecuteAction, *, executor_id: str) -> None:
        self._use_case = use_case
        self._executor_id = executor_id

    async def Execute(self, request: executor_pb2.ExecuteRequest, context: Context) -> executor_pb2.ExecuteResponse:
        command = ExecuteCommand(
            action=request.action,
            payload=json_format.MessageToDict(request.payload),
            context_id=request.context_id,
            session_id=request.session_id,
            profile=request.profile,
            providers=tuple(request.providers),
            principal_id=request.principal_id,
        )
        # gRPC Python does not hand the caller's deadline to our code by itself: take what is left of it.
        execution = await self._use_case.execute(command, timeout=context.time_remaining())
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
