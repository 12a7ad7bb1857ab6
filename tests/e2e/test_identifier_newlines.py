"""Issue #11, item 7, over REST: an identifier with a trailing newline is a 400 naming the field, never granted by
a ``public-*`` context rule, and nothing runs: the trail holds the DENY decision (which records what was sent,
control characters escaped) and no ALLOW decision or outcome."""

from __future__ import annotations

import httpx
import pytest

from tests.rest_errors import field_violations_of, reasons_of, trace_id_of

from .conftest import RunningStack

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _events(client: httpx.AsyncClient, stack: RunningStack, trace_id: str) -> list[dict[str, object]]:
    response = await client.get("/v1/audit/events", params={"traceId": trace_id}, headers={"X-API-Key": stack.key})
    assert response.status_code == 200, response.text
    events: list[dict[str, object]] = response.json()["events"]
    return events


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("contextId", "public-x\n"),
        ("contextId", "public-x\r\n"),
        ("sessionId", "abc\n"),
        ("action", "summarize\n"),
        ("contextId", "public-\u0000"),  # a NUL cannot be stored in PostgreSQL: the DENY records it escaped
    ],
)
async def test_a_trailing_newline_is_400_for_the_restricted_profile_and_not_stored(
    running_stack: RunningStack, client: httpx.AsyncClient, field: str, value: str
) -> None:
    _, key = await running_stack.create_known_key("restricted")
    body = {"action": "summarize", "contextId": "public-x", "payload": {"text": "hello"}, field: value}
    response = await client.post("/v1/process", json=body, headers={"X-API-Key": key})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert reasons_of(error) == ["INVALID_ARGUMENT"]
    snake = {"contextId": "context_id", "sessionId": "session_id", "action": "action"}[field]
    assert [v["field"] for v in field_violations_of(error)] == [snake]
    events = await _events(client, running_stack, trace_id_of(error))
    assert [(event["kind"], event["result"]) for event in events] == [("DECISION", "DENY")]
    if field != "sessionId":  # the record keeps what was sent, with control characters escaped
        recorded = events[0]["action" if field == "action" else "contextId"]
        assert recorded == value.replace("\n", "\\x0a").replace("\r", "\\x0d").replace("\u0000", "\\x00")
