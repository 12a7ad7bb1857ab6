"""Helpers of the live observability test: query Prometheus, read the queries out of the Grafana dashboards and
the runbook, and drive the kinds of traffic the dashboards show."""

from __future__ import annotations

import re
import textwrap
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from techno_stack.stack import ROOT
from tests.sse_events import EventReader

from ..dashboard_queries import PanelQuery, substitute
from .support import SUMMARIZE

RUNBOOK = ROOT / "docs" / "runbook.md"

_PROMQL_BLOCK = re.compile(r"^[ \t]*```promql[ \t]*\n(.*?)^[ \t]*```", re.MULTILINE | re.DOTALL)


def runbook_queries(path: Path = RUNBOOK) -> list[str]:
    """Every fenced ```promql block of the runbook, each one query."""
    return [substitute(textwrap.dedent(block).strip()) for block in _PROMQL_BLOCK.findall(path.read_text())]


class Prometheus:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def query(self, expr: str) -> dict[str, Any]:
        """The whole API answer (``status``, ``data`` or ``error``), whatever the status."""
        response = await self._client.get("/api/v1/query", params={"query": expr})
        answer: dict[str, Any] = response.json()
        return answer

    async def result(self, expr: str) -> list[dict[str, Any]]:
        answer = await self.query(expr)
        if answer.get("status") != "success":
            raise AssertionError(f"{expr}: {answer.get('errorType')}: {answer.get('error')}")
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    async def exemplars(self, expr: str, *, since: float) -> list[dict[str, Any]]:
        """Exemplars of the series ``expr`` selects, stored since the Unix time ``since``, one per series/bucket
        (``seriesLabels``, ``exemplars``)."""
        params = {"query": expr, "start": str(since), "end": str(time.time() + 1)}
        response = await self._client.get("/api/v1/query_exemplars", params=params)
        answer: dict[str, Any] = response.json()
        if answer.get("status") != "success":
            raise AssertionError(f"exemplars of {expr}: {answer.get('errorType')}: {answer.get('error')}")
        found: list[dict[str, Any]] = answer["data"]
        return found

    async def targets(self) -> list[dict[str, Any]]:
        response = await self._client.get("/api/v1/targets", params={"state": "active"})
        targets: list[dict[str, Any]] = response.json()["data"]["activeTargets"]
        return targets

    async def rules(self) -> list[dict[str, Any]]:
        response = await self._client.get("/api/v1/rules")
        return [rule for group in response.json()["data"]["groups"] for rule in group["rules"]]


@dataclass
class Clients:
    """The edge with the admin key, and a key of the ``tiny`` profile (five requests, then one a minute)."""

    edge: httpx.AsyncClient
    admin: dict[str, str]
    tiny: dict[str, str]

    async def process(self, headers: dict[str, str] | None = None, **changes: Any) -> httpx.Response:
        return await self.edge.post("/v1/process", json={**SUMMARIZE, **changes}, headers=headers or self.admin)

    async def stream(self) -> list[str]:
        """One streamed answer through the edge (``POST /v1/process:stream`` as Server-Sent Events), read to its
        end; the names of its events."""
        headers = {**self.admin, "Accept": "text/event-stream"}
        async with self.edge.stream("POST", "/v1/process:stream", json=SUMMARIZE, headers=headers) as response:
            assert response.status_code == 200, await response.aread()
            assert response.headers["content-type"] == "text/event-stream"
            return [event.name for event in await EventReader(response.aiter_lines()).rest()]

    async def breaker_state(self, provider: str = "fake") -> str:
        response = await self.edge.get("/v1/admin/breakers", headers=self.admin)
        assert response.status_code == 200, response.text
        state: str = next(b for b in response.json()["breakers"] if b["provider"] == provider)["state"]
        return state

    async def set_faults(self, **faults: Any) -> None:
        response = await self.edge.post("/v1/admin/providers/fake/faults", json=faults, headers=self.admin)
        assert response.status_code == 200, response.text


async def drive_traffic(clients: Clients) -> None:
    """Successes, a streamed answer, denials, a rate-limit rejection, a two-turn chat in a session and lookups
    that miss, so every service counts OK and non-OK RPCs (unary and streaming), decisions of both outcomes and a
    limit rejection, and the provider's streams have a time to first token, a duration and a result."""
    for _ in range(5):
        assert (await clients.process()).status_code == 200
    events = await clients.stream()
    assert events[-1:] == ["done"], events
    assert "chunk" in events, events
    assert (await clients.process(action="no-such-action")).status_code in (400, 403, 404)
    assert (await clients.process(headers={"X-API-Key": "not-a-key"})).status_code == 401
    statuses = [(await clients.process(headers=clients.tiny)).status_code for _ in range(7)]
    assert 429 in statuses, statuses
    session = await clients.edge.post("/v1/sessions", json={}, headers=clients.admin)
    assert session.status_code == 200, session.text
    session_id = session.json()["session"]["sessionId"]
    for message in ("My name is Ada.", "What is my name?"):
        chat = {
            "action": "chat",
            "contextId": "observability",
            "sessionId": session_id,
            "payload": {"message": message},
        }
        assert (await clients.process(**chat)).status_code == 200
    assert (await clients.edge.get(f"/v1/sessions/{session_id}", headers=clients.admin)).status_code == 200
    missing = await clients.edge.get(f"/v1/sessions/{uuid.uuid4()}", headers=clients.admin)
    assert missing.status_code == 404, missing.text


async def panels_without_data(prometheus: Prometheus, queries: list[PanelQuery]) -> list[str]:
    offenders = []
    for query in queries:
        answer = await prometheus.query(query.expr)
        if answer.get("status") != "success":
            offenders.append(f"{query} -> {answer.get('errorType')}: {answer.get('error')}")
        elif not answer["data"]["result"]:
            offenders.append(f"{query} -> no data")
    return offenders
