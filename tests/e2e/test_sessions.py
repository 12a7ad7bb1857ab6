"""Sessions and preferences end to end through REST: a two-turn chat remembers, preferences shape the
prompt's answers' context, nobody sees another caller's session, export and erasure work."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.rest_errors import field_violations_of, reasons_of

from .conftest import RunningStack
from .support import SUMMARIZE, error_of

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_chat_session_remembers_its_turns(client: httpx.AsyncClient, running_stack: RunningStack) -> None:
    headers = {"X-API-Key": running_stack.key}
    created = await client.post("/v1/sessions", json={}, headers=headers)
    assert created.status_code == 200, created.text
    session_id = created.json()["session"]["sessionId"]

    for message in ("My name is Ada.", "What is my name?"):
        request = {"action": "chat", "contextId": "e2e", "sessionId": session_id, "payload": {"message": message}}
        answer = await client.post("/v1/process", json=request, headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.json()["result"]["reply"]

    session = (await client.get(f"/v1/sessions/{session_id}", headers=headers)).json()["session"]
    turns = [(m["role"], m["content"]) for m in session["messages"]]
    assert turns[0] == ("user", "My name is Ada.")
    assert turns[2] == ("user", "What is my name?")
    assert [role for role, _ in turns] == ["user", "assistant", "user", "assistant"]


async def test_a_session_is_private_to_its_caller(client: httpx.AsyncClient, running_stack: RunningStack) -> None:
    mine = (await client.post("/v1/sessions", json={}, headers={"X-API-Key": running_stack.key})).json()
    _, other_key = await running_stack.create_known_key("default")
    other = {"X-API-Key": other_key}
    response = await client.get(f"/v1/sessions/{mine['session']['sessionId']}", headers=other)
    assert response.status_code == 404
    chat = {
        "action": "chat",
        "contextId": "e2e",
        "sessionId": mine["session"]["sessionId"],
        "payload": {"message": "let me in"},
    }
    refused = await client.post("/v1/process", json=chat, headers=other)
    assert refused.status_code == 404
    assert reasons_of(error_of(refused)) == ["SESSION_NOT_FOUND"]


async def test_preferences_are_explicit_validated_exported_and_erased(
    client: httpx.AsyncClient, running_stack: RunningStack
) -> None:
    _, key = await running_stack.create_known_key("default")
    headers = {"X-API-Key": key}
    assert (await client.get("/v1/preferences", headers=headers)).json()["preferences"] == {
        "tone": "",
        "format": "",
        "language": "",
    }
    wanted = {"tone": "formal", "format": "bullet_points", "language": "pt-BR"}
    stored = await client.put("/v1/preferences", json=wanted, headers=headers)
    assert stored.status_code == 200, stored.text
    assert stored.json()["preferences"] == wanted
    bad = await client.put("/v1/preferences", json={"tone": "sarcastic"}, headers=headers)
    assert bad.status_code == 400
    assert "tone" in field_violations_of(error_of(bad))[0]["field"]

    await client.post("/v1/sessions", json={}, headers=headers)
    idempotency_key = str(uuid.uuid4())  # the gate keeps this request's full response for repeats
    processed = await client.post(
        "/v1/process", json=SUMMARIZE, headers={**headers, "Idempotency-Key": idempotency_key}
    )
    assert processed.status_code == 200, processed.text
    exported = (await client.get("/v1/me/data", headers=headers)).json()
    assert exported["preferences"] == wanted
    assert len(exported["sessions"]) == 1
    [record] = exported["idempotencyRecords"]
    assert record["idempotencyKey"] == idempotency_key
    assert record["response"]["result"] == processed.json()["result"]

    erased = (await client.delete("/v1/me/data", headers=headers)).json()
    assert erased == {"sessionsDeleted": 1, "preferencesDeleted": True, "idempotencyRecordsDeleted": 1}
    after = (await client.get("/v1/me/data", headers=headers)).json()
    assert after.get("sessions", []) == []
    assert after.get("idempotencyRecords", []) == []
    assert after["preferences"] == {"tone": "", "format": "", "language": ""}
