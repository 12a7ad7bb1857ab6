"""Helpers shared by the end-to-end tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from techno_stack.stack import Ports, Stack, StackConfig
from tests.waiting import eventually as eventually  # the e2e tests' one way to await a condition

POLICY = Path(__file__).with_name("policy.yaml")

SUMMARIZE = {"action": "summarize", "contextId": "e2e", "payload": {"text": "Techno governs every AI action."}}


def error_of(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()["error"]
    return body


@asynccontextmanager
async def started_stack(
    state_dir: Path,
    database_url: str,
    *,
    policy_file: Path = POLICY,
    replicas: Mapping[str, int] | None = None,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[Stack]:
    """The stack as processes on free ports, against ``database_url`` and enforcing ``policy_file``, with the
    test's own ``replicas`` and environment (``env``); stopped on leaving."""
    config = StackConfig(
        state_dir=state_dir,
        ports=Ports.free(),
        database_url=database_url,
        replicas=dict(replicas or {}),
        extra_env={"TECHNO_GATE_POLICY_FILE": str(policy_file), **(env or {})},
    )
    stack = Stack(config)
    await stack.start()
    try:
        yield stack
    finally:
        await stack.stop()
