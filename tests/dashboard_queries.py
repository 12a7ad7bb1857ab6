"""The PromQL of the committed Grafana dashboards, as the tests run it against a real Prometheus: Grafana's
built-in intervals replaced by fixed durations and every template variable by ``.*`` (each is used only inside an
``=~`` matcher). Shared by the static dashboard tests (tests/infra) and the live test (tests/e2e)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DASHBOARDS = Path(__file__).resolve().parents[1] / "infra" / "grafana" / "dashboards"

# What Grafana would put in for its built-in variables.
GRAFANA_BUILTINS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}
# $name, ${name}, ${name:format} and the old [[name]].
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)(?::\w+)?\]\]")


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    ref: str
    expr: str  # with the variables substituted

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.panel} [{self.ref}]: {self.expr}"


def template_variables(expr: str) -> set[str]:
    """The dashboard variables ``expr`` uses (Grafana's built-ins left out)."""
    names = {"".join(groups) for groups in _VARIABLE.findall(expr)}
    return {name for name in names if f"${name}" not in GRAFANA_BUILTINS}


def substitute(expr: str) -> str:
    for variable, value in GRAFANA_BUILTINS.items():
        expr = expr.replace("${" + variable[1:] + "}", value).replace(variable, value)
    return _VARIABLE.sub(".*", expr)


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels") or [])  # a collapsed row holds its panels


def dashboard_queries(directory: Path = DASHBOARDS) -> list[PanelQuery]:
    """Every panel target's query, substituted, in file then panel order."""
    queries = []
    for path in sorted(directory.glob("*.json")):
        dashboard = json.loads(path.read_text())
        title = str(dashboard.get("title") or path.stem)
        queries += [
            PanelQuery(title, str(panel.get("title", "")), str(target.get("refId", "")), substitute(target["expr"]))
            for panel in _panels(dashboard.get("panels") or [])
            for target in panel.get("targets") or []
            if target.get("expr")
        ]
    return queries
