"""Process entry point shared by every service: run an app until SIGTERM or SIGINT, then stop it gracefully."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Protocol

log = logging.getLogger(__name__)


class Runnable(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def run_until_signalled(app: Runnable) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await app.start()
    await stop.wait()
    await app.stop()


def run(build: Callable[[], Awaitable[Runnable]]) -> None:
    """``build`` is the service's composition root; it runs inside the event loop so it may open channels."""

    async def main() -> None:
        await run_until_signalled(await build())

    asyncio.run(main())
