"""``python -m techno_edge``: run the edge until SIGTERM."""

from __future__ import annotations

import sys

from techno_core.logging import configure_logging
from techno_core.runner import load_settings, run
from techno_edge.bootstrap import bootstrap
from techno_edge.settings import EdgeSettings


def main() -> int:
    settings = load_settings(EdgeSettings)
    configure_logging("edge", settings.log_level)
    return run(lambda: bootstrap(settings))


if __name__ == "__main__":
    sys.exit(main())
