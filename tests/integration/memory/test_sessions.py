"""Sessions, preferences and the privacy requests over a real channel, on SQLite and PostgreSQL. Time is a
settable clock given to the service, so expiry is tested without sleeping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select

from techno.memory.v1 import memory_pb2, memory_pb2_grpc
from techno_core.server import GrpcApp
from techno_memory.adapters.database import create_database_engine
from techno_memory.adapters.tables import SessionMessageRow, SessionRow
from techno_memory.bootstrap import bootstrap

from .conftest import gate_channel, memory_settings
from .test_api_keys import reason_of, violated_fields

Stub = memory_pb2_grpc.MemoryServiceStub
TTL = timedelta(hours=1)
MAX_MESSAGES = 3
ALICE, BOB = "key_alice", "key_bob"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def start_app(url: str, tracer_provider: TracerProvider, clock: Clock, *, sweep_seconds: float) -> GrpcApp:
    settings = memory_settings(url).model_copy(
        update={
            "memory_session_ttl_seconds": TTL.total_seconds(),
            "memory_session_max_messages": MAX_MESSAGES,
            "memory_session_sweep_seconds": sweep_seconds,
        }
    )
    app = await bootstrap(settings, tracer_provider=tracer_provider, registry=CollectorRegistry(), clock=clock)
    await app.start()
    return app


@pytest.fixture
async def session_app(migrated_url: str, tracer_provider: TracerProvider, clock: Clock) -> AsyncIterator[GrpcApp]:
    # A sweep interval far beyond the test: expiry here is the service's own check, not the sweeper's deletion.
    app = await start_app(migrated_url, tracer_provider, clock, sweep_seconds=3600)
    yield app
    await app.stop()


@pytest.fixture
async def stub(session_app: GrpcApp) -> AsyncIterator[Stub]:
    async with gate_channel(session_app.address) as channel:
        yield memory_pb2_grpc.MemoryServiceStub(channel)


async def create(stub: Stub, principal_id: str = ALICE) -> memory_pb2.Session:
    request = memory_pb2.CreateSessionRequest(principal_id=principal_id)
    response: memory_pb2.CreateSessionResponse = await stub.CreateSession(request, timeout=10)
    return response.session


async def get(stub: Stub, session_id: str, principal_id: str = ALICE) -> memory_pb2.Session:
    request = memory_pb2.GetSessionRequest(session_id=session_id, principal_id=principal_id)
    response: memory_pb2.GetSessionResponse = await stub.GetSession(request, timeout=10)
    return response.session


def message(content: str, role: str = "user") -> memory_pb2.SessionMessage:
    return memory_pb2.SessionMessage(role=role, content=content)


async def append(
    stub: Stub, session_id: str, *messages: memory_pb2.SessionMessage, principal_id: str = ALICE
) -> memory_pb2.Session:
    request = memory_pb2.AppendSessionMessagesRequest(
        session_id=session_id, principal_id=principal_id, messages=messages
    )
    response: memory_pb2.AppendSessionMessagesResponse = await stub.AppendSessionMessages(request, timeout=10)
    return response.session


async def refused(call: Awaitable[object], code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code
    return caught.value


def contents(session: memory_pb2.Session) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in session.messages]


async def test_create_get_append_delete(stub: Stub, clock: Clock) -> None:
    created = await create(stub)
    assert len(created.session_id) >= 32
    assert created.principal_id == ALICE
    assert created.expires_at.ToDatetime(tzinfo=UTC) == clock.now + TTL
    assert list(created.messages) == []

    appended = await append(stub, created.session_id, message("hello"), message("hi!", role="assistant"))
    assert contents(appended) == [("user", "hello"), ("assistant", "hi!")]
    assert appended.messages[0].created_at.ToDatetime(tzinfo=UTC) == clock.now
    assert contents(await get(stub, created.session_id)) == contents(appended)

    await stub.DeleteSession(memory_pb2.DeleteSessionRequest(session_id=created.session_id, principal_id=ALICE))
    error = await refused(get(stub, created.session_id), grpc.StatusCode.NOT_FOUND)
    assert reason_of(error) == "SESSION_NOT_FOUND"
    delete_again = stub.DeleteSession(
        memory_pb2.DeleteSessionRequest(session_id=created.session_id, principal_id=ALICE)
    )
    await refused(delete_again, grpc.StatusCode.NOT_FOUND)


async def test_every_use_slides_the_expiry_and_an_expired_session_is_gone(stub: Stub, clock: Clock) -> None:
    session_id = (await create(stub)).session_id

    clock.advance(TTL - timedelta(seconds=1))  # used just before it expires: it lives another TTL from now
    assert (await get(stub, session_id)).expires_at.ToDatetime(tzinfo=UTC) == clock.now + TTL
    clock.advance(TTL - timedelta(seconds=1))
    assert (await append(stub, session_id, message("still here"))).expires_at.ToDatetime(tzinfo=UTC) == (
        clock.now + TTL
    )

    clock.advance(TTL)  # exactly at expires_at: expired, though the sweeper has not run
    await refused(get(stub, session_id), grpc.StatusCode.NOT_FOUND)
    await refused(append(stub, session_id, message("too late")), grpc.StatusCode.NOT_FOUND)
    await refused(
        stub.DeleteSession(memory_pb2.DeleteSessionRequest(session_id=session_id, principal_id=ALICE)),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_a_session_of_another_principal_is_not_found(stub: Stub) -> None:
    session_id = (await create(stub, ALICE)).session_id
    await append(stub, session_id, message("private"))
    await refused(get(stub, session_id, BOB), grpc.StatusCode.NOT_FOUND)
    await refused(append(stub, session_id, message("intrusion"), principal_id=BOB), grpc.StatusCode.NOT_FOUND)
    await refused(
        stub.DeleteSession(memory_pb2.DeleteSessionRequest(session_id=session_id, principal_id=BOB)),
        grpc.StatusCode.NOT_FOUND,
    )
    unknown = await refused(get(stub, "no-such-session", BOB), grpc.StatusCode.NOT_FOUND)
    foreign = await refused(get(stub, session_id, BOB), grpc.StatusCode.NOT_FOUND)
    assert foreign.details() == unknown.details()  # indistinguishable from a session that never existed
    assert contents(await get(stub, session_id)) == [("user", "private")]  # untouched


async def test_only_the_newest_messages_are_kept(stub: Stub) -> None:
    session_id = (await create(stub)).session_id
    await append(stub, session_id, message("1"), message("2"))
    kept = await append(stub, session_id, message("3"), message("4"))
    assert [m.content for m in kept.messages] == ["2", "3", "4"]
    many = await append(stub, session_id, *(message(str(n)) for n in range(5, 11)))
    assert [m.content for m in many.messages] == ["8", "9", "10"]
    assert [m.content for m in (await get(stub, session_id)).messages] == ["8", "9", "10"]


async def test_invalid_messages_are_refused_with_field_violations(stub: Stub) -> None:
    session_id = (await create(stub)).session_id
    error = await refused(
        append(
            stub,
            session_id,
            message("fine"),
            message("who am I", role="system"),
            message("x" * 100_001),
            message("bell\x07"),
            message(""),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert reason_of(error) == "INVALID_SESSION_MESSAGES"
    assert violated_fields(error) == [
        "messages[1].role",
        "messages[2].content",
        "messages[3].content",
        "messages[4].content",
    ]
    assert list((await get(stub, session_id)).messages) == []  # nothing of a refused request is stored

    allowed = await append(stub, session_id, message("tab\there\r\nnew line " + "y" * 99_980))
    assert len(allowed.messages) == 1
    error = await refused(append(stub, session_id, principal_id=""), grpc.StatusCode.INVALID_ARGUMENT)
    assert violated_fields(error) == ["principal_id", "messages"]


async def test_preferences_are_explicit_and_validated(stub: Stub) -> None:
    empty = await stub.GetPreferences(memory_pb2.GetPreferencesRequest(principal_id=ALICE))
    assert empty.preferences == memory_pb2.Preferences()

    chosen = memory_pb2.Preferences(tone="concise", format="bullet_points", language="pt-BR")
    stored = await stub.SetPreferences(memory_pb2.SetPreferencesRequest(principal_id=ALICE, preferences=chosen))
    assert stored.preferences == chosen
    assert (await stub.GetPreferences(memory_pb2.GetPreferencesRequest(principal_id=ALICE))).preferences == chosen
    # Replaced as a whole: an omitted field is "no preference", not "keep the old one".
    only_tone = memory_pb2.Preferences(tone="formal")
    await stub.SetPreferences(memory_pb2.SetPreferencesRequest(principal_id=ALICE, preferences=only_tone))
    assert (await stub.GetPreferences(memory_pb2.GetPreferencesRequest(principal_id=ALICE))).preferences == only_tone
    # Nobody else's preferences changed, and nothing was written for them.
    other = await stub.GetPreferences(memory_pb2.GetPreferencesRequest(principal_id=BOB))
    assert other.preferences == memory_pb2.Preferences()

    bad = memory_pb2.Preferences(tone="sarcastic", format="pdf", language="English")
    error = await refused(
        stub.SetPreferences(memory_pb2.SetPreferencesRequest(principal_id=ALICE, preferences=bad)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert reason_of(error) == "INVALID_PREFERENCES"
    assert violated_fields(error) == ["preferences.tone", "preferences.format", "preferences.language"]
    assert (await stub.GetPreferences(memory_pb2.GetPreferencesRequest(principal_id=ALICE))).preferences == only_tone


async def test_export_and_erase_a_principals_data(stub: Stub, clock: Clock) -> None:
    first = (await create(stub)).session_id
    await append(stub, first, message("a"), message("b", role="assistant"))
    clock.advance(timedelta(minutes=1))
    second = (await create(stub)).session_id
    await append(stub, second, message("c"))
    expired = (await create(stub)).session_id
    bobs = (await create(stub, BOB)).session_id
    prefs = memory_pb2.Preferences(tone="friendly", language="en")
    await stub.SetPreferences(memory_pb2.SetPreferencesRequest(principal_id=ALICE, preferences=prefs))
    # Keep the first two alive and let the third expire.
    clock.advance(TTL - timedelta(minutes=2))
    await get(stub, first)
    await get(stub, second)
    await get(stub, bobs, BOB)
    clock.advance(timedelta(minutes=3))

    export = await stub.ExportPrincipalData(memory_pb2.ExportPrincipalDataRequest(principal_id=ALICE))
    assert [s.session_id for s in export.sessions] == [first, second]
    assert [contents(s) for s in export.sessions] == [[("user", "a"), ("assistant", "b")], [("user", "c")]]
    assert expired not in {s.session_id for s in export.sessions}
    assert export.preferences == prefs

    erased = await stub.DeletePrincipalData(memory_pb2.DeletePrincipalDataRequest(principal_id=ALICE))
    assert (erased.sessions_deleted, erased.preferences_deleted) == (3, True)  # the expired one too
    export = await stub.ExportPrincipalData(memory_pb2.ExportPrincipalDataRequest(principal_id=ALICE))
    assert (list(export.sessions), export.preferences) == ([], memory_pb2.Preferences())
    await refused(get(stub, first), grpc.StatusCode.NOT_FOUND)
    again = await stub.DeletePrincipalData(memory_pb2.DeletePrincipalDataRequest(principal_id=ALICE))
    assert (again.sessions_deleted, again.preferences_deleted) == (0, False)
    assert (await get(stub, bobs, BOB)).session_id == bobs  # another principal's data is untouched

    error = await refused(
        stub.ExportPrincipalData(memory_pb2.ExportPrincipalDataRequest(principal_id="")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violated_fields(error) == ["principal_id"]


async def until(condition: Callable[[], Awaitable[bool]], *, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if await condition():
                return
            await asyncio.sleep(0.02)


async def test_the_sweeper_deletes_expired_sessions_and_their_messages(
    migrated_url: str, tracer_provider: TracerProvider, clock: Clock
) -> None:
    app = await start_app(migrated_url, tracer_provider, clock, sweep_seconds=0.05)
    engine = create_database_engine(migrated_url, pool_size=1, tracer_provider=None)
    try:
        async with gate_channel(app.address) as channel:
            stub = memory_pb2_grpc.MemoryServiceStub(channel)
            doomed = (await create(stub)).session_id
            await append(stub, doomed, message("forget me"), message("ok", role="assistant"))
            clock.advance(TTL - timedelta(minutes=1))
            kept = (await create(stub)).session_id
            clock.advance(timedelta(minutes=1))  # the first has just expired; the second is live

            async def swept() -> bool:
                return app.registry.get_sample_value("memory_sessions_expired_total") == 1

            await until(swept)
            async with engine.connect() as connection:
                assert (await connection.execute(select(SessionRow.session_id))).scalars().all() == [kept]
                orphans = select(func.count()).select_from(SessionMessageRow)
                assert (await connection.execute(orphans)).scalar_one() == 0  # cascaded
            assert (await get(stub, kept)).session_id == kept
            assert app.registry.get_sample_value("memory_session_sweep_failures_total") == 0
    finally:
        await engine.dispose()
        await app.stop()
