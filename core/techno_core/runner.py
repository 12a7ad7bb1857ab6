"""Process entry point shared by every service: load settings, run the app until SIGTERM or SIGINT, stop it
gracefully. Start-up problems an operator can fix (bad configuration, a port in use, an unmigrated database)
end the process with one clear line and a non-zero status, never a traceback."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import uvloop
from pydantic import ValidationError
from pydantic_settings import BaseSettings

log = logging.getLogger(__name__)
Settings = TypeVar("Settings", bound=BaseSettings)

EXIT_CONFIG = 2
EXIT_STARTUP = 1

# Allocations between two young-generation collections (CPython's default is 700). A governed request allocates
# thousands of short-lived objects (protobuf wrappers, dicts, coroutines), so the default collected several times
# per request: the collector was 3-4 % of the gate's and the edge's CPU under load (py-spy, issue #12). Real
# reference cycles are rare in a request and wait at most this many allocations longer.
YOUNG_COLLECTION_THRESHOLD = 10_000


class StartupError(Exception):
    """The service cannot start for a reason its operator can fix; the message says what to do."""


class Runnable(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def load_settings(cls: type[Settings]) -> Settings:
    """The service's settings, or exit 2 naming each invalid variable."""
    try:
        return cls()
    except ValidationError as error:
        prefix = str(cls.model_config.get("env_prefix", ""))
        for problem in error.errors():
            variable = prefix + "_".join(str(part) for part in problem["loc"]).upper()
            print(f"invalid configuration: {variable}: {problem['msg']}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)


async def run_until_signalled(app: Runnable) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    reload = getattr(app, "reload", None)
    reloads: set[asyncio.Task[None]] = set()
    if reload is not None:  # SIGHUP re-reads configuration (e.g. the gate's policy) without a restart

        def on_hangup() -> None:
            task = loop.create_task(reload())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, on_hangup)
    try:
        await app.start()
    except BaseException:
        await app.stop()  # release whatever was already bound or opened
        raise
    tune_garbage_collector()
    await stop.wait()
    await app.stop()


def tune_garbage_collector() -> None:
    """Called once the service has started. ``gc.freeze`` moves everything start-up made (modules, descriptors,
    settings, channels: most of the heap, all of it long-lived) out of the collector's reach, so an older-generation
    collection walks only what serving made since; then young collections run less often
    (``YOUNG_COLLECTION_THRESHOLD``). Collection stays on: cycles are still freed."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, old)


def run(build: Callable[[], Awaitable[Runnable]]) -> int:
    """Run the app ``build`` makes (the service's composition root; it runs inside the event loop so it may open
    channels). Returns the process exit status.

    Every service runs on uvloop: its callbacks, timers and sockets cost less CPU per request than asyncio's own
    loop, and grpc.aio runs on it (the integration suite's uvloop tests make full calls on it)."""

    async def main() -> None:
        await run_until_signalled(await build())

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    except StartupError as error:
        log.error("cannot start: %s", error)
        return EXIT_STARTUP
    except Exception:  # a bug, not an operator's mistake: keep the traceback, as one JSON log line
        log.critical("crashed", exc_info=True)
        return EXIT_STARTUP
    return 0
