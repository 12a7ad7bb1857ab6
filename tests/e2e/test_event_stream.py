"""Streaming over REST through the whole stack: ``POST /v1/process:stream`` as Server-Sent Events from the edge,
the gate's governed StreamProcess behind it and the executor's fake provider streaming in pieces; the audit trail
records how each stream ended."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from techno_stack.stack import Stack
from tests.rest_errors import reasons_of, trace_id_of
from tests.sse_events import WAIT, Event, EventReader

from .conftest import RunningStack
from .support import eventually, started_stack

pytestmark = pytest.mark.asyncio(loop_scope="session")

STREAM = "/v1/process:stream"
# Long enough for the fake provider to answer in several pieces (16 characters each by default).
MESSAGE = "Tell me, in a few sentences, how a governed AI gateway decides, records and then runs every action."


async def audit_events(client: httpx.AsyncClient, key: str, trace_id: str) -> list[dict[str, Any]]:
    page = await client.get("/v1/audit/events", params={"traceId": trace_id}, headers={"X-API-Key": key})
    assert page.status_code == 200, page.text
    events: list[dict[str, Any]] = page.json()["events"]
    return events


async def outcome_of(client: httpx.AsyncClient, key: str, trace_id: str) -> str | None:
    events = await audit_events(client, key, trace_id)
    return next((event["result"] for event in events if event["kind"] == "OUTCOME"), None)


async def eventually_outcome(client: httpx.AsyncClient, key: str, trace_id: str, result: str) -> None:
    async def recorded() -> bool:  # the OUTCOME is written as the stream ends, maybe after its last byte
        return await outcome_of(client, key, trace_id) == result

    await eventually(recorded)


async def test_a_streamed_chat_arrives_in_chunks_before_its_done_event(
    client: httpx.AsyncClient, running_stack: RunningStack
) -> None:
    headers = {"X-API-Key": running_stack.key}
    session = (await client.post("/v1/sessions", json={}, headers=headers)).json()["session"]["sessionId"]
    request = {"action": "chat", "contextId": "e2e", "sessionId": session, "payload": {"message": MESSAGE}}
    async with client.stream("POST", STREAM, json=request, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"] == "text/event-stream"
        trace_id = response.headers["x-trace-id"]
        events = await EventReader(response.aiter_lines()).rest()

    names = [event.name for event in events]
    assert names.count("chunk") > 1, names  # streamed in pieces, not one answer at the end
    assert names == ["chunk"] * (len(names) - 1) + ["done"]
    assert {event.json()["traceId"] for event in events} == {trace_id}
    done = events[-1].json()["done"]
    text = "".join(event.json()["chunk"]["text"] for event in events[:-1])
    assert text in {str(value) for value in done["result"].values()}  # the pieces add up to the answer
    assert done["usage"]["outputTokens"] > 0
    await eventually_outcome(client, running_stack.key, trace_id, "SUCCEEDED")


async def test_a_refused_stream_is_a_plain_http_error(client: httpx.AsyncClient, running_stack: RunningStack) -> None:
    request = {"action": "premium", "contextId": "e2e", "payload": {"text": "hi"}}  # its provider is not allowed
    response = await client.post(STREAM, json=request, headers={"X-API-Key": running_stack.key})
    assert response.status_code == 403
    error = response.json()["error"]
    assert reasons_of(error) == ["PROVIDER_NOT_ALLOWED"]
    assert trace_id_of(error) == response.headers["x-trace-id"]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def slow_stack(
    create_postgres_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    """A stack whose fake provider streams 4 characters every 0.2 s and fails every stream after 3 pieces."""
    env = {
        "TECHNO_FAKE_STREAM_CHUNK_CHARS": "4",
        "TECHNO_FAKE_STREAM_CHUNK_DELAY_MS": "200",
        "TECHNO_FAKE_STREAM_FAULT_AFTER_CHUNKS": "3",
        "TECHNO_FAKE_ERROR_RATE": "1",
    }
    async with started_stack(tmp_path_factory.mktemp("sse-slow"), create_postgres_database(), env=env) as stack:
        yield stack


def key_of(stack: Stack) -> str:
    return Path(stack.config.key_file).read_text().strip()


@pytest_asyncio.fixture(loop_scope="session")
async def slow(slow_stack: Stack) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    key = key_of(slow_stack)
    async with httpx.AsyncClient(base_url=slow_stack.edge_url, timeout=10, headers={"X-API-Key": key}) as client:
        yield client, key


SUMMARIZE = {"action": "summarize", "contextId": "e2e", "payload": {"text": MESSAGE}}


async def test_leaving_a_stream_cancels_it_and_the_audit_says_so(slow: tuple[httpx.AsyncClient, str]) -> None:
    client, key = slow
    async with client.stream("POST", STREAM, json=SUMMARIZE) as response:
        assert response.status_code == 200
        first = await asyncio.wait_for(EventReader(response.aiter_lines()).next(), WAIT)
        trace_id = response.headers["x-trace-id"]
    # Left after the first of three pieces (0.2 s apart): the connection is closed, the gate call cancelled.
    assert isinstance(first, Event)
    assert first.name == "chunk"
    await eventually_outcome(client, key, trace_id, "CANCELLED")


async def test_a_failure_mid_stream_is_an_error_event_after_the_first_chunks(
    slow: tuple[httpx.AsyncClient, str],
) -> None:
    client, key = slow
    async with client.stream("POST", STREAM, json=SUMMARIZE) as response:
        assert response.status_code == 200
        trace_id = response.headers["x-trace-id"]
        events = await EventReader(response.aiter_lines()).rest()
    assert [event.name for event in events] == ["chunk"] * 3 + ["error"]
    # This stack records no spans: the trace still runs from the edge through the gate (lean trace context).
    assert {event.json()["traceId"] for event in events[:-1]} == {trace_id}
    error = events[-1].json()["error"]
    assert error["code"] >= 500
    assert reasons_of(error)
    assert trace_id_of(error) == trace_id
    await eventually_outcome(client, key, trace_id, "FAILED")
