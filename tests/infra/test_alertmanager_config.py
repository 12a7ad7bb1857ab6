"""infra/alertmanager/alertmanager.yml: amtool's checks, the routing of every alert of infra/prometheus/rules/
(critical to `webhook` and `log`, warning to `log` only), and its inhibitions on a real Alertmanager."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from techno_stack.stack import free_port

from .servers import required_tool, serving

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "infra" / "alertmanager" / "alertmanager.yml"
ALERTS = ROOT / "infra" / "prometheus" / "rules" / "alerts.yml"
DEADLINE_SECONDS = 20.0


def _amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [required_tool("amtool"), *args], capture_output=True, text=True, timeout=60, check=False, cwd=CONFIG.parent
    )


def _receivers(labels: dict[str, str]) -> list[str]:
    """The receivers an alert with these labels goes to, in routing order, per `amtool config routes test`."""
    args = [f"{name}={value}" for name, value in sorted(labels.items())]
    done = _amtool("config", "routes", "test", f"--config.file={CONFIG}", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip().split(",")


def _keys(node: object) -> set[str]:
    """Every mapping key anywhere in a parsed YAML document."""
    if isinstance(node, dict):
        return set(node).union(*(_keys(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(_keys(item) for item in node))
    return set()


def test_config_is_valid() -> None:
    done = _amtool("check-config", str(CONFIG))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout, done.stdout


def test_receivers_routes_and_inhibitions_are_declared() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    receivers = {receiver["name"]: receiver["webhook_configs"] for receiver in config["receivers"]}
    assert sorted(receivers) == ["log", "webhook"]
    for name, webhooks in receivers.items():
        assert [hook["url"].rsplit("/", 1)[1] for hook in webhooks] == [name]
        assert all(hook["send_resolved"] for hook in webhooks)
    route = config["route"]
    assert route["group_by"] == ["alertname", "service"]
    first = route["routes"][0]
    assert first == {"receiver": "log", "continue": True}, "every alert must be logged first, then routed on"
    # Alertmanager 0.25 syntax only: `matchers`, never the deprecated match / match_re / source_match ….
    assert not _keys(config) & {
        "match",
        "match_re",
        "source_match",
        "source_match_re",
        "target_match",
        "target_match_re",
    }
    assert {
        "source_matchers": ['alertname="TechnoServiceDown"'],
        "target_matchers": ['alertname!="TechnoServiceDown"'],
        "equal": ["service"],
    } in config["inhibit_rules"]


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (
            {"alertname": "TechnoCircuitBreakerOpen", "severity": "critical", "service": "executor", "provider": "f"},
            ["log", "webhook"],
        ),
        ({"alertname": "TechnoServiceDown", "severity": "critical", "service": "edge"}, ["log", "webhook"]),
        ({"alertname": "TechnoServiceDown", "severity": "critical", "service": "alertmanager"}, ["log", "webhook"]),
        ({"alertname": "TechnoLLMHighLatency", "severity": "warning", "service": "executor"}, ["log"]),
        ({"alertname": "TechnoEdgeHighLatency", "severity": "warning", "service": "edge"}, ["log"]),
        # An alert of a service or severity nobody planned for is still logged, and paged if critical.
        ({"alertname": "Other", "severity": "critical", "service": "new"}, ["log", "webhook"]),
        ({"alertname": "Other"}, ["log"]),
    ],
)
def test_routes(labels: dict[str, str], expected: list[str]) -> None:
    assert _receivers(labels) == expected
    # amtool's own verification agrees (it exits 1 on a mismatch).
    args = [f"{name}={value}" for name, value in labels.items()]
    verified = _amtool(
        "config", "routes", "test", f"--config.file={CONFIG}", f"--verify.receivers={','.join(expected)}", *args
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_every_alert_rule_is_routed_by_its_severity() -> None:
    document = yaml.safe_load(ALERTS.read_text())
    rules = [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]
    assert rules
    for rule in rules:
        labels = dict(rule["labels"], alertname=rule["alert"])
        if labels["service"].startswith("{{"):
            labels["service"] = "gate"
        expected = ["log", "webhook"] if labels["severity"] == "critical" else ["log"]
        assert _receivers(labels) == expected, rule["alert"]


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    """A real Alertmanager on loopback with this configuration (webhooks pointed at a closed loopback port, so
    nothing leaves the machine); yields its URL once it is ready."""
    config = yaml.safe_load(CONFIG.read_text())
    closed = free_port()
    for receiver in config["receivers"]:
        for hook in receiver["webhook_configs"]:
            hook["url"] = f"http://127.0.0.1:{closed}/{receiver['name']}"
    rendered = tmp_path / "alertmanager.yml"
    rendered.write_text(yaml.safe_dump(config))
    port = free_port()
    command = [
        required_tool("prometheus-alertmanager"),
        f"--config.file={rendered}",
        f"--storage.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    with serving(command, f"http://127.0.0.1:{port}", tmp_path / "alertmanager.log"):
        yield f"http://127.0.0.1:{port}"


def _states(url: str, expected: int) -> dict[tuple[str, str], str]:
    """(alertname, distinguishing label) -> state (active|suppressed) of the alerts Alertmanager holds, once it
    holds `expected` of them."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        alerts: list[dict[str, Any]] = httpx.get(f"{url}/api/v2/alerts", timeout=5.0).json()
        if len(alerts) >= expected:
            break
        assert time.monotonic() < deadline, alerts
        time.sleep(0.05)
    states: dict[tuple[str, str], str] = {}
    for alert in alerts:
        labels = alert["labels"]
        key = labels.get("instance") or labels.get("provider") or labels["service"]
        states[(labels["alertname"], key)] = alert["status"]["state"]
    return states


def test_a_down_service_silences_its_own_symptoms_only(alertmanager: str) -> None:
    alerts = [
        {"alertname": "TechnoServiceDown", "severity": "critical", "service": "executor", "instance": "executor-1"},
        {"alertname": "TechnoServiceDown", "severity": "critical", "service": "executor", "instance": "executor-2"},
        {"alertname": "TechnoCircuitBreakerOpen", "severity": "critical", "service": "executor", "provider": "fake"},
        {"alertname": "TechnoLLMHighLatency", "severity": "warning", "service": "executor", "provider": "fake"},
        {"alertname": "TechnoEdgeHighErrorRate", "severity": "critical", "service": "edge"},
    ]
    response = httpx.post(f"{alertmanager}/api/v2/alerts", json=[{"labels": labels} for labels in alerts])
    assert response.status_code == 200, response.text
    assert _states(alertmanager, len(alerts)) == {
        # Every down replica stays visible: one ServiceDown does not hide another.
        ("TechnoServiceDown", "executor-1"): "active",
        ("TechnoServiceDown", "executor-2"): "active",
        ("TechnoCircuitBreakerOpen", "fake"): "suppressed",
        ("TechnoLLMHighLatency", "fake"): "suppressed",
        # Another service's alert is not the down service's symptom.
        ("TechnoEdgeHighErrorRate", "edge"): "active",
    }


def test_a_down_provider_silences_its_own_llm_warnings_only(alertmanager: str) -> None:
    alerts = [
        {"alertname": "TechnoProviderDown", "severity": "critical", "service": "executor", "provider": "fake"},
        {"alertname": "TechnoLLMHighErrorRate", "severity": "warning", "service": "executor", "provider": "fake"},
        {"alertname": "TechnoLLMHighErrorRate", "severity": "warning", "service": "executor", "provider": "openai"},
        {"alertname": "TechnoLLMSlowFirstToken", "severity": "warning", "service": "executor", "provider": "fake"},
        {"alertname": "TechnoLLMSlowFirstToken", "severity": "warning", "service": "executor", "provider": "openai"},
    ]
    response = httpx.post(f"{alertmanager}/api/v2/alerts", json=[{"labels": labels} for labels in alerts])
    assert response.status_code == 200, response.text
    assert _states(alertmanager, len(alerts)) == {
        ("TechnoProviderDown", "fake"): "active",
        ("TechnoLLMHighErrorRate", "fake"): "suppressed",
        ("TechnoLLMHighErrorRate", "openai"): "active",
        ("TechnoLLMSlowFirstToken", "fake"): "suppressed",
        ("TechnoLLMSlowFirstToken", "openai"): "active",
    }
