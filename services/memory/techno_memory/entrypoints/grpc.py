"""The thin gRPC face of the memory service: proto in → use case → proto out. Errors are raised as domain
errors; the shared server interceptor (``techno_core.interceptors``) turns them into statuses."""

from __future__ import annotations

from typing import Any

import grpc

from techno.memory.v1 import memory_pb2, memory_pb2_grpc
from techno_core.identity import Identity, operator_principal_id, peer_identity
from techno_core.tracing import current_trace_id
from techno_memory.application.audit_log import AuditLog
from techno_memory.application.idempotency import IdempotencyKeys
from techno_memory.application.keys import KeyDirectory
from techno_memory.application.operator_keys import OperatorKeys
from techno_memory.application.preferences import PreferenceBook, PrincipalData
from techno_memory.application.sessions import Sessions
from techno_memory.entrypoints.authorization import check_appendable
from techno_memory.entrypoints.convert import (
    audit_query_from_proto,
    event_to_proto,
    events_from_proto,
    key_to_proto,
    listing_to_proto,
    new_key_from_proto,
    page_to_proto,
    updated_since_from_proto,
)
from techno_memory.entrypoints.convert_idempotency import claim_to_proto, lease_from_proto
from techno_memory.entrypoints.convert_sessions import (
    erasure_to_proto,
    export_to_proto,
    messages_from_proto,
    preferences_from_proto,
    preferences_to_proto,
    session_to_proto,
)

Context = grpc.aio.ServicerContext[Any, Any]


def operator_principal(context: Context) -> str | None:
    """``operator:<certificate common name>`` when the operator identity calls, else None. The gate records the
    key changes made through it itself; a direct caller with the operator certificate is recorded here."""
    return operator_principal_id(context) if peer_identity(context) is Identity.OPERATOR else None


class MemoryServicer(memory_pb2_grpc.MemoryServiceServicer):
    def __init__(
        self,
        audit_log: AuditLog,
        keys: KeyDirectory,
        sessions: Sessions,
        preferences: PreferenceBook,
        principal_data: PrincipalData,
        idempotency: IdempotencyKeys,
    ) -> None:
        self._audit = audit_log
        self._keys = keys
        self._operator_keys = OperatorKeys(keys, audit_log)
        self._sessions = sessions
        self._preferences = preferences
        self._principal_data = principal_data
        self._idempotency = idempotency

    async def AppendAuditEvents(
        self, request: memory_pb2.AppendAuditEventsRequest, context: Context
    ) -> memory_pb2.AppendAuditEventsResponse:
        check_appendable(peer_identity(context), (event.kind for event in request.events))
        appended = await self._audit.append(events_from_proto(request.events))
        return memory_pb2.AppendAuditEventsResponse(appended=appended)

    async def GetAuditTrail(
        self, request: memory_pb2.GetAuditTrailRequest, context: Context
    ) -> memory_pb2.GetAuditTrailResponse:
        events = await self._audit.trail(request.trace_id)
        return memory_pb2.GetAuditTrailResponse(events=[event_to_proto(event) for event in events])

    async def ListAuditEvents(
        self, request: memory_pb2.ListAuditEventsRequest, context: Context
    ) -> memory_pb2.ListAuditEventsResponse:
        return page_to_proto(await self._audit.query(audit_query_from_proto(request)))

    async def CreateApiKey(
        self, request: memory_pb2.CreateApiKeyRequest, context: Context
    ) -> memory_pb2.CreateApiKeyResponse:
        key = new_key_from_proto(request)
        if (operator := operator_principal(context)) is not None:
            stored = await self._operator_keys.create(key, principal_id=operator, trace_id=current_trace_id())
        else:
            stored = await self._keys.create(key)
        return memory_pb2.CreateApiKeyResponse(api_key=key_to_proto(stored))

    async def ListApiKeys(
        self, request: memory_pb2.ListApiKeysRequest, context: Context
    ) -> memory_pb2.ListApiKeysResponse:
        listing = await self._keys.list(updated_since_from_proto(request))
        return listing_to_proto(listing)

    async def RevokeApiKey(
        self, request: memory_pb2.RevokeApiKeyRequest, context: Context
    ) -> memory_pb2.RevokeApiKeyResponse:
        if (operator := operator_principal(context)) is not None:
            key = await self._operator_keys.revoke(request.key_id, principal_id=operator, trace_id=current_trace_id())
        else:
            key = await self._keys.revoke(request.key_id)
        return memory_pb2.RevokeApiKeyResponse(api_key=key_to_proto(key))

    async def CreateSession(
        self, request: memory_pb2.CreateSessionRequest, context: Context
    ) -> memory_pb2.CreateSessionResponse:
        session = await self._sessions.create(request.principal_id)
        return memory_pb2.CreateSessionResponse(session=session_to_proto(session))

    async def GetSession(
        self, request: memory_pb2.GetSessionRequest, context: Context
    ) -> memory_pb2.GetSessionResponse:
        session = await self._sessions.get(request.session_id, request.principal_id)
        return memory_pb2.GetSessionResponse(session=session_to_proto(session))

    async def DeleteSession(
        self, request: memory_pb2.DeleteSessionRequest, context: Context
    ) -> memory_pb2.DeleteSessionResponse:
        await self._sessions.delete(request.session_id, request.principal_id)
        return memory_pb2.DeleteSessionResponse()

    async def AppendSessionMessages(
        self, request: memory_pb2.AppendSessionMessagesRequest, context: Context
    ) -> memory_pb2.AppendSessionMessagesResponse:
        messages = messages_from_proto(request.messages)
        session = await self._sessions.append(request.session_id, request.principal_id, messages)
        return memory_pb2.AppendSessionMessagesResponse(session=session_to_proto(session))

    async def GetPreferences(
        self, request: memory_pb2.GetPreferencesRequest, context: Context
    ) -> memory_pb2.GetPreferencesResponse:
        preferences = await self._preferences.get(request.principal_id)
        return memory_pb2.GetPreferencesResponse(preferences=preferences_to_proto(preferences))

    async def SetPreferences(
        self, request: memory_pb2.SetPreferencesRequest, context: Context
    ) -> memory_pb2.SetPreferencesResponse:
        stored = await self._preferences.set(request.principal_id, preferences_from_proto(request.preferences))
        return memory_pb2.SetPreferencesResponse(preferences=preferences_to_proto(stored))

    async def ExportPrincipalData(
        self, request: memory_pb2.ExportPrincipalDataRequest, context: Context
    ) -> memory_pb2.ExportPrincipalDataResponse:
        return export_to_proto(await self._principal_data.export(request.principal_id, request.page_token))

    async def DeletePrincipalData(
        self, request: memory_pb2.DeletePrincipalDataRequest, context: Context
    ) -> memory_pb2.DeletePrincipalDataResponse:
        return erasure_to_proto(await self._principal_data.erase(request.principal_id))

    async def ClaimIdempotencyKey(
        self, request: memory_pb2.ClaimIdempotencyKeyRequest, context: Context
    ) -> memory_pb2.ClaimIdempotencyKeyResponse:
        claim = await self._idempotency.claim(
            request.principal_id,
            request.idempotency_key,
            request.request_hash,
            lease_from_proto(request),
            request.trace_id,
        )
        return claim_to_proto(claim)

    async def CompleteIdempotencyKey(
        self, request: memory_pb2.CompleteIdempotencyKeyRequest, context: Context
    ) -> memory_pb2.CompleteIdempotencyKeyResponse:
        await self._idempotency.complete(request.principal_id, request.idempotency_key, request.response)
        return memory_pb2.CompleteIdempotencyKeyResponse()

    async def ReleaseIdempotencyKey(
        self, request: memory_pb2.ReleaseIdempotencyKeyRequest, context: Context
    ) -> memory_pb2.ReleaseIdempotencyKeyResponse:
        await self._idempotency.release(request.principal_id, request.idempotency_key)
        return memory_pb2.ReleaseIdempotencyKeyResponse()
