"""The Prometheus configuration and rules of infra/prometheus/: promtool's checks and unit tests, and the alert
contract (names, labels, annotations, runbook links, firing and quiet cases) that Alertmanager, the runbook and
the live test rely on."""

from __future__ import annotations

import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from .servers import required_tool

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "infra" / "prometheus"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULES = PROMETHEUS_DIR / "rules"
ALERTS = RULES / "alerts.yml"
RULE_TESTS = PROMETHEUS_DIR / "tests"
RUNBOOK_URL = "https://github.com/techno-gateway/techno/blob/main/docs/runbook.md#"
# The committed targets: compose host names (local runs and tests rewrite them to loopback ports).
COMPOSE_TARGETS = {
    "edge": "edge:8080",
    "gate": "gate:9101",
    "executor": "executor:9102",
    "memory": "memory:9103",
    "prometheus": "localhost:9090",
    "alertmanager": "alertmanager:9093",
}
JOBS = tuple(COMPOSE_TARGETS)

# name: (severity, service, for). service None: taken from the failing target; for None: no `for` (the rule's
# expression holds its own window).
CONTRACT: dict[str, tuple[str, str | None, str | None]] = {
    "TechnoServiceDown": ("critical", None, "1m"),
    "TechnoEdgeHighLatency": ("warning", "edge", "3m"),
    "TechnoEdgeHighErrorRate": ("critical", "edge", "5m"),
    "TechnoEdgeHighRequestVolume": ("warning", "edge", "5m"),
    "TechnoLLMHighLatency": ("warning", "executor", "2m"),
    "TechnoLLMHighErrorRate": ("warning", "executor", "5m"),
    "TechnoLLMSlowFirstToken": ("warning", "executor", "5m"),
    "TechnoCircuitBreakerOpen": ("critical", "executor", "1m"),
    "TechnoProviderDown": ("critical", "executor", None),
    "TechnoAuditWritesFailing": ("critical", None, "1m"),
    "TechnoOutcomeOutboxBacklog": ("warning", "gate", "2m"),
    "TechnoDatabaseUnreachable": ("critical", "memory", "1m"),
    "TechnoRateLimitRejectionsSpiking": ("warning", "gate", "5m"),
}


def _run(*args: str) -> str:
    """Runs a command in infra/prometheus/, fails the test with its output unless it exits 0, returns it."""
    done = subprocess.run(args, cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=60, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{output}"
    return output


def _alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]


def _rule_test_files() -> list[Path]:
    files = sorted(RULE_TESTS.glob("*.test.yml"))
    assert files, f"no promtool test files in {RULE_TESTS}"
    return files


def test_prometheus_config_is_valid_with_its_rules_and_target_files() -> None:
    # check config also checks the rule files and parses every file_sd file; a missing one is only a warning.
    output = _run(required_tool("promtool"), "check", "config", "--lint=all", CONFIG.name)
    assert "WARNING" not in output, output
    assert "SUCCESS: 2 rule files found" in output, output


def test_every_job_reads_its_targets_file_and_labels_its_service() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    assert config["rule_files"] == ["rules/*.yml"]
    assert config["alerting"]["alertmanagers"] == [{"file_sd_configs": [{"files": ["targets/alertmanager.yml"]}]}]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert sorted(jobs) == sorted(JOBS)
    for name, job in jobs.items():
        assert job["file_sd_configs"] == [{"files": [f"targets/{name}.yml"]}], name
        assert job["relabel_configs"] == [{"target_label": "service", "replacement": name}], name
        targets = yaml.safe_load((PROMETHEUS_DIR / "targets" / f"{name}.yml").read_text())
        assert targets == [{"targets": [COMPOSE_TARGETS[name]]}], name
    # The live test shortens the intervals; an explicit scrape_timeout longer than them would be invalid.
    assert "scrape_timeout" not in config["global"]


def test_rule_files_are_valid() -> None:
    rule_files = sorted(str(path.relative_to(PROMETHEUS_DIR)) for path in RULES.glob("*.yml"))
    assert rule_files == ["rules/alerts.yml", "rules/recording.yml"]
    _run(required_tool("promtool"), "check", "rules", "--lint=all", *rule_files)


def test_rule_unit_tests_pass() -> None:
    files = [str(path.relative_to(PROMETHEUS_DIR)) for path in _rule_test_files()]
    output = _run(required_tool("promtool"), "test", "rules", *files)
    assert output.count("SUCCESS") == len(files), output


def test_the_contract_alerts_exist_with_their_severity_service_and_duration() -> None:
    rules = _alert_rules()
    assert {rule["alert"] for rule in rules} == set(CONTRACT)
    for rule in rules:
        severity, service, hold = CONTRACT[rule["alert"]]
        assert rule["labels"]["severity"] == severity, rule["alert"]
        if service is not None:
            assert rule["labels"]["service"] == service, rule["alert"]
        assert rule.get("for") == hold, rule["alert"]
    down = next(rule for rule in rules if rule["alert"] == "TechnoServiceDown")
    assert down["labels"]["service"] == "{{ $labels.service }}"
    audit = sorted(rule["labels"]["service"] for rule in rules if rule["alert"] == "TechnoAuditWritesFailing")
    assert audit == ["executor", "gate", "memory"]


def test_every_alert_has_labels_annotations_and_its_runbook_section() -> None:
    for rule in _alert_rules():
        name = rule["alert"]
        assert set(rule["labels"]) == {"severity", "service"}, name
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["labels"]["service"] in (*JOBS, "{{ $labels.service }}"), name
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}, name
        assert annotations["summary"].strip(), name
        assert annotations["description"].strip(), name
        assert annotations["runbook_url"] == RUNBOOK_URL + name.lower(), name


def test_every_alert_fires_and_stays_quiet_in_the_rule_unit_tests() -> None:
    """Each alert rule (each service's, for an alert defined per service) has a promtool case where it fires,
    expecting its severity and service, and each alert a case where it is expected to stay quiet."""
    fired: dict[str, set[tuple[str, str]]] = defaultdict(set)
    quiet: set[str] = set()
    for path in _rule_test_files():
        document = yaml.safe_load(path.read_text())
        for group in document["tests"]:
            for case in group.get("alert_rule_test") or []:
                if not case.get("exp_alerts"):
                    quiet.add(case["alertname"])
                for alert in case.get("exp_alerts") or []:
                    labels = alert["exp_labels"]
                    assert set(alert.get("exp_annotations", {})) == {"summary", "description", "runbook_url"}, (
                        f"{path.name}: {case['alertname']} expects no exact annotations"
                    )
                    fired[case["alertname"]].add((labels["severity"], labels["service"]))
    for rule in _alert_rules():
        name, labels = rule["alert"], rule["labels"]
        assert name in fired, f"no promtool case where {name} fires"
        if labels["service"].startswith("{{"):
            assert any(severity == labels["severity"] for severity, _ in fired[name]), name
        else:
            assert (labels["severity"], labels["service"]) in fired[name], f"{name} never fires for {labels['service']}"
        assert name in quiet, f"no promtool case where {name} stays quiet"
