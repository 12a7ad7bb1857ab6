"""Operating keys safely (issue #11, item 12): an admin key does not revoke itself by accident, an empty scope
list is refused rather than read as ``process``, and ``make run``'s development key is in no log."""

from __future__ import annotations

import stat

import httpx
import pytest

from tests.rest_errors import field_violations_of, reasons_of

from .conftest import RunningStack
from .support import error_of, eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_an_admin_key_revokes_itself_only_when_forced(
    client: httpx.AsyncClient, running_stack: RunningStack
) -> None:
    key_id, key = await running_stack.create_known_key("default", "--scope", "admin")
    headers = {"X-API-Key": key}
    refused = await client.post(f"/v1/admin/keys/{key_id}:revoke", json={}, headers=headers)
    assert refused.status_code == 400, refused.text
    error = error_of(refused)
    assert error["status"] == "FAILED_PRECONDITION"
    assert reasons_of(error) == ["SELF_REVOCATION"]
    assert (await client.get("/v1/admin/keys", headers=headers)).status_code == 200  # still works

    revoked = await client.post(f"/v1/admin/keys/{key_id}:revoke", json={"force": True}, headers=headers)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["apiKey"]["revokedAt"]

    async def refused_now() -> bool:
        return (await client.get("/v1/admin/keys", headers=headers)).status_code == 401

    await eventually(refused_now)


async def test_revoking_another_key_needs_no_force(client: httpx.AsyncClient, running_stack: RunningStack) -> None:
    other_id, _ = await running_stack.create_key("default")
    admin = {"X-API-Key": running_stack.key}
    revoked = await client.post(f"/v1/admin/keys/{other_id}:revoke", json={}, headers=admin)
    assert revoked.status_code == 200, revoked.text


async def test_an_empty_scope_list_is_refused(client: httpx.AsyncClient, running_stack: RunningStack) -> None:
    admin = {"X-API-Key": running_stack.key}
    for body in ({"name": "no-scopes", "scopes": []}, {"name": "no-scopes"}):
        refused = await client.post("/v1/admin/keys", json=body, headers=admin)
        assert refused.status_code == 400, refused.text
        error = error_of(refused)
        assert reasons_of(error) == ["INVALID_ARGUMENT"]
        assert [v["field"] for v in field_violations_of(error)] == ["scopes"]
    created = await client.post("/v1/admin/keys", json={"name": "reader", "scopes": ["audit:read"]}, headers=admin)
    assert created.status_code == 200, created.text
    assert created.json()["apiKey"]["scopes"] == ["audit:read"]


async def test_the_development_key_is_in_no_log_and_logs_are_private(running_stack: RunningStack) -> None:
    log_dir = running_stack.stack.config.log_dir
    assert stat.S_IMODE(log_dir.stat().st_mode) == 0o700
    logs = sorted(log_dir.glob("*.log"))
    assert any(log.name == "create-key.log" for log in logs)
    for log in logs:
        assert running_stack.key not in log.read_text(errors="replace"), log
        assert stat.S_IMODE(log.stat().st_mode) == 0o600, log
