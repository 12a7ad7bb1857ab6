"""The SRE pack, live: the stack with a real Prometheus and Alertmanager (the test copy of infra/prometheus and
infra/alertmanager: 1 s intervals, every ``for:`` at most 2 s) and a webhook receiver on loopback.

An incident is rehearsed through the edge's admin API — the fake provider fails until its circuit opens, the
memory service is killed — and the alerts must reach the receiver firing, then resolved once the provider
heals and memory is back. Then every Grafana panel's query must return data, every PromQL of the runbook and
every rule must evaluate without error, and latency exemplars must name traces the collector received.

The seconds from fault injection to the alert's delivery are printed (run with ``-s``) and written to
``alert-timings.json`` in the stack's state dir."""

from __future__ import annotations

import asyncio
import functools
import json
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from subprocess import PIPE, STDOUT

import httpx
import pytest
import pytest_asyncio
import yaml

from techno_stack.alert_receiver import AlertReceiver, ReceivedAlert
from techno_stack.observability import (
    FAST,
    INSTALL_HINT,
    Observability,
    ObservabilityPorts,
    loopback_targets,
    missing_binaries,
    parse_duration,
    render,
)
from techno_stack.stack import Ports, Stack, StackConfig, free_port

from ..dashboard_queries import dashboard_queries
from .conftest import POLICY, RunningStack
from .observability_support import (
    RUNBOOK,
    Clients,
    Prometheus,
    drive_traffic,
    panels_without_data,
    runbook_queries,
)
from .otlp_receiver import OtlpReceiver
from .support import eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")

HEALTHY = {"latencyMs": 0, "errorRate": 0.0, "retryAfterSeconds": 1}
ALERT_WITHIN = 30.0  # seconds: generous against the ~5 s the fast profile needs


@dataclass
class Observed:
    running: RunningStack
    observability: Observability
    receiver: AlertReceiver
    prometheus: Prometheus
    clients: Clients

    @property
    def stack(self) -> Stack:
        return self.running.stack


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def observed(
    create_postgres_database: Callable[[], str], otlp_receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Observed]:
    missing = missing_binaries()
    if missing:
        pytest.fail(f"{', '.join(missing)} required by the live observability test: {INSTALL_HINT}")
    state: Path = tmp_path_factory.mktemp("observed")
    config = StackConfig(
        state_dir=state,
        ports=Ports.free(),
        database_url=create_postgres_database(),
        extra_env={
            "OTEL_TRACES_EXPORTER": "otlp",  # sampled spans, so latency exemplars carry trace ids
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": otlp_receiver.endpoint,
            "TECHNO_GATE_POLICY_FILE": str(POLICY),
            "TECHNO_CB_TIMEOUT": "1",  # an open circuit lets its half-open probe through after 1 s
        },
    )
    stack = Stack(config)
    with AlertReceiver() as receiver:
        observability = Observability(
            config,
            receiver_url=receiver.url,
            ports=ObservabilityPorts(prometheus=free_port(), alertmanager=free_port()),
            profile=FAST,
        )
        try:
            await stack.start()
            await observability.start()
            async with (
                httpx.AsyncClient(base_url=stack.edge_url, timeout=10) as edge,
                httpx.AsyncClient(base_url=observability.prometheus_url, timeout=10) as prometheus_client,
            ):
                running = RunningStack(stack, config.key_file.read_text().strip(), otlp_receiver, POLICY)
                _, tiny = await running.create_key("tiny")
                clients = Clients(edge, {"X-API-Key": running.key}, {"X-API-Key": tiny})
                prometheus = Prometheus(prometheus_client)
                await _every_target_up(prometheus)
                await _key_loaded(clients)
                yield Observed(running, observability, receiver, prometheus, clients)
        finally:
            await observability.stop()
            await stack.stop()


async def _every_target_up(prometheus: Prometheus) -> None:
    async def up() -> bool:
        targets = await prometheus.targets()
        return len(targets) >= 6 and all(t["health"] == "up" for t in targets)

    try:
        await eventually(up, within=20)
    except pytest.fail.Exception:
        down = [(t["labels"].get("job"), t["scrapeUrl"], t["lastError"]) for t in await prometheus.targets()]
        pytest.fail(f"Prometheus targets not all up: {down}")


async def _key_loaded(clients: Clients) -> None:
    async def loaded() -> bool:
        return (await clients.edge.get("/v1/actions", headers=clients.tiny)).status_code == 200

    await eventually(loaded)


async def test_an_incident_is_alerted_and_resolved_and_every_panel_has_data(observed: Observed) -> None:
    clients, receiver, stack = observed.clients, observed.receiver, observed.stack
    await drive_traffic(clients)

    # The provider fails: its breaker opens and the on-call webhook hears of it.
    injected = time.monotonic()
    await clients.set_faults(errorRate=1.0, retryAfterSeconds=1)

    async def breaker_open() -> bool:
        if await clients.breaker_state() == "BREAKER_STATE_OPEN":
            return True
        await clients.process()  # a failure, counted by the breaker
        return False

    await eventually(breaker_open, within=15)
    # No traffic now: a request after the 1 s cooldown would be the half-open probe, and fail.
    breaker_fired = await receiver.arrival(
        "TechnoCircuitBreakerOpen", "firing", {"provider": "fake"}, receiver="webhook", within=ALERT_WITHIN
    )
    fault_to_alert = breaker_fired.received_at - injected
    print(f"\nfault injection -> TechnoCircuitBreakerOpen delivered to the webhook: {fault_to_alert:.1f} s")
    await receiver.arrival(
        "TechnoCircuitBreakerOpen", "firing", {"provider": "fake"}, receiver="log", within=ALERT_WITHIN
    )

    # A service dies.
    killed = time.monotonic()
    await stack.kill("memory")
    down_fired = await receiver.arrival(
        "TechnoServiceDown", "firing", {"service": "memory"}, receiver="webhook", within=ALERT_WITHIN
    )
    kill_to_alert = down_fired.received_at - killed
    print(f"memory killed -> TechnoServiceDown delivered to the webhook: {kill_to_alert:.1f} s")

    # Recovery: memory comes back, the provider heals and the half-open probe closes the breaker. Healing is an
    # ADMIN action recorded in memory first, so it waits until the gate is ready again, i.e. has reconnected to
    # memory (its readiness probes memory over the same channel; the edge's /readyz follows it).
    await stack.restart("memory")

    async def gate_ready() -> bool:
        return (await clients.edge.get("/readyz")).status_code == 200

    await eventually(gate_ready, within=15)
    await clients.set_faults(**HEALTHY)

    async def breaker_closed() -> bool:
        return (await clients.process()).status_code == 200 and await clients.breaker_state() == "BREAKER_STATE_CLOSED"

    await eventually(breaker_closed, within=15)
    resolved = time.monotonic()
    down_resolved = await receiver.arrival(
        "TechnoServiceDown", "resolved", {"service": "memory"}, within=ALERT_WITHIN, after=down_fired.received_at
    )
    breaker_resolved = await receiver.arrival(
        "TechnoCircuitBreakerOpen",
        "resolved",
        {"provider": "fake"},
        within=ALERT_WITHIN,
        after=breaker_fired.received_at,
    )
    _record_timings(
        observed,
        fault_to_alert=fault_to_alert,
        kill_to_alert=kill_to_alert,
        recovery_to_resolved=max(a.received_at for a in (down_resolved, breaker_resolved)) - resolved,
        alerts=receiver.alerts,
    )

    # Every panel of every dashboard has data, now that every kind of event has happened.
    await drive_traffic(clients)
    queries = dashboard_queries()
    assert queries, "no panel queries found in infra/grafana/dashboards/*.json"
    offenders: list[str] = []

    async def every_panel_has_data() -> bool:
        offenders[:] = await panels_without_data(observed.prometheus, queries)
        return not offenders

    try:
        await eventually(every_panel_has_data, within=15)
    except pytest.fail.Exception:
        pytest.fail(f"{len(offenders)} of {len(queries)} panel queries without data:\n" + "\n".join(offenders))


async def test_every_runbook_query_and_every_rule_evaluates(observed: Observed) -> None:
    queries = runbook_queries()
    assert queries, f"no ```promql blocks in {RUNBOOK}"
    failures = []
    for expr in queries:
        answer = await observed.prometheus.query(expr)
        if answer.get("status") != "success":
            failures.append(f"{expr}\n  -> {answer.get('errorType')}: {answer.get('error')}")
    assert not failures, f"{len(failures)} of {len(queries)} runbook queries fail:\n" + "\n".join(failures)

    rules = await observed.prometheus.rules()
    assert rules, "Prometheus loaded no rules"

    async def every_rule_evaluated() -> bool:
        return all(rule.get("health") != "unknown" for rule in await observed.prometheus.rules())

    await eventually(every_rule_evaluated, within=10)
    broken = [f"{r['name']}: {r.get('lastError')}" for r in await observed.prometheus.rules() if r["health"] != "ok"]
    assert not broken, broken


async def test_latency_exemplars_link_to_the_traces_collected(observed: Observed) -> None:
    since = time.time() - 1
    for _ in range(3):
        assert (await observed.clients.process()).status_code == 200
    collected = observed.running.receiver

    async def linked(expr: str) -> bool:
        series = await observed.prometheus.exemplars(expr, since=since)
        trace_ids = {e["labels"].get("trace_id") for s in series for e in s["exemplars"]}
        return any(collected.services_in_trace(trace_id) for trace_id in trace_ids if trace_id)

    histograms = [
        *(f'grpc_server_handling_seconds_bucket{{job="{job}"}}' for job in ("gate", "executor", "memory")),
        'llm_request_latency_seconds_bucket{provider="fake"}',
    ]
    missing = []
    for expr in histograms:
        try:
            await eventually(functools.partial(linked, expr), within=10)
        except pytest.fail.Exception:
            missing.append(expr)
    assert not missing, f"no exemplar naming a collected trace in {missing}"


async def test_the_rendered_copy_is_valid_and_fast_and_stays_on_loopback(tmp_path: Path) -> None:
    ports = Ports.free()
    copy = render(
        tmp_path,
        targets=loopback_targets(StackConfig(ports=ports), ObservabilityPorts(9090, 9093)),
        receiver_url="http://127.0.0.1:9095",
        profile=FAST,
    )
    for command in (
        ["promtool", "check", "config", str(copy.prometheus_config)],
        ["amtool", "check-config", str(copy.alertmanager_config)],
    ):
        if shutil.which(command[0]) is None:
            pytest.fail(f"{command[0]} is required: {INSTALL_HINT}")
        checked = await asyncio.create_subprocess_exec(*command, stdout=PIPE, stderr=STDOUT)
        output, _ = await checked.communicate()
        assert checked.returncode == 0, output.decode()

    rendered = tmp_path / "prometheus"
    assert yaml.safe_load((rendered / "targets" / "memory.yml").read_text())[0]["targets"] == [
        f"127.0.0.1:{ports.memory_metrics}"
    ]
    durations = [
        rule["for"]
        for path in (rendered / "rules").glob("*.yml")
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "for" in rule
    ]
    assert durations, "no rule has a for: clause"
    assert all(parse_duration(d) <= 2 for d in durations), durations
    alertmanager = yaml.safe_load(copy.alertmanager_config.read_text())
    urls = {w["url"] for r in alertmanager["receivers"] for w in r.get("webhook_configs", [])}
    assert urls == {"http://127.0.0.1:9095/webhook", "http://127.0.0.1:9095/log"}


async def test_the_receiver_refuses_what_is_not_a_notification() -> None:
    with AlertReceiver() as receiver:
        async with httpx.AsyncClient(base_url=receiver.url) as client:
            assert (await client.post("/webhook", content=b"{not json")).status_code == 400
            assert (await client.post("/webhook", json=[1, 2])).status_code == 400
            assert (await client.post("/elsewhere", json={"alerts": []})).status_code == 404
            assert (await client.get("/healthz")).status_code == 200
            alert = {"status": "firing", "labels": {"alertname": "A", "service": "gate"}, "startsAt": "now"}
            assert (await client.post("/log", json={"alerts": [alert]})).json() == {"received": 1}
    assert receiver.find("A", "firing", {"service": "gate"}, receiver="log") is not None
    assert receiver.find("A", "resolved") is None


def _record_timings(observed: Observed, *, alerts: list[ReceivedAlert], **seconds: float) -> None:
    """Kept next to the stack's logs, for the closing note of the issue."""
    path = observed.stack.config.state_dir / "alert-timings.json"
    delivered = [
        {"receiver": a.receiver, "alertname": a.name, "status": a.status, "labels": dict(a.labels)} for a in alerts
    ]
    path.write_text(json.dumps({**{k: round(v, 2) for k, v in seconds.items()}, "delivered": delivered}, indent=2))
    print(f"timings: {path}")
