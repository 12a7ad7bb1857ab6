"""Grafana as code: the committed dashboards are what scripts/dashboards.py generates, they have the panels the
SRE pack asks for, every query is valid PromQL (run against a real Prometheus, the `prometheus` binary), and the
provisioning keeps anonymous access off and credentials out of the files.

No Grafana server runs here: the dashboards are checked through their JSON and their queries. The queries are
rewritten as the live test does: `$__rate_interval` -> 1m, `$__interval` -> 15s, `$__range` -> 5m, and every
template variable -> `.*`.
"""

from __future__ import annotations

import configparser
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from techno_stack.stack import free_port

from ..dashboard_queries import dashboard_queries, template_variables
from .servers import required_tool, serving

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "scripts" / "dashboards.py"
GRAFANA = ROOT / "infra" / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
PROVISIONING = GRAFANA / "provisioning"
UIDS = ("techno-overview", "techno-llm", "techno-edge", "techno-gate", "techno-executor", "techno-memory")
RANGE = re.compile(r"\[([^\]]*)\]")
STRING = re.compile(r'"[^"]*"')
QUANTILES = ("0.5", "0.95", "0.99")

Json = dict[str, Any]


def load(uid: str) -> Json:
    document: Json = json.loads((DASHBOARDS / f"{uid}.json").read_text())
    return document


def panels(dashboard: Json) -> list[Json]:
    """Every panel that draws something: rows are flattened (a collapsed row holds its panels)."""
    found: list[Json] = []
    for panel in dashboard.get("panels", []):
        found += panels(panel) if panel["type"] == "row" else [panel]
    return found


def targets(dashboard: Json) -> list[Json]:
    return [target for panel in panels(dashboard) for target in panel.get("targets", [])]


def exprs(dashboard: Json) -> list[str]:
    return [target["expr"] for target in targets(dashboard)]


def all_dashboards() -> list[Json]:
    return [load(uid) for uid in UIDS]


def run_generator(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(GENERATOR), *args], capture_output=True, text=True, check=False)


# --- generated and current -------------------------------------------------------------------------------------


def test_the_committed_dashboards_are_what_the_generator_writes(tmp_path: Path) -> None:
    result = run_generator("--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    generated = {p.name: p.read_bytes() for p in tmp_path.glob("*.json")}
    committed = {p.name: p.read_bytes() for p in DASHBOARDS.glob("*.json")}
    assert sorted(generated) == sorted(f"{uid}.json" for uid in UIDS)
    stale = sorted(name for name in generated.keys() | committed.keys() if generated.get(name) != committed.get(name))
    assert not stale, f"stale dashboards {stale}: run `make dashboards`"
    assert run_generator("--check").returncode == 0


def test_check_names_a_stale_file_and_fails(tmp_path: Path) -> None:
    assert run_generator("--out", str(tmp_path)).returncode == 0
    edited = tmp_path / "techno-gate.json"
    edited.write_text(edited.read_text().replace("Techno / Gate", "Hand-edited"))
    result = run_generator("--check", "--out", str(tmp_path))
    assert result.returncode == 1
    assert "techno-gate.json" in result.stderr
    assert "techno-edge.json" not in result.stderr


def test_the_output_is_sorted_indented_and_ends_with_a_newline() -> None:
    for uid in UIDS:
        text = (DASHBOARDS / f"{uid}.json").read_text()
        assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n", uid


# --- shape -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("uid", UIDS)
def test_each_dashboard_is_identified_tagged_and_refreshing(uid: str) -> None:
    dashboard = load(uid)
    assert dashboard["uid"] == uid
    assert dashboard["title"].startswith("Techno / ")
    assert "techno" in dashboard["tags"]
    assert dashboard["refresh"]
    assert dashboard["time"] == {"from": "now-1h", "to": "now"}
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_every_target_queries_the_prometheus_datasource_with_an_expression() -> None:
    for dashboard in all_dashboards():
        for panel in panels(dashboard):
            where = f"{dashboard['uid']} / {panel['title']}"
            assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, where
            assert panel["targets"], where
            ref_ids = [target["refId"] for target in panel["targets"]]
            assert len(ref_ids) == len(set(ref_ids)), where
            for target in panel["targets"]:
                assert target["datasource"] == {"type": "prometheus", "uid": "prometheus"}, where
                assert target["expr"].strip(), where


def test_queries_keep_to_the_vocabulary_the_live_test_substitutes() -> None:
    for dashboard in all_dashboards():
        defined = {variable["name"] for variable in dashboard["templating"].get("list", [])}
        for variable in dashboard["templating"].get("list", []):
            assert variable["allValue"] == ".*", variable["name"]
        for expr in exprs(dashboard):
            used = template_variables(expr)
            assert used <= defined, f"{dashboard['uid']}: undefined variables {used - defined} in {expr}"
            for name in used:  # "All" is .* and several values are a|b: only a regex matcher takes both
                assert re.search(rf'=~"\$\{{?{name}\}}?"', expr), f"${name} outside a regex matcher: {expr}"
            ranges = set(RANGE.findall(STRING.sub('""', expr)))  # outside label values, [ ] is a range
            assert ranges <= {"$__rate_interval"}, f"a fixed range in {expr}"


def test_latency_quantiles_ask_for_exemplars() -> None:
    latency = [t for d in all_dashboards() for t in targets(d) if re.search(r"_seconds_bucket\b", t["expr"])]
    assert latency
    for target in latency:
        assert target.get("exemplar") is True, target["expr"]


# --- what each dashboard shows ---------------------------------------------------------------------------------


def assert_shows(uid: str, *patterns: str) -> None:
    found = exprs(load(uid))
    missing = [pattern for pattern in patterns if not any(re.search(pattern, expr) for expr in found)]
    assert not missing, f"{uid} lacks queries matching {missing}"


def titles(uid: str) -> str:
    return " | ".join(panel["title"] for panel in panels(load(uid)))


def test_overview_shows_status_throughput_errors_p95_and_decisions() -> None:
    assert_shows(
        "techno-overview",
        r'sum by \(job\) \(up\{job=~"edge\|gate\|executor\|memory"\}\)',
        r"rate\(http_requests_total\{",
        r'status=~"5\.\."',
        r'grpc_code!="OK"',
        r"histogram_quantile\(0\.95, sum by \(le\) \(rate\(http_request_duration_seconds_bucket",
        r"histogram_quantile\(0\.95, sum by \(job, le\) \(rate\(grpc_server_handling_seconds_bucket",
        r"sum by \(decision\) \(rate\(gate_decisions_total",
        r"sum by \(decision, reason\) \(rate\(gate_decisions_total",
    )
    for words in ("status", "Throughput", "Error rate", "p95", "decisions"):
        assert words in titles("techno-overview"), words


def test_llm_shows_latency_quantiles_tokens_errors_by_type_and_breaker_state() -> None:
    assert_shows(
        "techno-llm",
        *(
            rf"histogram_quantile\({q}, sum by \(provider, le\) \(rate\(llm_request_latency_seconds_bucket"
            for q in QUANTILES
        ),
        r"sum by \(provider, type\) \(rate\(llm_tokens_total",
        r"sum by \(provider, error_type\) \(rate\(llm_errors_total",
        r"max by \(provider\) \(llm_circuit_breaker_state",
        r"llm_circuit_transitions_total",
    )


def test_breaker_state_panels_name_the_states() -> None:
    breaker = [
        panel
        for dashboard in all_dashboards()
        for panel in panels(dashboard)
        if any("llm_circuit_breaker_state" in target["expr"] for target in panel["targets"])
    ]
    assert {panel["type"] for panel in breaker} >= {"stat", "state-timeline"}
    for panel in breaker:
        options: dict[str, str] = {}
        for mapping in panel["fieldConfig"]["defaults"]["mappings"]:
            options |= {value: result["text"] for value, result in mapping["options"].items()}
        assert options == {"0": "closed", "1": "half-open", "2": "open"}, panel["title"]


@pytest.mark.parametrize("job", ["gate", "executor", "memory"])
def test_each_grpc_service_shows_rate_errors_and_duration_per_rpc(job: str) -> None:
    selector = rf'\{{job="{job}", instance=~"\$instance", grpc_service=~"techno\.\*"'
    duration = rf"sum by \(grpc_method, le\) \(rate\(grpc_server_handling_seconds_bucket{selector}"
    assert_shows(
        f"techno-{job}",
        rf"sum by \(grpc_method\) \(rate\(grpc_server_handled_total{selector}\}}",
        rf'sum by \(grpc_method, grpc_code\) \(rate\(grpc_server_handled_total{selector}, grpc_code!="OK"\}}',
        *(rf"histogram_quantile\({q}, {duration}" for q in QUANTILES),
        rf'grpc_server_in_flight_requests\{{job="{job}"',
    )


def test_edge_shows_rate_errors_and_duration_per_route_plus_in_flight_and_status() -> None:
    selector = r'\{job="edge", instance=~"\$instance"'
    assert_shows(
        "techno-edge",
        rf"sum by \(route\) \(rate\(http_requests_total{selector}\}}",
        rf'sum by \(route\) \(rate\(http_requests_total{selector}, status=~"5\.\."',
        *(
            rf"histogram_quantile\({q}, sum by \(route, le\) \(rate\(http_request_duration_seconds_bucket{selector}"
            for q in QUANTILES
        ),
        rf"sum by \(status\) \(rate\(http_requests_total{selector}",
        rf"http_requests_in_flight{selector}",
    )


SPECIFIC = {
    "techno-gate": (
        r"sum by \(decision, reason\) \(rate\(gate_decisions_total",
        r"sum by \(limit\) \(rate\(gate_rate_limit_rejections_total",
        r"gate_audit_write_failures_total",
        r"gate_api_keys_cached",
        r"sum by \(result\) \(increase\(gate_policy_reloads_total",
        r"gate_limit_store_failures_total",
    ),
    "techno-executor": (
        r"executor_calls_total",
        r"sum by \(status\) \(rate\(action_results_total",
        r"sum by \(result\) \(increase\(executor_audit_writes_total",
        r"executor_context_failures_total",
        r"llm_circuit_breaker_state",
    ),
    "techno-memory": (
        r"rate\(memory_audit_events_appended_total",
        r"histogram_quantile\(0\.95, sum by \(le\) \(rate\(memory_audit_append_batch_size_bucket",
        r"memory_audit_append_batch_size_sum\{[^}]*\}\[\$__rate_interval\]\)\) / "
        r"sum\(rate\(memory_audit_append_batch_size_count",
        r"memory_audit_append_failures_total",
        r"memory_db_up",
        r"memory_sessions_expired_total",
        r"memory_session_sweep_failures_total",
    ),
}


@pytest.mark.parametrize("uid", sorted(SPECIFIC))
def test_each_service_dashboard_shows_what_is_specific_to_it(uid: str) -> None:
    assert_shows(uid, *SPECIFIC[uid])


# --- every query runs on a real Prometheus ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Prometheus on loopback that scrapes nothing: enough to parse and evaluate every query."""
    state = tmp_path_factory.mktemp("prometheus")
    (state / "prometheus.yml").write_text("global:\n  scrape_interval: 1m\n")
    url = f"http://127.0.0.1:{free_port()}"
    command = [
        required_tool("prometheus"),
        f"--config.file={state / 'prometheus.yml'}",
        f"--storage.tsdb.path={state / 'data'}",
        f"--web.listen-address={url.removeprefix('http://')}",
    ]
    with serving(command, url, state / "log"):
        yield url


def test_every_panel_query_is_valid_promql(prometheus: str) -> None:
    failures = []
    with httpx.Client(base_url=prometheus, timeout=10.0) as client:
        for query in dashboard_queries():
            answer = client.post("/api/v1/query", data={"query": query.expr})
            body = answer.json()
            if answer.status_code != 200 or body.get("status") != "success":
                failures.append(f"{query}\n  -> {body.get('error', answer.text)}")
    assert not failures, "\n".join(failures)


# --- provisioning ----------------------------------------------------------------------------------------------


def grafana_ini() -> configparser.ConfigParser:
    config = configparser.ConfigParser(interpolation=None)
    config.read_string((GRAFANA / "grafana.ini").read_text())
    return config


def test_grafana_ini_turns_anonymous_access_and_sign_up_off() -> None:
    config = grafana_ini()
    assert config.getboolean("auth.anonymous", "enabled") is False
    assert config.getboolean("users", "allow_sign_up") is False


def test_grafana_ini_holds_no_password_and_documents_the_secret() -> None:
    config = grafana_ini()
    for section in config.sections():
        secrets = [key for key in config[section] if "password" in key or "secret" in key]
        assert not secrets, f"[{section}] holds {secrets}: credentials come from a secret file"
    assert "GF_SECURITY_ADMIN_PASSWORD__FILE" in (GRAFANA / "grafana.ini").read_text()


def test_the_datasource_is_the_one_the_dashboards_query() -> None:
    provisioned = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    (datasource,) = provisioned["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert datasource["isDefault"] is True
    used = {target["datasource"]["uid"] for dashboard in all_dashboards() for target in targets(dashboard)}
    assert used == {datasource["uid"]}


def test_the_dashboard_provider_loads_the_generated_folder() -> None:
    provisioned = yaml.safe_load((PROVISIONING / "dashboards" / "techno.yml").read_text())
    (provider,) = provisioned["providers"]
    assert provider["type"] == "file"
    path = provider["options"]["path"]
    home = grafana_ini().get("dashboards", "default_home_dashboard_path")
    assert home == f"{path}/techno-overview.json"
