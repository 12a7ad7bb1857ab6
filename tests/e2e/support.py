"""Helpers shared by the end-to-end tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

SUMMARIZE = {"action": "summarize", "contextId": "e2e", "payload": {"text": "Techno governs every AI action."}}


async def eventually(check: Callable[[], Awaitable[bool]], *, within: float = 10.0) -> None:
    """Await a condition, polling; fails with the time it waited."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within}s")
        await asyncio.sleep(0.05)


def error_of(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()["error"]
    return body
