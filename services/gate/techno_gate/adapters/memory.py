"""The gate's view of the memory service: audit writes and reads, the API-key directory, personal data and
idempotency records."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

import grpc
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

from techno.memory.v1 import memory_pb2, memory_pb2_grpc
from techno_core.batching import CoalescingBatcher
from techno_core.grpc_errors import from_rpc_error
from techno_core.structs import struct_dict
from techno_core.timestamps import from_timestamp, to_timestamp
from techno_gate.application.audit_query import AuditEventView, AuditPage, AuditQuery
from techno_gate.application.idempotency import Claim, ClaimState
from techno_gate.application.personal import (
    IdempotencyRecordView,
    Message,
    PersonalErasure,
    PersonalExport,
    PreferencesView,
    SessionView,
)
from techno_gate.domain.audit import AuditKind, AuditRecord
from techno_gate.domain.keys import ApiKeyRecord, NewApiKey

log = logging.getLogger(__name__)
T = TypeVar("T")

_KINDS = {
    AuditKind.DECISION: memory_pb2.AUDIT_EVENT_KIND_DECISION,
    AuditKind.OUTCOME: memory_pb2.AUDIT_EVENT_KIND_OUTCOME,
    AuditKind.ADMIN: memory_pb2.AUDIT_EVENT_KIND_ADMIN,
}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _occurred_at(moment: datetime) -> timestamp_pb2.Timestamp | None:
    """``to_timestamp`` of an aware datetime by integer arithmetic, the same value: ``FromDatetime`` went
    through a time tuple and ``calendar.timegm`` for every event."""
    if moment.tzinfo is None:
        return to_timestamp(moment)
    since = moment - _EPOCH
    return timestamp_pb2.Timestamp(seconds=since.days * 86_400 + since.seconds, nanos=since.microseconds * 1000)


def audit_event(record: AuditRecord) -> memory_pb2.AuditEvent:
    attributes = struct_pb2.Struct()
    attributes.update(record.attributes)
    return memory_pb2.AuditEvent(
        event_id=record.event_id,
        trace_id=record.trace_id,
        kind=_KINDS[record.kind],
        occurred_at=_occurred_at(record.occurred_at),
        service=record.service,
        principal_id=record.principal_id,
        action=record.action,
        context_id=record.context_id,
        result=record.result,
        reason_codes=record.reason_codes,
        attributes=attributes,
    )


_APPEND_ATTEMPTS = 3
_APPEND_RETRY_PAUSE_SECONDS = 0.05


class MemoryAuditLog:
    """Audit writes, grouped: records submitted while an append is in flight go together in the next one, so
    under load many requests share one RPC (and, in memory, one transaction). Each ``record`` still returns
    only after its own event is committed."""

    def __init__(self, stub: memory_pb2_grpc.MemoryServiceStub, *, timeout_seconds: float) -> None:
        self._stub = stub
        self._timeout = timeout_seconds
        self._batcher: CoalescingBatcher[memory_pb2.AuditEvent, None] = CoalescingBatcher(self._append)

    async def record(self, record: AuditRecord) -> None:
        # asyncio.timeout, not wait_for: the same TimeoutError and cancellation of the wait, without a task per call.
        async with asyncio.timeout(self._timeout):
            await self._batcher.submit(audit_event(record))

    async def _append(self, events: Sequence[memory_pb2.AuditEvent]) -> list[None]:
        """One append, sent again while memory is UNAVAILABLE and time is left: with several memory replicas
        the next attempt goes to another one (round robin). Safe to repeat: memory stores an event id once."""
        request = memory_pb2.AppendAuditEventsRequest(events=events)
        deadline = time.monotonic() + self._timeout
        attempt = 1
        while True:
            try:
                await self._stub.AppendAuditEvents(request, timeout=max(0.0, deadline - time.monotonic()))
                return [None] * len(events)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE or attempt == _APPEND_ATTEMPTS:
                    raise
            log.warning("audit append failed on one memory replica; retrying", extra={"attempt": attempt})
            await asyncio.sleep(_APPEND_RETRY_PAUSE_SECONDS)
            attempt += 1

    async def close(self) -> None:
        await self._batcher.close()


def key_record(key: memory_pb2.ApiKey) -> ApiKeyRecord:
    return ApiKeyRecord(
        key_id=key.key_id,
        prefix=key.prefix,
        key_hash=key.key_hash,
        name=key.name,
        profile=key.profile,
        created_at=from_timestamp(key, "created_at"),
        revoked_at=from_timestamp(key, "revoked_at"),
        scopes=frozenset(key.scopes),  # as stored: no scopes is no scopes (memory stores a default on create)
        expires_at=from_timestamp(key, "expires_at"),
    )


class KeyCache:
    """Every key's hash held in-process: authentication costs a dictionary look-up, never a database round
    trip, and unknown keys never reach the database either.

    Kept fresh by incremental reads: every ``refresh_seconds`` the cache asks memory only for keys changed since
    its last read (less ``overlap_seconds``, so a change committed late is still seen), so a revocation reaches
    every replica within about one refresh at the cost of one small indexed query. A full reload every
    ``full_reload_seconds`` is the backstop. Until the first load succeeds ``ready`` is False and the gate
    refuses (fail closed)."""

    def __init__(
        self,
        stub: memory_pb2_grpc.MemoryServiceStub,
        *,
        refresh_seconds: float,
        max_age_seconds: float,
        overlap_seconds: float = 5.0,
        full_reload_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stub = stub
        self._clock = clock
        self._refresh = refresh_seconds
        self._max_age = max_age_seconds
        self._overlap = overlap_seconds
        self._full_every = full_reload_seconds
        self._by_hash: dict[str, ApiKeyRecord] = {}
        self._since: timestamp_pb2.Timestamp | None = None
        self._loaded_at: float | None = None
        self._full_at = 0.0
        self._task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return self._loaded_at is not None

    @property
    def size(self) -> int:
        return len(self._by_hash)

    def lookup(self, key_hash: str) -> ApiKeyRecord | None:
        return self._by_hash.get(key_hash)

    def remember(self, record: ApiKeyRecord) -> None:
        self._by_hash[record.key_hash] = record

    async def reload(self, *, full: bool = False) -> None:
        full = full or self._since is None or self._clock() - self._full_at > self._full_every
        request = memory_pb2.ListApiKeysRequest(updated_since=None if full else self._since)
        response = await self._stub.ListApiKeys(request, timeout=self._refresh * 2 + 1)
        records = {key.key_hash: key_record(key) for key in response.api_keys}
        if full:
            self._by_hash, self._full_at = records, self._clock()
        else:
            self._by_hash.update(records)
        since = timestamp_pb2.Timestamp()
        since.FromNanoseconds(max(0, response.read_at.ToNanoseconds() - int(self._overlap * 1e9)))
        self._since = since
        self._loaded_at = self._clock()

    async def check_fresh(self) -> None:
        """Health probe: fails when the cache is older than its maximum age."""
        if self._loaded_at is None or self._clock() - self._loaded_at > self._max_age:
            raise RuntimeError("API key cache is stale")

    async def start(self) -> None:
        try:
            await self.reload(full=True)
        except grpc.aio.AioRpcError as error:  # start anyway; health says NOT_SERVING until a load succeeds
            log.warning("initial API key load failed", extra={"grpc_code": error.code().name})
        self._task = asyncio.get_running_loop().create_task(self._refresh_loop(), name="key-cache-refresh")

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._refresh)
            try:
                await self.reload()
            except grpc.aio.AioRpcError as error:
                log.warning("API key refresh failed", extra={"grpc_code": error.code().name})

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def through_memory(call: Awaitable[T]) -> T:
    """A memory call whose failure becomes the domain error memory answered with (NOT_FOUND, ALREADY_EXISTS …
    pass on with their reasons)."""
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        raise from_rpc_error(error, default_reason="MEMORY_UNAVAILABLE") from error


class MemoryKeyStore:
    """Key management through the memory service; only hashes cross the wire."""

    def __init__(self, stub: memory_pb2_grpc.MemoryServiceStub, *, timeout_seconds: float = 5.0) -> None:
        self._stub = stub
        self._timeout = timeout_seconds

    async def create(
        self, key: NewApiKey, *, name: str, profile: str, scopes: tuple[str, ...], expires_at: datetime | None
    ) -> ApiKeyRecord:
        request = memory_pb2.CreateApiKeyRequest(
            key_id=key.key_id,
            prefix=key.prefix,
            key_hash=key.key_hash,
            name=name,
            profile=profile,
            scopes=scopes,
            expires_at=to_timestamp(expires_at),
        )
        response = await through_memory(self._stub.CreateApiKey(request, timeout=self._timeout))
        return key_record(response.api_key)

    async def list(self) -> list[ApiKeyRecord]:
        response = await through_memory(self._stub.ListApiKeys(memory_pb2.ListApiKeysRequest(), timeout=self._timeout))
        return [key_record(key) for key in response.api_keys]

    async def revoke(self, key_id: str) -> ApiKeyRecord:
        request = memory_pb2.RevokeApiKeyRequest(key_id=key_id)
        response = await through_memory(self._stub.RevokeApiKey(request, timeout=self._timeout))
        return key_record(response.api_key)


def session_view(session: memory_pb2.Session) -> SessionView:
    return SessionView(
        session_id=session.session_id,
        created_at=from_timestamp(session, "created_at"),
        expires_at=from_timestamp(session, "expires_at"),
        messages=tuple(Message(m.role, m.content, from_timestamp(m, "created_at")) for m in session.messages),
    )


def preferences_view(preferences: memory_pb2.Preferences) -> PreferencesView:
    return PreferencesView(tone=preferences.tone, format=preferences.format, language=preferences.language)


class MemoryPersonalData:
    """The caller's sessions and preferences, kept by the memory service."""

    def __init__(self, stub: memory_pb2_grpc.MemoryServiceStub, *, timeout_seconds: float = 5.0) -> None:
        self._stub = stub
        self._timeout = timeout_seconds

    async def create_session(self, principal_id: str) -> SessionView:
        request = memory_pb2.CreateSessionRequest(principal_id=principal_id)
        return session_view((await through_memory(self._stub.CreateSession(request, timeout=self._timeout))).session)

    async def get_session(self, principal_id: str, session_id: str) -> SessionView:
        request = memory_pb2.GetSessionRequest(principal_id=principal_id, session_id=session_id)
        return session_view((await through_memory(self._stub.GetSession(request, timeout=self._timeout))).session)

    async def delete_session(self, principal_id: str, session_id: str) -> None:
        request = memory_pb2.DeleteSessionRequest(principal_id=principal_id, session_id=session_id)
        await through_memory(self._stub.DeleteSession(request, timeout=self._timeout))

    async def preferences(self, principal_id: str) -> PreferencesView:
        request = memory_pb2.GetPreferencesRequest(principal_id=principal_id)
        reply = await through_memory(self._stub.GetPreferences(request, timeout=self._timeout))
        return preferences_view(reply.preferences)

    async def set_preferences(self, principal_id: str, preferences: PreferencesView) -> PreferencesView:
        wanted = memory_pb2.Preferences(tone=preferences.tone, format=preferences.format, language=preferences.language)
        request = memory_pb2.SetPreferencesRequest(principal_id=principal_id, preferences=wanted)
        reply = await through_memory(self._stub.SetPreferences(request, timeout=self._timeout))
        return preferences_view(reply.preferences)

    async def export(self, principal_id: str, page_token: str = "") -> PersonalExport:
        request = memory_pb2.ExportPrincipalDataRequest(principal_id=principal_id, page_token=page_token)
        reply = await through_memory(self._stub.ExportPrincipalData(request, timeout=self._timeout))
        return PersonalExport(
            sessions=[session_view(s) for s in reply.sessions],
            preferences=preferences_view(reply.preferences),
            idempotency_records=[idempotency_record_view(r) for r in reply.idempotency_records],
            next_page_token=reply.next_page_token,
        )

    async def erase(self, principal_id: str) -> PersonalErasure:
        request = memory_pb2.DeletePrincipalDataRequest(principal_id=principal_id)
        reply = await through_memory(self._stub.DeletePrincipalData(request, timeout=self._timeout))
        return PersonalErasure(reply.sessions_deleted, reply.preferences_deleted, reply.idempotency_records_deleted)


def idempotency_record_view(record: memory_pb2.IdempotencyRecord) -> IdempotencyRecordView:
    return IdempotencyRecordView(
        key=record.idempotency_key,
        created_at=from_timestamp(record, "created_at"),
        expires_at=from_timestamp(record, "expires_at"),
        response=record.response if record.completed else None,
    )


_KIND_NAMES = {
    memory_pb2.AUDIT_EVENT_KIND_DECISION: "DECISION",
    memory_pb2.AUDIT_EVENT_KIND_OUTCOME: "OUTCOME",
    memory_pb2.AUDIT_EVENT_KIND_BREAKER: "BREAKER",
    memory_pb2.AUDIT_EVENT_KIND_ADMIN: "ADMIN",
}


def event_view(event: memory_pb2.AuditEvent) -> AuditEventView:
    return AuditEventView(
        event_id=event.event_id,
        trace_id=event.trace_id,
        kind=_KIND_NAMES.get(event.kind, "UNSPECIFIED"),
        occurred_at=from_timestamp(event, "occurred_at"),
        recorded_at=from_timestamp(event, "recorded_at"),
        service=event.service,
        principal_id=event.principal_id,
        action=event.action,
        context_id=event.context_id,
        result=event.result,
        reason_codes=tuple(event.reason_codes),
        attributes=struct_dict(event.attributes),
    )


class MemoryAuditReader:
    """Audit queries, answered by the memory service (which validates the filters and the page token)."""

    def __init__(self, stub: memory_pb2_grpc.MemoryServiceStub, *, timeout_seconds: float = 10.0) -> None:
        self._stub = stub
        self._timeout = timeout_seconds

    async def list_events(self, query: AuditQuery) -> AuditPage:
        request = memory_pb2.ListAuditEventsRequest(
            trace_id=query.trace_id,
            principal_id=query.principal_id,
            start_time=to_timestamp(query.start_time),
            end_time=to_timestamp(query.end_time),
            page_size=query.page_size,
            page_token=query.page_token,
        )
        reply = await through_memory(self._stub.ListAuditEvents(request, timeout=self._timeout))
        return AuditPage(tuple(event_view(event) for event in reply.events), reply.next_page_token)


_CLAIM_STATES = {
    memory_pb2.IDEMPOTENCY_CLAIM_STATE_CLAIMED: ClaimState.CLAIMED,
    memory_pb2.IDEMPOTENCY_CLAIM_STATE_IN_PROGRESS: ClaimState.IN_PROGRESS,
    memory_pb2.IDEMPOTENCY_CLAIM_STATE_COMPLETED: ClaimState.COMPLETED,
    memory_pb2.IDEMPOTENCY_CLAIM_STATE_MISMATCH: ClaimState.MISMATCH,
    memory_pb2.IDEMPOTENCY_CLAIM_STATE_OUTCOME_UNKNOWN: ClaimState.OUTCOME_UNKNOWN,
}


class MemoryIdempotencyStore:
    """Idempotency records in the memory service, shared by every gate replica."""

    def __init__(self, stub: memory_pb2_grpc.MemoryServiceStub, *, timeout_seconds: float = 5.0) -> None:
        self._stub = stub
        self._timeout = timeout_seconds

    async def claim(
        self, principal_id: str, key: str, request_hash: str, *, lease_seconds: float, trace_id: str
    ) -> Claim:
        lease = duration_pb2.Duration()
        lease.FromMilliseconds(round(lease_seconds * 1000))
        request = memory_pb2.ClaimIdempotencyKeyRequest(
            principal_id=principal_id, idempotency_key=key, request_hash=request_hash, lease=lease, trace_id=trace_id
        )
        reply = await through_memory(self._stub.ClaimIdempotencyKey(request, timeout=self._timeout))
        state = _CLAIM_STATES.get(reply.state)
        if state is None:
            raise RuntimeError(f"memory answered an unknown claim state {reply.state}")
        return Claim(state, reply.response, reply.trace_id)

    async def complete(self, principal_id: str, key: str, response: bytes) -> None:
        request = memory_pb2.CompleteIdempotencyKeyRequest(
            principal_id=principal_id, idempotency_key=key, response=response
        )
        await through_memory(self._stub.CompleteIdempotencyKey(request, timeout=self._timeout))

    async def release(self, principal_id: str, key: str) -> None:
        request = memory_pb2.ReleaseIdempotencyKeyRequest(principal_id=principal_id, idempotency_key=key)
        await through_memory(self._stub.ReleaseIdempotencyKey(request, timeout=self._timeout))
