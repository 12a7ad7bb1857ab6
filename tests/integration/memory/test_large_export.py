"""A privacy export always works, however much a person has kept (issue #11, item 5): ExportPrincipalData pages,
each page well inside the gRPC message limit, so a history above 4 MB is exported whole over a channel with the
default limits, on SQLite and PostgreSQL."""

from __future__ import annotations

from techno.memory.v1 import memory_pb2, memory_pb2_grpc

PERSON = "key_large_history"
SESSIONS, MESSAGES, LENGTH = 14, 4, 100_000  # 5.6 MB of message content: above gRPC's default 4 MB


def content(session: int, message: int) -> str:
    return f"{session}:{message}:".ljust(LENGTH, "x")


async def keep_a_large_history(stub: memory_pb2_grpc.MemoryServiceStub, principal_id: str) -> list[str]:
    session_ids = []
    for session in range(SESSIONS):
        created = await stub.CreateSession(memory_pb2.CreateSessionRequest(principal_id=principal_id), timeout=10)
        session_id = created.session.session_id
        messages = [
            memory_pb2.SessionMessage(role="user" if m % 2 == 0 else "assistant", content=content(session, m))
            for m in range(MESSAGES)
        ]
        await stub.AppendSessionMessages(
            memory_pb2.AppendSessionMessagesRequest(
                principal_id=principal_id, session_id=session_id, messages=messages
            ),
            timeout=10,
        )
        session_ids.append(session_id)
    return session_ids


async def test_an_export_above_the_message_limit_comes_in_pages(stub: memory_pb2_grpc.MemoryServiceStub) -> None:
    session_ids = await keep_a_large_history(stub, PERSON)
    exported: dict[str, list[str]] = {}
    token, pages = "", 0
    while True:
        page = await stub.ExportPrincipalData(
            memory_pb2.ExportPrincipalDataRequest(principal_id=PERSON, page_token=token), timeout=30
        )
        pages += 1
        assert page.ByteSize() < 4 * 1024 * 1024
        for session in page.sessions:  # a session larger than a page continues on the next one
            exported.setdefault(session.session_id, []).extend(m.content for m in session.messages)
        token = page.next_page_token
        if not token:
            break
    assert pages > 1
    assert list(exported) == session_ids
    for index, session_id in enumerate(session_ids):
        assert exported[session_id] == [content(index, m) for m in range(MESSAGES)]
