"""The thin gRPC face of the memory service: proto in → use case → proto out. Errors are raised as domain
errors; the shared ``ErrorMappingInterceptor`` turns them into statuses."""

from __future__ import annotations

from typing import Any

import grpc

from techno.memory.v1 import memory_pb2, memory_pb2_grpc
from techno_memory.application.audit_log import AuditLog
from techno_memory.application.keys import KeyDirectory
from techno_memory.entrypoints.convert import (
    event_to_proto,
    events_from_proto,
    key_to_proto,
    listing_to_proto,
    new_key_from_proto,
    updated_since_from_proto,
)

Context = grpc.aio.ServicerContext[Any, Any]


class MemoryServicer(memory_pb2_grpc.MemoryServiceServicer):
    def __init__(self, audit_log: AuditLog, keys: KeyDirectory) -> None:
        self._audit = audit_log
        self._keys = keys

    async def AppendAuditEvents(
        self, request: memory_pb2.AppendAuditEventsRequest, context: Context
    ) -> memory_pb2.AppendAuditEventsResponse:
        appended = await self._audit.append(events_from_proto(request.events))
        return memory_pb2.AppendAuditEventsResponse(appended=appended)

    async def GetAuditTrail(
        self, request: memory_pb2.GetAuditTrailRequest, context: Context
    ) -> memory_pb2.GetAuditTrailResponse:
        events = await self._audit.trail(request.trace_id)
        return memory_pb2.GetAuditTrailResponse(events=[event_to_proto(event) for event in events])

    async def CreateApiKey(
        self, request: memory_pb2.CreateApiKeyRequest, context: Context
    ) -> memory_pb2.CreateApiKeyResponse:
        key = await self._keys.create(new_key_from_proto(request))
        return memory_pb2.CreateApiKeyResponse(api_key=key_to_proto(key))

    async def ListApiKeys(
        self, request: memory_pb2.ListApiKeysRequest, context: Context
    ) -> memory_pb2.ListApiKeysResponse:
        listing = await self._keys.list(updated_since_from_proto(request))
        return listing_to_proto(listing)

    async def RevokeApiKey(
        self, request: memory_pb2.RevokeApiKeyRequest, context: Context
    ) -> memory_pb2.RevokeApiKeyResponse:
        key = await self._keys.revoke(request.key_id)
        return memory_pb2.RevokeApiKeyResponse(api_key=key_to_proto(key))
