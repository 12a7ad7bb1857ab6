"""The gate's client of the executor service."""

from __future__ import annotations

import grpc

from techno.executor.v1 import executor_pb2, executor_pb2_grpc
from techno_core import errors
from techno_core.grpc_errors import from_rpc_error
from techno_gate.application.ports import ExecuteCommand, Execution
from techno_gate.domain.reasons import Reason


class GrpcExecutor:
    def __init__(self, stub: executor_pb2_grpc.ExecutorServiceStub) -> None:
        self._stub = stub

    async def execute(self, command: ExecuteCommand, *, timeout: float) -> Execution:
        if timeout <= 0:
            raise errors.DeadlineExceeded(reason=Reason.DEADLINE_EXCEEDED, message="the request's deadline has passed")
        request = executor_pb2.ExecuteRequest(
            action=command.action,
            context_id=command.context_id,
            session_id=command.session_id,
            profile=command.profile,
            payload=command.payload,
            providers=command.providers,
            principal_id=command.principal_id,
        )
        try:
            response = await self._stub.Execute(request, timeout=timeout)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise errors.DeadlineExceeded(
                    reason=Reason.DEADLINE_EXCEEDED, message="the executor did not answer within the deadline"
                ) from error
            raise from_rpc_error(error, default_reason=Reason.EXECUTOR_UNAVAILABLE) from error
        return Execution(
            result=response.result,
            executor_id=response.executor_id,
            provider=response.provider,
            model=response.model,
            input_tokens=response.usage.input_tokens,
            output_tokens=response.usage.output_tokens,
            execution_time_ms=response.execution_time_ms,
            attempts=response.attempts,
        )
