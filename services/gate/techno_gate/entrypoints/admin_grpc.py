"""The gRPC face of key management and dry runs."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from techno.gate.v1 import admin_pb2, admin_pb2_grpc, gate_pb2
from techno_core.tracing import current_trace_id
from techno_gate.application.admin import KeyAdmin
from techno_gate.application.process import Gatekeeper
from techno_gate.domain.keys import ApiKeyRecord
from techno_gate.entrypoints.grpc import Context, presented_credentials, process_command


def _timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def key_info(record: ApiKeyRecord) -> admin_pb2.ApiKeyInfo:
    return admin_pb2.ApiKeyInfo(
        key_id=record.key_id,
        prefix=record.prefix,
        name=record.name,
        profile=record.profile,
        scopes=sorted(record.scopes),
        created_at=_timestamp(record.created_at),
        expires_at=_timestamp(record.expires_at),
        revoked_at=_timestamp(record.revoked_at),
    )


def _reason_code(reason: str) -> str:
    name = f"REASON_CODE_{reason}"
    return name if name in gate_pb2.ReasonCode.DESCRIPTOR.values_by_name else "REASON_CODE_UNSPECIFIED"


class GateAdminServicer(admin_pb2_grpc.GateAdminServiceServicer):
    def __init__(self, gatekeeper: Gatekeeper, keys: KeyAdmin) -> None:
        self._gatekeeper = gatekeeper
        self._keys = keys

    async def CreateApiKey(
        self, request: admin_pb2.CreateApiKeyRequest, context: Context
    ) -> admin_pb2.CreateApiKeyResponse:
        caller = self._gatekeeper.authenticate(presented_credentials(context))
        issued = await self._keys.create(
            caller,
            name=request.name,
            profile=request.profile or "default",
            scopes=tuple(request.scopes) or ("process",),
            expires_at=request.expires_at.ToDatetime(tzinfo=UTC) if request.HasField("expires_at") else None,
        )
        return admin_pb2.CreateApiKeyResponse(api_key=key_info(issued.record), secret=issued.secret)

    async def ListApiKeys(
        self, request: admin_pb2.ListApiKeysRequest, context: Context
    ) -> admin_pb2.ListApiKeysResponse:
        caller = self._gatekeeper.authenticate(presented_credentials(context))
        return admin_pb2.ListApiKeysResponse(api_keys=[key_info(k) for k in await self._keys.list(caller)])

    async def RevokeApiKey(
        self, request: admin_pb2.RevokeApiKeyRequest, context: Context
    ) -> admin_pb2.RevokeApiKeyResponse:
        caller = self._gatekeeper.authenticate(presented_credentials(context))
        return admin_pb2.RevokeApiKeyResponse(api_key=key_info(await self._keys.revoke(caller, request.key_id)))

    async def RotateApiKey(
        self, request: admin_pb2.RotateApiKeyRequest, context: Context
    ) -> admin_pb2.RotateApiKeyResponse:
        caller = self._gatekeeper.authenticate(presented_credentials(context))
        issued, revoked = await self._keys.rotate(caller, request.key_id)
        return admin_pb2.RotateApiKeyResponse(
            api_key=key_info(issued.record), secret=issued.secret, revoked=key_info(revoked)
        )

    async def DryRun(self, request: admin_pb2.DryRunRequest, context: Context) -> admin_pb2.DryRunResponse:
        evaluation = await self._gatekeeper.dry_run(process_command(request.request, context))
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
