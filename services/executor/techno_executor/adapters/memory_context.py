"""The ``ConversationContext`` port over memory's gRPC API: ``GetSession``, ``AppendSessionMessages`` and
``GetPreferences``.

Every call is bounded by the smaller of the adapter's ceiling and the timeout it is given (what is left of the
request's deadline). Memory's NOT_FOUND for a session (unknown, expired or another principal's) becomes
``NotFound`` SESSION_NOT_FOUND, which the caller gets as it is (404 at the edge); a request memory refuses
(INVALID_ARGUMENT, …) is passed on with memory's reason; anything else (unreachable, timed out, failing) is
``Unavailable`` MEMORY_UNAVAILABLE. No message content is ever logged.
"""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
from google.protobuf import timestamp_pb2

from techno.memory.v1 import memory_pb2, memory_pb2_grpc
from techno_core.errors import DomainError, NotFound, Unavailable
from techno_core.grpc_errors import from_rpc_error
from techno_executor.domain.prompt import Preferences, Turn

DEFAULT_TIMEOUT_SECONDS = 2.0
# Memory's own refusals of a request, passed on as memory gave them; every other code means memory is in trouble.
_CALLERS_FAULT = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.FAILED_PRECONDITION,
}


class MemoryConversationContext:
    def __init__(
        self,
        stub: memory_pb2_grpc.MemoryServiceStub,
        *,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self._stub = stub
        self._ceiling = timeout_seconds

    async def history(self, principal_id: str, session_id: str, *, timeout: float | None = None) -> list[Turn]:
        request = memory_pb2.GetSessionRequest(session_id=session_id, principal_id=principal_id)
        try:
            response = await self._stub.GetSession(request, timeout=self._timeout(timeout))
        except grpc.aio.AioRpcError as error:
            raise _domain_error(error, "GetSession", session_id) from error
        return [(message.role, message.content) for message in response.session.messages]

    async def remember(
        self,
        principal_id: str,
        session_id: str,
        user_message: str,
        assistant_reply: str,
        *,
        timeout: float | None = None,
    ) -> None:
        now = timestamp_pb2.Timestamp()
        now.FromDatetime(datetime.now(UTC))
        request = memory_pb2.AppendSessionMessagesRequest(
            session_id=session_id,
            principal_id=principal_id,
            messages=[
                memory_pb2.SessionMessage(role="user", content=user_message, created_at=now),
                memory_pb2.SessionMessage(role="assistant", content=assistant_reply, created_at=now),
            ],
        )
        try:
            await self._stub.AppendSessionMessages(request, timeout=self._timeout(timeout))
        except grpc.aio.AioRpcError as error:
            raise _domain_error(error, "AppendSessionMessages", session_id) from error

    async def preferences(self, principal_id: str, *, timeout: float | None = None) -> Preferences:
        request = memory_pb2.GetPreferencesRequest(principal_id=principal_id)
        try:
            response = await self._stub.GetPreferences(request, timeout=self._timeout(timeout))
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return Preferences()  # nothing stored for this principal: no preferences
            raise _domain_error(error, "GetPreferences", "") from error
        stored = response.preferences
        return Preferences(tone=stored.tone, format=stored.format, language=stored.language)

    def _timeout(self, timeout: float | None) -> float:
        return self._ceiling if timeout is None else max(0.0, min(self._ceiling, timeout))


def _domain_error(error: grpc.aio.AioRpcError, method: str, session_id: str) -> DomainError:
    code = error.code()
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(
            reason="SESSION_NOT_FOUND",
            message="the session does not exist, has expired or belongs to someone else",
            metadata={"session_id": session_id[:128]},
        )
    if code in _CALLERS_FAULT:
        return from_rpc_error(error, default_reason="MEMORY_REFUSED")
    return Unavailable(
        reason="MEMORY_UNAVAILABLE",
        message=f"memory could not answer {method} ({code.name})",
        metadata={"method": method, "code": code.name},
    )
