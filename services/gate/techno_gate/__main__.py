"""``python -m techno_gate``: run the gate until SIGTERM."""

from __future__ import annotations

import sys

from techno_core.logging import configure_logging
from techno_core.runner import load_settings, run
from techno_gate.bootstrap import bootstrap
from techno_gate.settings import GateSettings


def main() -> int:
    settings = load_settings(GateSettings)
    configure_logging("gate", settings.log_level)
    return run(lambda: bootstrap(settings))


if __name__ == "__main__":
    sys.exit(main())
