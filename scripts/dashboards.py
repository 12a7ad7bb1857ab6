"""Grafana dashboards as code: write infra/grafana/dashboards/<uid>.json, or check that the committed files are current.

Usage: python scripts/dashboards.py [--check] [--out DIR]

The dashboards are built with grafana-foundation-sdk. Its only release on PyPI generates the Grafana 10.1 model
(schemaVersion 36); Grafana 11 and 12 migrate that on load, so provisioning them there works unchanged.

Every query keeps to the vocabulary the live test substitutes before running it against Prometheus: ranges are
``[$__rate_interval]`` and template variables appear only as regex matchers (``instance=~"$instance"``, whose
"All" value is ``.*``). Counters whose labelled series appear only after a first failure end in ``or vector(0)``,
and ratios fill a missing numerator with zeros, so a healthy system draws 0 rather than "No data". Latency panels
ask for exemplars: the services attach the trace id to histogram observations.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.builders.common import ReduceDataOptions, VizLegendOptions, VizTooltipOptions
from grafana_foundation_sdk.builders.dashboard import Dashboard, QueryVariable, Row, ThresholdsConfig
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.builders.stat import Panel as Stat
from grafana_foundation_sdk.builders.statetimeline import Panel as StateTimeline
from grafana_foundation_sdk.builders.timeseries import Panel as Timeseries
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.variants import Dataquery as Variant
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.common import (
    BigValueColorMode,
    BigValueGraphMode,
    LegendDisplayMode,
    LegendPlacement,
    SortOrder,
    TooltipDisplayMode,
)

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "infra" / "grafana" / "dashboards"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="prometheus")
RATE = "[$__rate_interval]"
TAGS = ["techno"]
JOBS = ("edge", "gate", "executor", "memory")
# The gRPC services' own RPCs; health checks and reflection stay out of the RED panels.
TECHNO_RPCS = 'grpc_service=~"techno.*"'
# Edge traffic that is the API, not the probes and scrapes of the platform.
EDGE_API = 'job="edge", route!~"/metrics|/healthz|/readyz"'
QUANTILES = (0.5, 0.95, 0.99)
UP_MAPPING = model.ValueMap({"0": model.ValueMappingResult(text="DOWN", color="red", index=0)})
PROVIDERS_QUERY = "label_values(llm_circuit_breaker_state, provider)"
BREAKER_STEPS = ((None, "green"), (1, "yellow"), (2, "red"))
BREAKER_MAPPING = model.ValueMap(
    {
        "0": model.ValueMappingResult(text="closed", color="green", index=0),
        "1": model.ValueMappingResult(text="half-open", color="yellow", index=1),
        "2": model.ValueMappingResult(text="open", color="red", index=2),
    }
)

PanelBuilder = Builder[model.Panel]
Rows = Sequence[tuple[str, Sequence[PanelBuilder]]]


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str
    exemplar: bool = False


# --- PromQL ---------------------------------------------------------------------------------------------------


def _sum(labels: str) -> str:
    return f"sum by ({labels}) " if labels else "sum"


def rate(metric: str, selector: str, by: str = "") -> str:
    return f"{_sum(by)}(rate({metric}{{{selector}}}{RATE}))"


def increase(metric: str, selector: str, by: str = "") -> str:
    return f"{_sum(by)}(increase({metric}{{{selector}}}{RATE}))"


def or_zero(expr: str) -> str:
    """For counters whose labelled series exist only once something went wrong."""
    return f"{expr} or vector(0)"


def share(part: str, whole: str) -> str:
    """``part / whole``, where groups of ``whole`` without a ``part`` series count as 0, not as missing."""
    return f"({part} or {whole} * 0) / {whole}"


def ratio(metric: str, selector: str, bad: str, by: str = "") -> str:
    """Share of ``metric`` whose series also match ``bad``."""
    return share(rate(metric, f"{selector}, {bad}", by), rate(metric, selector, by))


def quantile(q: float, metric: str, selector: str, by: str = "") -> str:
    return f"histogram_quantile({q}, {rate(f'{metric}_bucket', selector, f'{by}, le' if by else 'le')})"


def quantiles(metric: str, selector: str, by: str, legend: str) -> list[Query]:
    prefix = f"{legend} " if legend else ""
    return [Query(quantile(q, metric, selector, by), f"{prefix}p{round(q * 100)}", exemplar=True) for q in QUANTILES]


# --- panels ---------------------------------------------------------------------------------------------------


def _target(query: Query, ref_id: str) -> Dataquery:
    target = Dataquery().expr(query.expr).legend_format(query.legend).ref_id(ref_id).datasource(DATASOURCE)
    return target.range().exemplar(True) if query.exemplar else target.range()


def _targets(queries: Sequence[Query]) -> list[Builder[Variant]]:
    return [_target(query, chr(ord("A") + index)) for index, query in enumerate(queries)]


def timeseries(
    title: str, unit: str, queries: Sequence[Query], *, description: str = "", width: int = 12
) -> Timeseries:
    panel = (
        Timeseries()
        .title(title)
        .datasource(DATASOURCE)
        .targets(_targets(queries))
        .unit(unit)
        .min(0)
        .span(width)
        .height(8)
        .legend(
            VizLegendOptions().display_mode(LegendDisplayMode.LIST).placement(LegendPlacement.BOTTOM).show_legend(True)
        )
        .tooltip(VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING))
    )
    return panel.description(description) if description else panel


def _thresholds(steps: Sequence[tuple[float | None, str]]) -> ThresholdsConfig:
    return ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE).steps([model.Threshold(v, c) for v, c in steps])


def stat(
    title: str,
    queries: Sequence[Query],
    *,
    mappings: Sequence[model.ValueMap] = (),
    thresholds: Sequence[tuple[float | None, str]] = ((None, "green"),),
    width: int = 12,
    height: int = 5,
) -> Stat:
    return (
        Stat()
        .title(title)
        .datasource(DATASOURCE)
        .targets(_targets(queries))
        .mappings(list(mappings))
        .thresholds(_thresholds(thresholds))
        .color_mode(BigValueColorMode.BACKGROUND)
        .graph_mode(BigValueGraphMode.NONE)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .span(width)
        .height(height)
    )


def breaker_timeline(title: str, expr: str, *, width: int = 12) -> StateTimeline:
    return (
        StateTimeline()
        .title(title)
        .description("0 closed, 1 half-open, 2 open (forced states read as what they do).")
        .datasource(DATASOURCE)
        .targets(_targets([Query(expr, "{{provider}}")]))
        .mappings([BREAKER_MAPPING])
        .thresholds(_thresholds(BREAKER_STEPS))
        .span(width)
        .height(8)
    )


def latency(title: str, metric: str, selector: str, by: str, legend: str, *, width: int = 12) -> Timeseries:
    return timeseries(title, "s", quantiles(metric, selector, by, legend), width=width)


# --- dashboards -----------------------------------------------------------------------------------------------


def instance_variable(job: str) -> QueryVariable:
    return _variable("instance", "Instance", f'label_values(up{{job="{job}"}}, instance)')


def _variable(name: str, label: str, query: str) -> QueryVariable:
    return (
        QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(query)
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(model.VariableOption(selected=True, text="All", value="$__all"))
    )


def build(uid: str, title: str, rows: Rows, variable: QueryVariable | None = None) -> model.Dashboard:
    builder = (
        Dashboard(title)
        .uid(uid)
        .tags(TAGS)
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .annotations([])
    )
    if variable is not None:
        builder = builder.with_variable(variable)
    for row_title, panels in rows:
        builder = builder.with_row(Row(row_title))
        for panel in panels:
            builder = builder.with_panel(panel)
    dashboard = builder.build()
    for number, built in enumerate(dashboard.panels or [], start=1):
        built.id_val = number  # stable ids: Grafana would otherwise number them on every load
    return dashboard


def grpc_rows(job: str) -> Rows:
    """Rate, errors and duration of every RPC of a gRPC service, plus how many are being handled."""
    sel = f'job="{job}", instance=~"$instance", {TECHNO_RPCS}'
    handled = "grpc_server_handled_total"
    in_flight = f'sum by (instance) (grpc_server_in_flight_requests{{job="{job}", instance=~"$instance"}})'
    errors = rate(handled, f'{sel}, grpc_code!="OK"', "grpc_method, grpc_code")
    panels = [
        timeseries("Requests/s by RPC", "reqps", [Query(rate(handled, sel, "grpc_method"), "{{grpc_method}}")]),
        timeseries("Errors/s by RPC and code", "reqps", [Query(errors, "{{grpc_method}} {{grpc_code}}")]),
        timeseries(
            "Error ratio by RPC (non-OK)",
            "percentunit",
            [Query(ratio(handled, sel, 'grpc_code!="OK"', "grpc_method"), "{{grpc_method}}")],
        ),
        latency("Duration by RPC (p50/p95/p99)", "grpc_server_handling_seconds", sel, "grpc_method", "{{grpc_method}}"),
        timeseries("RPCs in flight", "short", [Query(in_flight, "{{instance}}")], width=24),
    ]
    return [("RPCs: rate, errors, duration", panels)]


def overview() -> model.Dashboard:
    rows: Rows = [
        ("Status", [_service_status()]),
        ("Traffic", _traffic()),
        ("Gate decisions", _decisions('job="gate"')),
    ]
    return build("techno-overview", "Techno / Overview", rows)


def _service_status() -> Stat:
    up = f'sum by (job) (up{{job=~"{"|".join(JOBS)}"}})'
    return stat(
        "Service status (targets up)",
        [Query(up, "{{job}}")],
        mappings=[UP_MAPPING],
        thresholds=[(None, "red"), (1, "green")],
        width=24,
    )


def _traffic() -> list[PanelBuilder]:
    """Edge requests and the gRPC services' RPCs side by side: throughput, error rate, p95."""
    handled = "grpc_server_handled_total"
    edge_seconds, grpc_seconds = "http_request_duration_seconds", "grpc_server_handling_seconds"
    throughput = [
        Query(rate("http_requests_total", EDGE_API), "edge requests/s"),
        Query(rate(handled, TECHNO_RPCS, "job"), "{{job}} RPCs/s"),
    ]
    errors = [
        Query(ratio("http_requests_total", EDGE_API, 'status=~"5.."'), "edge 5xx"),
        Query(ratio(handled, TECHNO_RPCS, 'grpc_code!="OK"', "job"), "{{job}} non-OK"),
    ]
    p95 = [
        Query(quantile(0.95, edge_seconds, EDGE_API), "edge", exemplar=True),
        # Unary RPCs only: a stream's handling time is the whole answer (seconds), which would hide request latency.
        Query(quantile(0.95, grpc_seconds, f'{TECHNO_RPCS}, grpc_method!~"Stream.*"', "job"), "{{job}}", exemplar=True),
    ]
    return [
        timeseries("Throughput", "reqps", throughput),
        timeseries("Error rate (edge 5xx, gRPC non-OK)", "percentunit", errors),
        timeseries("p95 latency", "s", p95, width=24),
    ]


def _decisions(sel: str) -> list[PanelBuilder]:
    by_outcome = Query(rate("gate_decisions_total", sel, "decision"), "{{decision}}")
    by_reason = Query(rate("gate_decisions_total", sel, "decision, reason"), "{{decision}} {{reason}}")
    return [
        timeseries("Gate decisions by outcome", "reqps", [by_outcome]),
        timeseries("Gate decisions by reason", "reqps", [by_reason]),
    ]


def llm() -> model.Dashboard:
    sel = 'provider=~"$provider"'
    rows: Rows = [
        ("Latency and traffic", _llm_traffic(sel)),
        ("Streaming", _llm_streaming(sel)),
        ("Errors", _llm_errors(sel)),
        ("Circuit breakers", _breakers(sel)),
    ]
    return build("techno-llm", "Techno / LLM", rows, _variable("provider", "Provider", PROVIDERS_QUERY))


def _llm_traffic(sel: str) -> list[PanelBuilder]:
    attempts = Query(rate("llm_request_latency_seconds_count", sel, "provider"), "{{provider}}")
    tokens = Query(rate("llm_tokens_total", sel, "provider, type"), "{{provider}} {{type}}")
    return [
        latency(
            "LLM latency by provider (p50/p95/p99)", "llm_request_latency_seconds", sel, "provider", "{{provider}}"
        ),
        timeseries("LLM attempts/s by provider", "reqps", [attempts]),
        timeseries("Tokens/s by type", "short", [tokens], width=24),
    ]


def _llm_streaming(sel: str) -> list[PanelBuilder]:
    results = Query(or_zero(rate("llm_streams_total", sel, "provider, result")), "{{provider}} {{result}}")
    return [
        latency(
            "Time to first token by provider (p50/p95/p99)",
            "llm_time_to_first_token_seconds",
            sel,
            "provider",
            "{{provider}}",
        ),
        latency(
            "Stream duration by provider (p50/p95/p99)", "llm_stream_duration_seconds", sel, "provider", "{{provider}}"
        ),
        timeseries(
            "Streams/s by result",
            "reqps",
            [results],
            description="Streams that reached a provider: completed, failed (before or after the first token), or "
            "cancelled by the caller.",
            width=24,
        ),
    ]


def _llm_errors(sel: str) -> list[PanelBuilder]:
    by_type = Query(or_zero(rate("llm_errors_total", sel, "provider, error_type")), "{{provider}} {{error_type}}")
    attempted = f'{sel}, error_type!="circuit_open"'  # circuit_open: refused by the breaker, never attempted
    failed = share(
        rate("llm_errors_total", attempted, "provider"), rate("llm_request_latency_seconds_count", sel, "provider")
    )
    return [
        timeseries(
            "LLM errors/s by type",
            "reqps",
            [by_type],
            description="circuit_open counts calls the breaker refused: no attempt was made.",
        ),
        timeseries("LLM failed attempts ratio by provider", "percentunit", [Query(failed, "{{provider}}")]),
    ]


def _breakers(sel: str) -> list[PanelBuilder]:
    state = f"max by (provider) (llm_circuit_breaker_state{{{sel}}})"
    transitions = or_zero(increase("llm_circuit_transitions_total", sel, "provider, to"))
    now = stat(
        "Circuit breaker state",
        [Query(state, "{{provider}}")],
        mappings=[BREAKER_MAPPING],
        thresholds=BREAKER_STEPS,
        height=8,
    )
    return [
        now,
        breaker_timeline("Circuit breaker state over time", state),
        timeseries("Circuit breaker transitions", "short", [Query(transitions, "{{provider}} to {{to}}")], width=24),
    ]


def edge() -> model.Dashboard:
    sel = 'job="edge", instance=~"$instance"'
    requests = "http_requests_total"
    failing = or_zero(rate(requests, f'{sel}, status=~"[45].."', "route, status"))
    in_flight = f"sum by (instance) (http_requests_in_flight{{{sel}}})"
    rows: Rows = [
        (
            "Routes: rate, errors, duration",
            [
                timeseries("Requests/s by route", "reqps", [Query(rate(requests, sel, "route"), "{{route}}")]),
                timeseries("4xx and 5xx/s by route and status", "reqps", [Query(failing, "{{route}} {{status}}")]),
                timeseries(
                    "5xx ratio by route",
                    "percentunit",
                    [Query(ratio(requests, sel, 'status=~"5.."', "route"), "{{route}}")],
                ),
                latency("Duration by route (p50/p95/p99)", "http_request_duration_seconds", sel, "route", "{{route}}"),
            ],
        ),
        (
            "Edge",
            [
                timeseries("Responses/s by status code", "reqps", [Query(rate(requests, sel, "status"), "{{status}}")]),
                timeseries("Requests in flight", "short", [Query(in_flight, "{{instance}}")]),
            ],
        ),
    ]
    return build("techno-edge", "Techno / Edge", rows, instance_variable("edge"))


def gate() -> model.Dashboard:
    sel = 'job="gate", instance=~"$instance"'
    panels = [
        *_decisions(sel),
        timeseries(
            "Rate-limit rejections/s by limit",
            "reqps",
            [Query(rate("gate_rate_limit_rejections_total", sel, "limit"), "{{limit}}")],
        ),
        timeseries(
            "Audit write failures by kind",
            "short",
            [Query(or_zero(increase("gate_audit_write_failures_total", sel, "kind")), "{{kind}}")],
        ),
        timeseries(
            "Limit store failures by action",
            "short",
            [Query(or_zero(increase("gate_limit_store_failures_total", sel, "action")), "{{action}}")],
            description="Limit checks that could not reach the limit store: allowed (fail open) or denied.",
        ),
        timeseries(
            "Idempotency-Key requests/s by outcome",
            "reqps",
            [Query(rate("gate_idempotent_requests_total", sel, "outcome"), "{{outcome}}")],
            description="executed: ran once; replayed: answered from a stored response; conflict: still running; "
            "mismatch: key reused for another request; unknown: an earlier run may have happened and its response "
            "was lost (not run again).",
        ),
        timeseries(
            "Policy reloads by result",
            "short",
            [Query(increase("gate_policy_reloads_total", sel, "result"), "{{result}}")],
        ),
        timeseries(
            "API keys cached", "short", [Query(f"sum by (instance) (gate_api_keys_cached{{{sel}}})", "{{instance}}")]
        ),
    ]
    rows: Rows = [*grpc_rows("gate"), ("Gate", panels)]
    return build("techno-gate", "Techno / Gate", rows, instance_variable("gate"))


def executor() -> model.Dashboard:
    sel = 'job="executor", instance=~"$instance"'
    breaker = f"max by (provider) (llm_circuit_breaker_state{{{sel}}})"
    panels = [
        timeseries("Execute calls/s", "reqps", [Query(rate("executor_calls_total", sel, "executor"), "{{executor}}")]),
        timeseries("Action results/s", "reqps", [Query(rate("action_results_total", sel, "status"), "{{status}}")]),
        timeseries(
            "Breaker audit writes by result",
            "short",
            [Query(or_zero(increase("executor_audit_writes_total", sel, "result")), "{{result}}")],
        ),
        timeseries(
            "Context failures by what",
            "short",
            [Query(or_zero(increase("executor_context_failures_total", sel, "what")), "{{what}}")],
        ),
        breaker_timeline("Circuit breaker state", breaker, width=24),
    ]
    rows: Rows = [*grpc_rows("executor"), ("Executor", panels)]
    return build("techno-executor", "Techno / Executor", rows, instance_variable("executor"))


def memory() -> model.Dashboard:
    sel = 'job="memory", instance=~"$instance"'
    batch = "memory_audit_append_batch_size"
    average = f"{rate(f'{batch}_sum', sel)} / {rate(f'{batch}_count', sel)}"
    sizes = [Query(quantile(q, batch, sel), f"p{round(q * 100)}") for q in (0.5, 0.95)]
    database = stat(
        "Database up",
        [Query(f"memory_db_up{{{sel}}}", "{{instance}}")],
        mappings=[UP_MAPPING, model.ValueMap({"1": model.ValueMappingResult(text="UP", color="green", index=1)})],
        thresholds=[(None, "red"), (1, "green")],
        width=24,
    )
    panels = [
        database,
        timeseries(
            "Audit events appended/s", "ops", [Query(rate("memory_audit_events_appended_total", sel), "appended")]
        ),
        timeseries("Group-commit batch size", "short", [*sizes, Query(average, "average")]),
        timeseries(
            "Audit append failures",
            "short",
            [Query(increase("memory_audit_append_failures_total", sel), "failed transactions")],
        ),
        timeseries(
            "Expiry sweeps",
            "short",
            [
                Query(increase("memory_sessions_expired_total", sel), "sessions expired"),
                Query(increase("memory_idempotency_keys_expired_total", sel), "idempotency keys expired"),
                Query(increase("memory_session_sweep_failures_total", sel), "sweep failures"),
            ],
        ),
    ]
    rows: Rows = [*grpc_rows("memory"), ("Memory", panels)]
    return build("techno-memory", "Techno / Memory", rows, instance_variable("memory"))


DASHBOARDS = (overview, llm, edge, gate, executor, memory)


# --- files ----------------------------------------------------------------------------------------------------


def render(dashboard: model.Dashboard) -> str:
    return json.dumps(dashboard, cls=JSONEncoder, sort_keys=True, indent=2) + "\n"


def rendered() -> dict[str, str]:
    """File name -> content of every dashboard."""
    files: dict[str, str] = {}
    for make in DASHBOARDS:
        dashboard = make()
        files[f"{dashboard.uid}.json"] = render(dashboard)
    return files


def write(out: Path, files: dict[str, str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in {p.name for p in out.glob("*.json")} - files.keys():
        (out / name).unlink()  # the folder is generated: a dashboard removed here goes from there too
    for name, text in files.items():
        (out / name).write_text(text)


def stale(out: Path, files: dict[str, str]) -> list[str]:
    """What differs between ``files`` and the folder ``out``, one line per file."""
    present = {p.name for p in out.glob("*.json")}
    problems = [f"{out / name} is missing" for name in sorted(files.keys() - present)]
    problems += [f"{out / name} is not generated" for name in sorted(present - files.keys())]
    problems += [f"{out / n} is stale" for n in sorted(files.keys() & present) if (out / n).read_text() != files[n]]
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 when a committed dashboard differs")
    parser.add_argument("--out", type=Path, default=OUT, help="dashboards folder (default: %(default)s)")
    args = parser.parse_args(argv)
    files = rendered()
    if not args.check:
        write(args.out, files)
        return 0
    problems = stale(args.out, files)
    for problem in problems:
        print(f"{problem}: run `make dashboards`", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
