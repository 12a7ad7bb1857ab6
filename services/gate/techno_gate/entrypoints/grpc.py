"""The thin gRPC face of the gate: proto in → use case → proto out."""

from __future__ import annotations

from typing import Any

import grpc

from techno.gate.v1 import gate_pb2, gate_pb2_grpc
from techno_core.channels import downstream_timeout
from techno_core.tracing import current_trace_id
from techno_gate.application.authenticate import Credentials
from techno_gate.application.process import Gatekeeper, ProcessCommand

Context = grpc.aio.ServicerContext[Any, Any]
_BEARER = "bearer "


def presented_credentials(context: Context) -> Credentials:
    """``x-api-key``, and the value of ``authorization: Bearer …`` (an API key or a JWT)."""
    api_key = bearer = None
    for key, value in context.invocation_metadata() or ():
        if not isinstance(value, str):
            continue
        if key == "x-api-key":
            api_key = value.strip() or None
        elif key == "authorization" and value[: len(_BEARER)].lower() == _BEARER:
            bearer = value[len(_BEARER) :].strip() or None
    return Credentials(api_key=api_key, bearer=bearer)


def process_command(request: gate_pb2.ProcessRequest, context: Context) -> ProcessCommand:
    has_payload = request.HasField("payload")
    return ProcessCommand(
        trace_id=current_trace_id(),
        credentials=presented_credentials(context),
        action=request.action,
        context_id=request.context_id,
        session_id=request.session_id,
        payload=request.payload if has_payload else None,
        payload_bytes=request.payload.ByteSize() if has_payload else 0,
    )


class GateServicer(gate_pb2_grpc.GateServiceServicer):
    def __init__(self, gatekeeper: Gatekeeper, *, executor_timeout_seconds: float) -> None:
        self._gatekeeper = gatekeeper
        self._executor_timeout = executor_timeout_seconds

    async def Process(self, request: gate_pb2.ProcessRequest, context: Context) -> gate_pb2.ProcessResponse:
        command = process_command(request, context)
        execution = await self._gatekeeper.process(command, timeout=downstream_timeout(context, self._executor_timeout))
        return gate_pb2.ProcessResponse(
            trace_id=command.trace_id,
            status=gate_pb2.EXECUTION_STATUS_SUCCEEDED,
            result=execution.result,
            executor_id=execution.executor_id,
            provider=execution.provider,
            model=execution.model,
            usage=gate_pb2.TokenUsage(
                input_tokens=execution.input_tokens,
                output_tokens=execution.output_tokens,
                total_tokens=execution.input_tokens + execution.output_tokens,
            ),
            execution_time_ms=execution.execution_time_ms,
        )

    async def ListActions(self, request: gate_pb2.ListActionsRequest, context: Context) -> gate_pb2.ListActionsResponse:
        principal = self._gatekeeper.authenticate(presented_credentials(context))
        policy = self._gatekeeper.policies.current
        return gate_pb2.ListActionsResponse(
            actions=[gate_pb2.Action(name=n, description=d) for n, d in policy.actions_for(principal.profile)],
            policy_version=policy.version,
            trace_id=current_trace_id(),
        )
