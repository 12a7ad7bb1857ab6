"""Reading the audit trail over REST (GET /v1/audit/events, the audit:read scope), answered from PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.rest_errors import reasons_of, trace_id_of

from .conftest import RunningStack
from .support import error_of

pytestmark = pytest.mark.asyncio(loop_scope="session")

SUMMARIZE = {"action": "summarize", "contextId": "e2e-audit", "payload": {"text": "Audit me."}}


async def list_events(client: httpx.AsyncClient, key: str, **params: Any) -> httpx.Response:
    return await client.get("/v1/audit/events", params=params, headers={"X-API-Key": key})


async def test_pages_walk_a_principals_events_once_each_in_order(
    client: httpx.AsyncClient, running_stack: RunningStack
) -> None:
    key_id, secret = await running_stack.create_known_key("default")
    traces = []
    for _ in range(5):
        reply = await client.post("/v1/process", json=SUMMARIZE, headers={"X-API-Key": secret})
        assert reply.status_code == 200, reply.text
        traces.append(reply.json()["traceId"])

    seen: list[dict[str, Any]] = []
    token, pages = "", 0
    while True:
        page = await list_events(client, running_stack.key, principalId=key_id, pageSize=3, pageToken=token)
        assert page.status_code == 200, page.text
        seen.extend(page.json()["events"])
        token, pages = page.json()["nextPageToken"], pages + 1
        if not token:
            break
    assert pages == 4  # 10 events, 3 a page
    assert len({e["eventId"] for e in seen}) == len(seen) == 10
    assert [e["traceId"] for e in seen[::2]] == traces, "oldest first: each trace's decision, then its outcome"
    assert [e["kind"] for e in seen[:2]] == ["DECISION", "OUTCOME"]
    assert seen[0]["attributes"]["policy_version"]
    assert seen[0]["reasonCodes"] == ["ALLOWED"]
    recorded = [e["recordedAt"] for e in seen]
    assert recorded == sorted(recorded)


async def test_filters_by_trace_and_by_time_range(client: httpx.AsyncClient, running_stack: RunningStack) -> None:
    key_id, secret = await running_stack.create_known_key("default")
    before = datetime.now(UTC) - timedelta(seconds=1)
    reply = await client.post("/v1/process", json=SUMMARIZE, headers={"X-API-Key": secret})
    trace_id = reply.json()["traceId"]
    after = datetime.now(UTC) + timedelta(seconds=1)

    by_trace = (await list_events(client, running_stack.key, traceId=trace_id)).json()["events"]
    assert {e["traceId"] for e in by_trace} == {trace_id}
    assert len(by_trace) == 2

    def window(start: datetime, end: datetime) -> dict[str, str]:
        return {"principalId": key_id, "startTime": start.isoformat(), "endTime": end.isoformat()}

    inside = (await list_events(client, running_stack.key, **window(before, after))).json()["events"]
    assert len(inside) == 2
    later = (await list_events(client, running_stack.key, **window(after, after + timedelta(hours=1)))).json()
    assert later["events"] == []


async def test_reading_needs_the_audit_read_scope(client: httpx.AsyncClient, running_stack: RunningStack) -> None:
    _, process_only = await running_stack.create_known_key("default")
    refused = await list_events(client, process_only)
    assert refused.status_code == 403, refused.text
    assert reasons_of(error_of(refused)) == ["SCOPE_MISSING"]

    _, auditor = await running_stack.create_known_key("default", "--scope", "audit:read")
    assert (await list_events(client, auditor, pageSize=1)).status_code == 200


async def test_bad_queries_get_clear_errors(client: httpx.AsyncClient, running_stack: RunningStack) -> None:
    garbled = await list_events(client, running_stack.key, pageToken="not-a-token")
    assert garbled.status_code == 400, garbled.text
    assert reasons_of(error_of(garbled)) == ["INVALID_PAGE_TOKEN"]
    assert trace_id_of(error_of(garbled))

    first = (await list_events(client, running_stack.key, pageSize=1)).json()
    other_filters = await list_events(
        client, running_stack.key, pageSize=1, pageToken=first["nextPageToken"], traceId="0" * 32
    )
    assert other_filters.status_code == 400, "a token is only valid with the filters it was issued for"

    for bad in ({"traceId": "nope"}, {"pageSize": -1}, {"startTime": "yesterday"}):
        reply = await list_events(client, running_stack.key, **bad)
        assert reply.status_code == 400, (bad, reply.text)
