"""``python -m techno_executor``: run the executor until SIGTERM."""

from __future__ import annotations

from techno_core.logging import configure_logging
from techno_core.runner import run
from techno_executor.bootstrap import bootstrap
from techno_executor.settings import ExecutorSettings


def main() -> None:
    settings = ExecutorSettings()
    configure_logging("executor", settings.log_level)
    run(lambda: bootstrap(settings))


if __name__ == "__main__":
    main()
