"""``python -m techno_executor``: run the executor until SIGTERM."""

from __future__ import annotations

import sys

from techno_core.logging import configure_logging
from techno_core.runner import load_settings, run
from techno_executor.bootstrap import bootstrap
from techno_executor.settings import ExecutorSettings


def main() -> int:
    settings = load_settings(ExecutorSettings)
    configure_logging("executor", settings.log_level)
    return run(lambda: bootstrap(settings))


if __name__ == "__main__":
    sys.exit(main())
