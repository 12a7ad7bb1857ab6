"""The gRPC face of the gate's admin service: key management, dry runs, and operator commands for the executor."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import grpc
from google.protobuf import struct_pb2

from techno.executor.v1 import executor_pb2, executor_pb2_grpc
from techno.gate.v1 import admin_pb2, admin_pb2_grpc, gate_pb2
from techno_core.grpc_errors import from_rpc_error
from techno_core.identity import PRINCIPAL_METADATA
from techno_core.timestamps import requested_time, to_timestamp
from techno_core.tracing import current_trace_id
from techno_gate.application.admin import KeyAdmin
from techno_gate.application.admin_audit import AdminAudit, AdminOperation
from techno_gate.application.audit_query import AuditEventView, AuditQuery, AuditTrail
from techno_gate.application.limits import RouteFamily, RouteLimits
from techno_gate.application.process import Gatekeeper
from techno_gate.application.scopes import Caller
from techno_gate.domain.keys import ApiKeyRecord
from techno_gate.domain.reasons import Reason
from techno_gate.entrypoints.grpc import PROCESS, Context, presented_credentials, process_command

T = TypeVar("T")
_ADMIN_TIMEOUT_SECONDS = 5.0
SERVICE = admin_pb2.DESCRIPTOR.services_by_name["GateAdminService"].full_name


def key_info(record: ApiKeyRecord) -> admin_pb2.ApiKeyInfo:
    return admin_pb2.ApiKeyInfo(
        key_id=record.key_id,
        prefix=record.prefix,
        name=record.name,
        profile=record.profile,
        scopes=sorted(record.scopes),
        created_at=to_timestamp(record.created_at),
        expires_at=to_timestamp(record.expires_at),
        revoked_at=to_timestamp(record.revoked_at),
    )


def audit_event_message(event: AuditEventView) -> admin_pb2.AuditEvent:
    attributes = struct_pb2.Struct()
    attributes.update(event.attributes)
    return admin_pb2.AuditEvent(
        event_id=event.event_id,
        trace_id=event.trace_id,
        kind=event.kind,
        occurred_at=to_timestamp(event.occurred_at),
        recorded_at=to_timestamp(event.recorded_at),
        service=event.service,
        principal_id=event.principal_id,
        action=event.action,
        context_id=event.context_id,
        result=event.result,
        reason_codes=event.reason_codes,
        attributes=attributes,
    )


def audit_query(request: admin_pb2.ListAuditEventsRequest) -> AuditQuery:
    return AuditQuery(
        trace_id=request.trace_id,
        principal_id=request.principal_id,
        start_time=requested_time(request, "start_time", reason=Reason.INVALID_ARGUMENT),
        end_time=requested_time(request, "end_time", reason=Reason.INVALID_ARGUMENT),
        page_size=request.page_size,
        page_token=request.page_token,
    )


def _on_behalf_of(caller: Caller) -> tuple[tuple[str, str], ...]:
    return ((PRINCIPAL_METADATA, caller.id),)


def _known_command(command: int) -> bool:
    return command in executor_pb2.BreakerCommand.values()


def _reason_code(reason: str) -> str:
    name = f"REASON_CODE_{reason}"
    return name if name in gate_pb2.ReasonCode.DESCRIPTOR.values_by_name else "REASON_CODE_UNSPECIFIED"


class GateAdminServicer(admin_pb2_grpc.GateAdminServiceServicer):
    """Every method takes its caller from ``_caller`` and its scope from METHOD_SCOPES: a read checks it at once
    (``authorized``), a change in ``AdminAudit.run``, which records a refusal."""

    def __init__(
        self,
        gatekeeper: Gatekeeper,
        keys: KeyAdmin,
        audit: AuditTrail,
        executor_admin: executor_pb2_grpc.ExecutorAdminServiceStub,
        admin_audit: AdminAudit,
        limits: RouteLimits,
    ) -> None:
        self._admin_audit = admin_audit
        self._limits = limits
        self._gatekeeper = gatekeeper
        self._keys = keys
        self._audit = audit
        self._executor_admin = executor_admin

    @contextlib.asynccontextmanager
    async def _caller(self, context: Context, method: str) -> AsyncIterator[Caller]:
        """The authenticated caller of ``method``, admitted by its limits (the admin family's budget) for the
        whole call; its scope is checked by whoever takes its principal (``Caller.authorized``)."""
        principal = self._gatekeeper.authenticate(presented_credentials(context))
        async with self._limits.admitted(principal, RouteFamily.ADMIN):
            yield Caller(principal, f"{SERVICE}.{method}")

    async def _forward(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except grpc.aio.AioRpcError as error:  # the executor's own reasons (NOT_FOUND …) reach the operator
            raise from_rpc_error(error, default_reason=Reason.EXECUTOR_UNAVAILABLE) from error

    # Operator commands for the executor: the gate checks the method's scope, records the command (before it runs,
    # and its result) and names the caller to the executor, which logs it with the change.

    async def SetProviderFaults(
        self, request: admin_pb2.SetProviderFaultsRequest, context: Context
    ) -> admin_pb2.SetProviderFaultsResponse:
        async with self._caller(context, "SetProviderFaults") as caller:
            return await self._set_faults(caller, request)

    async def _set_faults(
        self, caller: Caller, request: admin_pb2.SetProviderFaultsRequest
    ) -> admin_pb2.SetProviderFaultsResponse:
        faults = {field.name: getattr(request.faults, field.name) for field in request.faults.DESCRIPTOR.fields}
        operation = AdminOperation("faults.set", request.provider, {"provider": request.provider, **faults})
        forwarded = executor_pb2.SetFaultsRequest(provider=request.provider, faults=request.faults)

        async def set_faults() -> executor_pb2.SetFaultsResponse:
            call = self._executor_admin.SetFaults(
                forwarded, timeout=_ADMIN_TIMEOUT_SECONDS, metadata=_on_behalf_of(caller)
            )
            return await self._forward(call)

        reply = await self._admin_audit.run(caller, operation, set_faults)
        return admin_pb2.SetProviderFaultsResponse(provider=reply.provider, faults=reply.faults)

    async def ListCircuitBreakers(
        self, request: admin_pb2.ListCircuitBreakersRequest, context: Context
    ) -> admin_pb2.ListCircuitBreakersResponse:
        async with self._caller(context, "ListCircuitBreakers") as caller:
            caller.authorized()
            reply = await self._forward(
                self._executor_admin.ListBreakers(executor_pb2.ListBreakersRequest(), timeout=_ADMIN_TIMEOUT_SECONDS)
            )
        return admin_pb2.ListCircuitBreakersResponse(breakers=reply.breakers)

    async def SetCircuitBreaker(
        self, request: admin_pb2.SetCircuitBreakerRequest, context: Context
    ) -> admin_pb2.SetCircuitBreakerResponse:
        async with self._caller(context, "SetCircuitBreaker") as caller:
            return await self._set_breaker(caller, request)

    async def _set_breaker(
        self, caller: Caller, request: admin_pb2.SetCircuitBreakerRequest
    ) -> admin_pb2.SetCircuitBreakerResponse:
        command = executor_pb2.BreakerCommand.Name(request.command) if _known_command(request.command) else ""
        attributes = {"provider": request.provider, "command": command or str(request.command)}
        operation = AdminOperation("breaker.set", request.provider, attributes)
        forwarded = executor_pb2.SetBreakerRequest(provider=request.provider, command=request.command)

        async def set_breaker() -> executor_pb2.SetBreakerResponse:
            call = self._executor_admin.SetBreaker(
                forwarded, timeout=_ADMIN_TIMEOUT_SECONDS, metadata=_on_behalf_of(caller)
            )
            return await self._forward(call)

        reply = await self._admin_audit.run(caller, operation, set_breaker)
        return admin_pb2.SetCircuitBreakerResponse(breaker=reply.breaker)

    async def CreateApiKey(
        self, request: admin_pb2.CreateApiKeyRequest, context: Context
    ) -> admin_pb2.CreateApiKeyResponse:
        async with self._caller(context, "CreateApiKey") as caller:
            issued = await self._keys.create(
                caller,
                name=request.name,
                profile=request.profile or "default",
                scopes=tuple(request.scopes),  # empty is refused: never a silent default
                expires_at=requested_time(request, "expires_at", reason=Reason.INVALID_ARGUMENT),
            )
        return admin_pb2.CreateApiKeyResponse(api_key=key_info(issued.record), secret=issued.secret)

    async def ListApiKeys(
        self, request: admin_pb2.ListApiKeysRequest, context: Context
    ) -> admin_pb2.ListApiKeysResponse:
        async with self._caller(context, "ListApiKeys") as caller:
            caller.authorized()
            return admin_pb2.ListApiKeysResponse(api_keys=[key_info(k) for k in await self._keys.list()])

    async def RevokeApiKey(
        self, request: admin_pb2.RevokeApiKeyRequest, context: Context
    ) -> admin_pb2.RevokeApiKeyResponse:
        async with self._caller(context, "RevokeApiKey") as caller:
            revoked = await self._keys.revoke(caller, request.key_id, force=request.force)
        return admin_pb2.RevokeApiKeyResponse(api_key=key_info(revoked))

    async def RotateApiKey(
        self, request: admin_pb2.RotateApiKeyRequest, context: Context
    ) -> admin_pb2.RotateApiKeyResponse:
        async with self._caller(context, "RotateApiKey") as caller:
            issued, revoked = await self._keys.rotate(caller, request.key_id)
        return admin_pb2.RotateApiKeyResponse(
            api_key=key_info(issued.record), secret=issued.secret, revoked=key_info(revoked)
        )

    async def DryRun(self, request: admin_pb2.DryRunRequest, context: Context) -> admin_pb2.DryRunResponse:
        async with self._caller(context, "DryRun") as caller:  # the admin family's budget, never processing's
            caller.authorized()  # the request it explains is checked for Process's scope, and answered DENY
            evaluation = await self._gatekeeper.dry_run(process_command(request.request, context, PROCESS))
        error = evaluation.error
        return admin_pb2.DryRunResponse(
            decision="ALLOW" if evaluation.allowed else "DENY",
            reason_code=_reason_code(str(evaluation.reason)),
            rule=evaluation.rule,
            policy_version=evaluation.policy_version,
            profile=evaluation.profile,
            principal_id=evaluation.principal.id if evaluation.principal else "",
            field_violations=[
                admin_pb2.FieldViolation(field=v.field, description=v.description)
                for v in (error.violations if error else [])
            ],
            remaining_requests=evaluation.remaining or 0,
            trace_id=current_trace_id(),
        )

    async def ListAuditEvents(
        self, request: admin_pb2.ListAuditEventsRequest, context: Context
    ) -> admin_pb2.ListAuditEventsResponse:
        async with self._caller(context, "ListAuditEvents") as caller:
            query = audit_query(request)  # an invalid query is answered 400 whoever asks
            caller.authorized()
            page = await self._audit.list(query)
        return admin_pb2.ListAuditEventsResponse(
            events=[audit_event_message(event) for event in page.events], next_page_token=page.next_page_token
        )
