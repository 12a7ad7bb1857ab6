"""``python -m techno_edge``: run the edge until SIGTERM."""

from __future__ import annotations

import asyncio
import sys

import uvloop

from techno_core.logging import configure_logging
from techno_core.runner import load_settings, run
from techno_edge.bootstrap import bootstrap
from techno_edge.settings import EdgeSettings


def main() -> int:
    settings = load_settings(EdgeSettings)
    configure_logging("edge", settings.log_level)
    # uvloop: grpc.aio works on it (checked: the integration suite's uvloop test runs a full call on it) and it
    # speeds up the HTTP side. The shared runner calls asyncio.run(), which on Python 3.11 takes its loop from the
    # policy, so the policy is the one place to choose the loop without changing techno_core.
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return run(lambda: bootstrap(settings))


if __name__ == "__main__":
    sys.exit(main())
