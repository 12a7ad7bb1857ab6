"""The thin gRPC face of the gate: proto in → use case → proto out."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import grpc

from techno.gate.v1 import gate_pb2, gate_pb2_grpc
from techno_core import errors
from techno_core.channels import downstream_timeout
from techno_core.timestamps import to_timestamp
from techno_core.tracing import current_trace_id
from techno_gate.application.authenticate import Credentials
from techno_gate.application.idempotency import Idempotency, request_hash, validate_key
from techno_gate.application.limits import RouteFamily, RouteLimits
from techno_gate.application.models import Models
from techno_gate.application.personal import IdempotencyRecordView, PersonalData, PreferencesView, SessionView
from techno_gate.application.ports import Chunk, Execution
from techno_gate.application.process import Gatekeeper, ProcessCommand
from techno_gate.application.scopes import authorize
from techno_gate.domain.principal import Principal

Context = grpc.aio.ServicerContext[Any, Any]
_BEARER = "bearer "
IDEMPOTENCY_KEY = "idempotency-key"  # gRPC metadata; the edge forwards the REST Idempotency-Key header as it
# Methods are named in full for their scope (METHOD_SCOPES): a misspelt one is in no table, so it is refused.
SERVICE = gate_pb2.DESCRIPTOR.services_by_name["GateService"].full_name
PROCESS = f"{SERVICE}.Process"
STREAM_PROCESS = f"{SERVICE}.StreamProcess"


def idempotency_key(context: Context) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == IDEMPOTENCY_KEY and isinstance(value, str):
            return value
    return None


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


def process_command(request: gate_pb2.ProcessRequest, context: Context, method: str) -> ProcessCommand:
    has_payload = request.HasField("payload")
    return ProcessCommand(
        trace_id=current_trace_id(),
        method=method,
        credentials=presented_credentials(context),
        action=request.action,
        context_id=request.context_id,
        session_id=request.session_id,
        payload=request.payload if has_payload else None,
        payload_bytes=request.payload.ByteSize() if has_payload else 0,
        provider=request.provider,
    )


def process_response(trace_id: str, execution: Execution) -> gate_pb2.ProcessResponse:
    return gate_pb2.ProcessResponse(
        trace_id=trace_id,
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


def session_message(session: SessionView) -> gate_pb2.Session:
    return gate_pb2.Session(
        session_id=session.session_id,
        created_at=to_timestamp(session.created_at),
        expires_at=to_timestamp(session.expires_at),
        messages=[
            gate_pb2.SessionMessage(role=m.role, content=m.content, created_at=to_timestamp(m.created_at))
            for m in session.messages
        ],
    )


def preferences_message(preferences: PreferencesView) -> gate_pb2.Preferences:
    return gate_pb2.Preferences(tone=preferences.tone, format=preferences.format, language=preferences.language)


def idempotency_record_message(record: IdempotencyRecordView) -> gate_pb2.IdempotencyRecord:
    """The stored response is the ProcessResponse this gate serialized for the first request."""
    response = None if record.response is None else gate_pb2.ProcessResponse.FromString(record.response)
    return gate_pb2.IdempotencyRecord(
        idempotency_key=record.key,
        created_at=to_timestamp(record.created_at),
        expires_at=to_timestamp(record.expires_at),
        response=response,
    )


class GateServicer(gate_pb2_grpc.GateServiceServicer):
    """Every method but Process and StreamProcess (whose scope the governed path checks, recording a DENY)
    admits its caller through ``_admitted``: authenticated, checked for the method's scope, then its limits."""

    def __init__(
        self,
        gatekeeper: Gatekeeper,
        personal: PersonalData,
        idempotency: Idempotency,
        models: Models,
        *,
        limits: RouteLimits,
        executor_timeout_seconds: float,
    ) -> None:
        self._limits = limits
        self._gatekeeper = gatekeeper
        self._personal = personal
        self._idempotency = idempotency
        self._models = models
        self._executor_timeout = executor_timeout_seconds

    @contextlib.asynccontextmanager
    async def _admitted(self, context: Context, method: str, family: RouteFamily) -> AsyncIterator[Principal]:
        """The caller of ``method``, holding its scope, admitted by its limits (``family``'s budget) for the call.
        The scope is checked first: a caller refused it spends none of the budget."""
        principal = self._gatekeeper.authenticate(presented_credentials(context))
        authorize(principal, f"{SERVICE}.{method}")
        async with self._limits.admitted(principal, family):
            yield principal

    @contextlib.asynccontextmanager
    async def _caller_id(self, context: Context, method: str) -> AsyncIterator[str]:
        """The caller of a personal route (the personal family's budget): its data is keyed by its id."""
        async with self._admitted(context, method, RouteFamily.PERSONAL) as principal:
            yield principal.id

    async def CreateSession(
        self, request: gate_pb2.CreateSessionRequest, context: Context
    ) -> gate_pb2.CreateSessionResponse:
        async with self._caller_id(context, "CreateSession") as caller:
            session = await self._personal.store.create_session(caller)
        return gate_pb2.CreateSessionResponse(session=session_message(session))

    async def GetSession(self, request: gate_pb2.GetSessionRequest, context: Context) -> gate_pb2.GetSessionResponse:
        async with self._caller_id(context, "GetSession") as caller:
            session = await self._personal.store.get_session(caller, request.session_id)
        return gate_pb2.GetSessionResponse(session=session_message(session))

    async def DeleteSession(
        self, request: gate_pb2.DeleteSessionRequest, context: Context
    ) -> gate_pb2.DeleteSessionResponse:
        async with self._caller_id(context, "DeleteSession") as caller:
            await self._personal.store.delete_session(caller, request.session_id)
        return gate_pb2.DeleteSessionResponse()

    async def GetPreferences(
        self, request: gate_pb2.GetPreferencesRequest, context: Context
    ) -> gate_pb2.GetPreferencesResponse:
        async with self._caller_id(context, "GetPreferences") as caller:
            preferences = await self._personal.store.preferences(caller)
        return gate_pb2.GetPreferencesResponse(preferences=preferences_message(preferences))

    async def UpdatePreferences(
        self, request: gate_pb2.UpdatePreferencesRequest, context: Context
    ) -> gate_pb2.UpdatePreferencesResponse:
        wanted = request.preferences
        async with self._caller_id(context, "UpdatePreferences") as caller:
            stored = await self._personal.store.set_preferences(
                caller, PreferencesView(wanted.tone, wanted.format, wanted.language)
            )
        return gate_pb2.UpdatePreferencesResponse(preferences=preferences_message(stored))

    async def ExportMyData(
        self, request: gate_pb2.ExportMyDataRequest, context: Context
    ) -> gate_pb2.ExportMyDataResponse:
        async with self._caller_id(context, "ExportMyData") as caller:
            export = await self._personal.store.export(caller, request.page_token)
        return gate_pb2.ExportMyDataResponse(
            sessions=[session_message(s) for s in export.sessions],
            preferences=preferences_message(export.preferences),
            idempotency_records=[idempotency_record_message(r) for r in export.idempotency_records],
            next_page_token=export.next_page_token,
        )

    async def DeleteMyData(
        self, request: gate_pb2.DeleteMyDataRequest, context: Context
    ) -> gate_pb2.DeleteMyDataResponse:
        async with self._caller_id(context, "DeleteMyData") as caller:
            erased = await self._personal.store.erase(caller)
        return gate_pb2.DeleteMyDataResponse(
            sessions_deleted=erased.sessions_deleted,
            preferences_deleted=erased.preferences_deleted,
            idempotency_records_deleted=erased.idempotency_records_deleted,
        )

    async def Process(self, request: gate_pb2.ProcessRequest, context: Context) -> gate_pb2.ProcessResponse:
        command = process_command(request, context, PROCESS)
        timeout = downstream_timeout(context, self._executor_timeout)
        claim = self._idempotent(request, command, context)
        if claim is None:
            return await self._process(command, timeout)

        async def execute() -> bytes:
            return (await self._process(command, timeout)).SerializeToString()

        response = await self._idempotency.run(*claim, execute, timeout=timeout, trace_id=command.trace_id)
        return gate_pb2.ProcessResponse.FromString(response)

    async def _process(self, command: ProcessCommand, timeout: float) -> gate_pb2.ProcessResponse:
        return process_response(command.trace_id, await self._gatekeeper.process(command, timeout=timeout))

    async def StreamProcess(
        self, request: gate_pb2.StreamProcessRequest, context: Context
    ) -> AsyncIterator[gate_pb2.StreamProcessResponse]:
        """With an Idempotency-Key, a repeat of a stream that completed is answered with its stored result as a
        single ``done`` message (no chunks): it never runs twice. A stream that failed or was cancelled releases
        its key, as a failed Process does, so a retry runs again."""
        command = process_command(request.request, context, STREAM_PROCESS)
        timeout = downstream_timeout(context, self._executor_timeout)
        claim = self._idempotent(request.request, command, context)
        if claim is not None:
            stored = await self._idempotency.begin(*claim, timeout=timeout, trace_id=command.trace_id)
            if stored is not None:
                replayed = gate_pb2.ProcessResponse.FromString(stored)
                yield gate_pb2.StreamProcessResponse(trace_id=replayed.trace_id, done=replayed)
                return
        finished = False
        try:
            async with contextlib.aclosing(self._stream(command, timeout)) as messages:
                async for message in messages:
                    if claim is not None and message.HasField("done"):
                        # Kept before it is answered: there is no moment when it could run again.
                        await self._idempotency.finish(claim[0], claim[1], message.done.SerializeToString())
                        finished = True
                    yield message
        except BaseException:
            if claim is not None and not finished:  # nothing succeeded: a retry runs again
                await self._idempotency.abandon(claim[0], claim[1])
            raise

    async def _stream(
        self, command: ProcessCommand, timeout: float
    ) -> AsyncGenerator[gate_pb2.StreamProcessResponse, None]:
        async with contextlib.aclosing(self._gatekeeper.stream(command, timeout=timeout)) as events:
            async for event in events:
                if isinstance(event, Chunk):
                    yield gate_pb2.StreamProcessResponse(
                        trace_id=command.trace_id, chunk=gate_pb2.TextChunk(text=event.text)
                    )
                else:
                    yield gate_pb2.StreamProcessResponse(
                        trace_id=command.trace_id, done=process_response(command.trace_id, event)
                    )

    def _idempotent(
        self, request: gate_pb2.ProcessRequest, command: ProcessCommand, context: Context
    ) -> tuple[str, str, str] | None:
        """(caller, key, request fingerprint) of a request sent with an Idempotency-Key; None without one, or when
        the caller cannot be authenticated (the request is then denied and recorded as without a key)."""
        key = idempotency_key(context)
        if key is None:
            return None
        validate_key(key)
        try:
            principal = self._gatekeeper.authenticate(command.credentials)
        except errors.DomainError:
            return None
        return principal.id, key, request_hash(request.SerializeToString(deterministic=True))

    async def ListActions(self, request: gate_pb2.ListActionsRequest, context: Context) -> gate_pb2.ListActionsResponse:
        async with self._admitted(context, "ListActions", RouteFamily.CATALOG) as principal:
            policy = self._gatekeeper.policies.current
        return gate_pb2.ListActionsResponse(
            actions=[gate_pb2.Action(name=n, description=d) for n, d in policy.actions_for(principal.profile)],
            policy_version=policy.version,
            trace_id=current_trace_id(),
        )

    async def ListModels(self, request: gate_pb2.ListModelsRequest, context: Context) -> gate_pb2.ListModelsResponse:
        async with self._admitted(context, "ListModels", RouteFamily.CATALOG) as principal:
            models = await self._models.for_action(principal, request.action)
        return gate_pb2.ListModelsResponse(
            models=[gate_pb2.Model(provider=m.name, model=m.model) for m in models], trace_id=current_trace_id()
        )
