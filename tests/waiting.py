"""Awaiting a condition in a test, instead of sleeping for a fixed time."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

import pytest


async def eventually(check: Callable[[], bool | Awaitable[bool]], *, within: float = 10.0, every: float = 0.05) -> None:
    """Poll ``check`` (a plain or an async condition) until it holds; fail with how long it waited."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if await result if inspect.isawaitable(result) else result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within} s")
        await asyncio.sleep(every)
