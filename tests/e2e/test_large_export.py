"""A privacy export always works (issue #11, item 5): a person with more than 4 MB of history gets all of it
from ``GET /v1/me/data``, page by page (``pageToken``), never 429 ``MEMORY_UNAVAILABLE``."""

from __future__ import annotations

import httpx
import pytest

from techno.memory.v1 import memory_pb2_grpc
from techno_core.identity import Identity

from ..integration.memory.test_large_export import MESSAGES, content, keep_a_large_history
from .conftest import RunningStack

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_history_above_4_mb_is_exported_whole(client: httpx.AsyncClient, running_stack: RunningStack) -> None:
    key_id, key = await running_stack.create_known_key("default")
    async with running_stack.connect(Identity.MEMORY, as_=Identity.GATE) as channel:  # as the executor's chats do
        session_ids = await keep_a_large_history(memory_pb2_grpc.MemoryServiceStub(channel), key_id)
    exported: dict[str, list[str]] = {}
    params: dict[str, str] = {}
    pages = 0
    while True:
        page = await client.get("/v1/me/data", params=params, headers={"X-API-Key": key}, timeout=30)
        assert page.status_code == 200, page.text[:500]
        pages += 1
        body = page.json()
        for session in body.get("sessions", []):
            exported.setdefault(session["sessionId"], []).extend(m["content"] for m in session.get("messages", []))
        token = body.get("nextPageToken", "")
        if not token:
            break
        params = {"pageToken": token}
    assert pages > 1
    assert list(exported) == session_ids
    for index, session_id in enumerate(session_ids):
        assert exported[session_id] == [content(index, m) for m in range(MESSAGES)]
