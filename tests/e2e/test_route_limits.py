"""Every authenticated REST route goes through the caller's limits (issue #11, item 4): with the ``tiny`` profile
(five at once, then one a minute), the sixth call of any route family is 429 ``RATE_LIMITED`` with
``Retry-After`` and the limit named, and each family has its own budget, so exhausting one leaves the others."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.rest_errors import quota_violations_of, reasons_of

from .conftest import RunningStack
from .support import SUMMARIZE, error_of

pytestmark = pytest.mark.asyncio(loop_scope="session")

PERSONAL = [
    ("POST", "/v1/sessions", {}),
    ("PUT", "/v1/preferences", {"tone": "formal"}),
    ("GET", "/v1/preferences", None),
    ("GET", "/v1/me/data", None),
    ("DELETE", "/v1/me/data", None),
]
ADMIN = [
    ("GET", "/v1/admin/keys", None),
    ("GET", "/v1/audit/events", None),
    ("POST", "/v1/process:dryRun", {"request": SUMMARIZE}),
    ("GET", "/v1/admin/breakers", None),
]


async def call(client: httpx.AsyncClient, key: str, route: tuple[str, str, dict[str, Any] | None]) -> httpx.Response:
    method, path, body = route
    return await client.request(method, path, json=body, headers={"X-API-Key": key})


def assert_rate_limited(response: httpx.Response, subject: str) -> None:
    assert response.status_code == 429, response.text
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    error = error_of(response)
    assert reasons_of(error) == ["RATE_LIMITED"]
    assert quota_violations_of(error)[0]["subject"] == subject


@pytest.mark.parametrize("route", PERSONAL, ids=lambda route: f"{route[0]} {route[1]}")
async def test_a_personal_route_is_rate_limited_on_its_own_budget(
    client: httpx.AsyncClient, running_stack: RunningStack, route: tuple[str, str, dict[str, Any] | None]
) -> None:
    key_id, key = await running_stack.create_known_key("tiny")
    statuses = [(await call(client, key, route)).status_code for _ in range(5)]
    assert statuses == [200] * 5
    assert_rate_limited(await call(client, key, route), f"key:{key_id}/personal/requests_per_minute")
    # The personal routes share one budget, and processing has its own.
    assert (await call(client, key, PERSONAL[2])).status_code == 429
    processed = await client.post("/v1/process", json=SUMMARIZE, headers={"X-API-Key": key})
    assert processed.status_code == 200, processed.text


async def test_the_action_catalogue_is_rate_limited(client: httpx.AsyncClient, running_stack: RunningStack) -> None:
    key_id, key = await running_stack.create_known_key("tiny")  # its wait read /v1/actions once
    statuses = [(await client.get("/v1/actions", headers={"X-API-Key": key})).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 200, 429]
    assert_rate_limited(
        await client.get("/v1/actions", headers={"X-API-Key": key}), f"key:{key_id}/catalog/requests_per_minute"
    )


@pytest.mark.parametrize("route", ADMIN, ids=lambda route: f"{route[0]} {route[1]}")
async def test_admin_and_audit_routes_are_rate_limited(
    client: httpx.AsyncClient, running_stack: RunningStack, route: tuple[str, str, dict[str, Any] | None]
) -> None:
    key_id, key = await running_stack.create_known_key(
        "tiny", "--scope", "admin", "--scope", "audit:read", "--scope", "process"
    )
    statuses = [(await call(client, key, route)).status_code for _ in range(5)]
    assert statuses == [200] * 5, statuses
    assert_rate_limited(await call(client, key, route), f"key:{key_id}/admin/requests_per_minute")
    assert (await call(client, key, PERSONAL[2])).status_code == 200  # another family's budget is untouched
