"""The thin gRPC face of the executor's operations API: fault injection and circuit-breaker control.

Internal: the gate's admin service (admin scope, which records each command in the audit trail) and the operator
identity are its only callers. Commands act on this replica only. Each change is logged with who asked:
the principal the gate names in ``techno-principal`` metadata (trusted from the gate's certificate only), or
``operator:<name>`` for the operator's certificate.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import grpc

from techno.executor.v1 import executor_pb2, executor_pb2_grpc
from techno_core.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from techno_core.identity import PRINCIPAL_METADATA, Identity, operator_principal_id, peer_identity
from techno_executor.adapters.audit import REQUESTED_BY
from techno_executor.domain.breaker import BreakerSnapshot, CircuitBreaker, CircuitState
from techno_executor.domain.faults import FaultProfile, FaultSwitch

Context = grpc.aio.ServicerContext[Any, Any]
log = logging.getLogger(__name__)

_STATES = {
    CircuitState.CLOSED: executor_pb2.BREAKER_STATE_CLOSED,
    CircuitState.OPEN: executor_pb2.BREAKER_STATE_OPEN,
    CircuitState.HALF_OPEN: executor_pb2.BREAKER_STATE_HALF_OPEN,
    CircuitState.FORCED_OPEN: executor_pb2.BREAKER_STATE_FORCED_OPEN,
    CircuitState.FORCED_CLOSED: executor_pb2.BREAKER_STATE_FORCED_CLOSED,
}


def requested_by(context: Context) -> str:
    """Who asked for a command: the operator's certificate, or the principal the gate names for its admin caller
    ("gate" if it names none). Without identities at all (plaintext) the metadata is all there is."""
    peer = peer_identity(context)
    if peer is Identity.OPERATOR:
        return operator_principal_id(context)
    named = next((str(value) for key, value in context.invocation_metadata() or () if key == PRINCIPAL_METADATA), "")
    if peer is Identity.GATE:
        return named or str(Identity.GATE)
    return named if peer is None else str(peer)


def breaker_info(snapshot: BreakerSnapshot) -> executor_pb2.BreakerInfo:
    return executor_pb2.BreakerInfo(
        provider=snapshot.name,
        state=_STATES[snapshot.state],
        retry_after_seconds=snapshot.retry_after,
        failure_rate=snapshot.failure_rate,
        slow_call_rate=snapshot.slow_call_rate,
        consecutive_failures=snapshot.consecutive_failures,
    )


def fault_profile(message: executor_pb2.FaultProfile) -> FaultProfile:
    return FaultProfile(
        latency_ms=message.latency_ms,
        latency_jitter_ms=message.latency_jitter_ms,
        error_rate=message.error_rate,
        rate_limit_rate=message.rate_limit_rate,
        retry_after_seconds=message.retry_after_seconds,
        timeout_rate=message.timeout_rate,
        hang_rate=message.hang_rate,
    )


def fault_message(profile: FaultProfile) -> executor_pb2.FaultProfile:
    return executor_pb2.FaultProfile(
        latency_ms=profile.latency_ms,
        latency_jitter_ms=profile.latency_jitter_ms,
        error_rate=profile.error_rate,
        rate_limit_rate=profile.rate_limit_rate,
        retry_after_seconds=profile.retry_after_seconds,
        timeout_rate=profile.timeout_rate,
        hang_rate=profile.hang_rate,
    )


class ExecutorAdminServicer(executor_pb2_grpc.ExecutorAdminServiceServicer):
    """``breakers``: every configured provider's breaker, in configuration order; ``faults``: the fault switches
    of the fake providers, by provider name (real vendors have none)."""

    def __init__(self, breakers: Mapping[str, CircuitBreaker], faults: Mapping[str, FaultSwitch]) -> None:
        self._breakers = breakers
        self._faults = faults

    async def ListBreakers(
        self, request: executor_pb2.ListBreakersRequest, context: Context
    ) -> executor_pb2.ListBreakersResponse:
        return executor_pb2.ListBreakersResponse(
            breakers=[breaker_info(breaker.snapshot()) for breaker in self._breakers.values()]
        )

    async def SetBreaker(
        self, request: executor_pb2.SetBreakerRequest, context: Context
    ) -> executor_pb2.SetBreakerResponse:
        breaker = self._breakers.get(request.provider)
        if breaker is None:
            raise NotFound(
                reason="PROVIDER_UNKNOWN",
                message=f"no provider {request.provider!r} on this executor",
                metadata={"provider": request.provider[:128]},
            )
        principal = requested_by(context)
        token = REQUESTED_BY.set(principal)  # the transition's audit event names who forced it
        try:
            self._command(breaker, request.command)
        finally:
            REQUESTED_BY.reset(token)
        log.warning(
            "breaker of %s set by %s: %s",
            breaker.name,
            principal or "an operator",
            executor_pb2.BreakerCommand.Name(request.command),
            extra={
                "event": "circuit_breaker_command",
                "provider": breaker.name,
                "state": breaker.state.value,
                "principal_id": principal,
            },
        )
        return executor_pb2.SetBreakerResponse(breaker=breaker_info(breaker.snapshot()))

    @staticmethod
    def _command(breaker: CircuitBreaker, command: int) -> None:
        if command == executor_pb2.BREAKER_COMMAND_FORCE_OPEN:
            breaker.force_open()
        elif command == executor_pb2.BREAKER_COMMAND_FORCE_CLOSED:
            breaker.force_closed()
        elif command == executor_pb2.BREAKER_COMMAND_RESET:
            breaker.reset()
        else:
            raise InvalidArgument(
                reason="BREAKER_COMMAND_INVALID",
                message="command must be FORCE_OPEN, FORCE_CLOSED or RESET",
                violations=[FieldViolation("command", "must be FORCE_OPEN, FORCE_CLOSED or RESET")],
            )

    async def SetFaults(
        self, request: executor_pb2.SetFaultsRequest, context: Context
    ) -> executor_pb2.SetFaultsResponse:
        switch = self._faults.get(request.provider)
        if switch is None:
            raise FailedPrecondition(
                reason="PROVIDER_NOT_FAKE",
                message=f"{request.provider!r} is not a fake provider of this executor: only fakes accept faults",
                metadata={"provider": request.provider[:128]},
            )
        profile = fault_profile(request.faults)
        if problems := profile.problems():
            raise InvalidArgument(
                reason="FAULT_PROFILE_INVALID",
                message="invalid fault profile",
                violations=[FieldViolation(f"faults.{name}", why) for name, why in problems],
            )
        switch.replace(profile)
        principal = requested_by(context)
        log.warning(
            "faults of %s replaced by %s",
            request.provider,
            principal or "an operator",
            extra={"event": "fault_profile_set", "provider": request.provider, "principal_id": principal},
        )
        return executor_pb2.SetFaultsResponse(provider=request.provider, faults=fault_message(switch.current))
