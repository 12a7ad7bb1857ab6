"""The gate's client of the executor service."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import grpc

from techno.executor.v1 import executor_pb2, executor_pb2_grpc
from techno_core import errors
from techno_core.grpc_errors import from_rpc_error
from techno_gate.application.ports import Chunk, ExecuteCommand, Execution, ProviderInfo
from techno_gate.domain.reasons import Reason

# ListProviders is a small local read on the executor: a short ceiling, so a hung executor fails it fast.
PROVIDERS_TIMEOUT_SECONDS = 2.0


class GrpcExecutor:
    def __init__(self, stub: executor_pb2_grpc.ExecutorServiceStub) -> None:
        self._stub = stub

    async def execute(self, command: ExecuteCommand, *, timeout: float) -> Execution:
        _check_deadline(timeout)
        try:
            response = await self._stub.Execute(_request(command), timeout=timeout)
        except grpc.aio.AioRpcError as error:
            raise _failure(error) from error
        return _execution(response)

    async def stream(self, command: ExecuteCommand, *, timeout: float) -> AsyncGenerator[Chunk | Execution, None]:
        _check_deadline(timeout)
        call = self._stub.StreamExecute(executor_pb2.StreamExecuteRequest(request=_request(command)), timeout=timeout)
        try:
            async for response in call:
                event = response.WhichOneof("event")
                if event == "chunk":
                    yield Chunk(response.chunk.text)
                elif event == "done":
                    yield _execution(response.done)
        except grpc.aio.AioRpcError as error:
            raise _failure(error) from error
        finally:
            # Left early (the client went away, or a failure above us): stop the executor's call, and with it the
            # provider's. A no-op once the call has ended.
            call.cancel()

    async def providers(self) -> tuple[ProviderInfo, ...]:
        try:
            response = await self._stub.ListProviders(
                executor_pb2.ListProvidersRequest(), timeout=PROVIDERS_TIMEOUT_SECONDS
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error, default_reason=Reason.EXECUTOR_UNAVAILABLE) from error
        return tuple(ProviderInfo(p.name, p.model) for p in response.providers)


def _check_deadline(timeout: float) -> None:
    if timeout <= 0:
        raise errors.DeadlineExceeded(reason=Reason.DEADLINE_EXCEEDED, message="the request's deadline has passed")


def _request(command: ExecuteCommand) -> executor_pb2.ExecuteRequest:
    return executor_pb2.ExecuteRequest(
        action=command.action,
        context_id=command.context_id,
        session_id=command.session_id,
        profile=command.profile,
        payload=command.payload,
        providers=command.providers,
        principal_id=command.principal_id,
    )


def _failure(error: grpc.aio.AioRpcError) -> errors.DomainError:
    if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return errors.DeadlineExceeded(
            reason=Reason.DEADLINE_EXCEEDED, message="the executor did not answer within the deadline"
        )
    return from_rpc_error(error, default_reason=Reason.EXECUTOR_UNAVAILABLE)


def _execution(response: executor_pb2.ExecuteResponse) -> Execution:
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
