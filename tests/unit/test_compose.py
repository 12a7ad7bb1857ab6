"""compose.yaml runs the whole stack: checked against the Compose specification and against the rest of the
repository (the files it mounts, the host names the Prometheus targets and Alertmanager receivers use), since no
Docker engine runs in CI."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
SECRETS = ROOT / "secrets"
REQUIRED = {
    "certs",
    "postgres",
    "redis",
    "memory-migrate",
    "memory",
    "executor",
    "gate",
    "edge",
    "prometheus",
    "alertmanager",
    "grafana",
    "alert-receiver",
    "otel-collector",
    "jaeger",
}
# Long-running services without a healthcheck, and why: nothing may then wait for them to be healthy.
NO_HEALTHCHECK = {"otel-collector": "its image is FROM scratch: no shell or HTTP client to probe from inside"}
COLLECTOR_CONFIG = ROOT / "infra/otel-collector/config.yaml"
NAMED_VOLUMES = {"certs", "postgres-data", "redis-data", "prometheus-data", "alertmanager-data", "grafana-data"}
CONDITIONS = {"service_healthy", "service_completed_successfully"}
# The gRPC services: main port (mutual TLS only) and the plaintext health port their healthchecks probe.
GRPC = {"gate": (50051, 50061), "executor": (50052, 50062), "memory": (50053, 50063)}
IDENTITIES = ("edge", *GRPC)
TLS_DIR = "/etc/techno/tls"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())  # resolves the anchors and `<<` merges
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def one_shot(name: str, services: dict[str, dict[str, Any]]) -> bool:
    """A job that runs once: not restarted, and whoever depends on it waits for it to complete."""
    waits = [s["depends_on"][name]["condition"] for s in services.values() if name in s.get("depends_on", {})]
    return services[name].get("restart") == "no" and bool(waits) and set(waits) == {"service_completed_successfully"}


def bind_sources(service: dict[str, Any]) -> list[str]:
    """Host paths of a service's bind mounts (short syntax ``source:target[:mode]`` or long syntax)."""
    sources = []
    for volume in service.get("volumes", []):
        source = volume.get("source", "") if isinstance(volume, dict) else volume.split(":", 1)[0]
        if source.startswith((".", "/", "~")):
            sources.append(source)
    return sources


def mount_target(service: dict[str, Any], source: str) -> str:
    for volume in service.get("volumes", []):
        if isinstance(volume, str) and volume.split(":")[0] == source:
            return volume.split(":")[1]
    raise AssertionError(f"{source} is not mounted")


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment is written as a mapping"
    return {key: str(value) for key, value in env.items()}


def test_it_is_valid_against_the_compose_specification() -> None:
    checker = Path(sys.executable).parent / "check-jsonschema"
    assert checker.exists(), f"check-jsonschema is required (a dev dependency) at {checker}"
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_part_of_the_stack_is_there(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) >= REQUIRED


def test_every_long_running_service_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if one_shot(name, services) or name in NO_HEALTHCHECK:
            continue
        healthcheck = service.get("healthcheck")
        assert healthcheck, f"{name} has no healthcheck"
        assert not healthcheck.get("disable"), f"{name} disables its healthcheck"
        assert healthcheck["test"][0] in {"CMD", "CMD-SHELL"}, name
    assert one_shot("memory-migrate", services)
    assert one_shot("certs", services)


def test_every_dependency_waits_for_a_condition(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: depends_on as a list waits for nothing but the start"
        for dependency, spec in depends_on.items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert spec.get("condition") in CONDITIONS, f"{name} -> {dependency}: {spec}"
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency} to be healthy"


def test_the_start_order_follows_the_request_path(services: dict[str, dict[str, Any]]) -> None:
    def waits_for(name: str) -> set[str]:
        return set(services[name].get("depends_on", {}))

    assert waits_for("memory-migrate") == {"postgres"}
    assert waits_for("memory") >= {"postgres", "memory-migrate"}
    assert waits_for("gate") >= {"memory", "executor", "redis"}
    assert waits_for("edge") >= {"gate"}
    assert waits_for("grafana") >= {"prometheus"}
    assert waits_for("alertmanager") >= {"alert-receiver"}


def test_named_volumes_are_declared_and_used(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    declared = set(compose["volumes"])
    assert declared >= NAMED_VOLUMES
    used = set()
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
            if source and not source.startswith((".", "/", "~")):
                assert source in declared, f"{name} mounts undeclared volume {source}"
                used.add(source)
    assert used == declared, f"declared but unused: {declared - used}"


def test_every_mounted_host_path_exists_in_the_repository(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    for name, service in services.items():
        for source in bind_sources(service):
            assert source.startswith("./"), f"{name}: {source} is not relative to the repository"
            assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
    # Secrets are the exception: local files under ./secrets/, documented there and kept out of git.
    for name, secret in compose["secrets"].items():
        assert secret["file"] == f"./secrets/{name}"
    readme = (SECRETS / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in compose["secrets"])
    ignored = subprocess.run(
        ["git", "check-ignore", "--quiet", "secrets/postgres_password"], cwd=ROOT, check=False, timeout=10
    )
    assert ignored.returncode == 0, "secret files must be ignored by git"
    readme_ignored = subprocess.run(
        ["git", "check-ignore", "--quiet", "secrets/README.md"], cwd=ROOT, check=False, timeout=10
    )
    assert readme_ignored.returncode == 1, "secrets/README.md must stay in git"


def test_grafana_password_comes_from_a_secret(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    grafana = services["grafana"]
    env = environment(grafana)
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env
    assert "grafana_admin_password" in grafana["secrets"]
    assert "grafana_admin_password" in compose["secrets"]
    ini = (ROOT / "infra/grafana/grafana.ini").read_text()
    assert not re.search(r"^\s*admin_password\s*=", ini, re.MULTILINE)
    assert re.search(r"^\[auth\.anonymous\]\s*\nenabled\s*=\s*false", ini, re.MULTILINE)


def test_grafana_mounts_what_its_provisioning_expects(services: dict[str, dict[str, Any]]) -> None:
    grafana = services["grafana"]
    assert mount_target(grafana, "./infra/grafana/provisioning") == "/etc/grafana/provisioning"
    assert mount_target(grafana, "./infra/grafana/grafana.ini") == "/etc/grafana/grafana.ini"
    providers = yaml.safe_load((ROOT / "infra/grafana/provisioning/dashboards/techno.yml").read_text())["providers"]
    dashboards = mount_target(grafana, "./infra/grafana/dashboards")
    assert dashboards == providers[0]["options"]["path"]
    home = re.search(
        r"^default_home_dashboard_path\s*=\s*(\S+)", (ROOT / "infra/grafana/grafana.ini").read_text(), re.M
    )
    assert home is not None
    assert home[1].startswith(f"{dashboards}/")
    assert (ROOT / "infra/grafana/dashboards" / home[1].removeprefix(f"{dashboards}/")).exists()
    datasources = yaml.safe_load((ROOT / "infra/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert urlsplit(datasources["datasources"][0]["url"]).hostname == "prometheus"


def test_prometheus_keeps_exemplars_and_reads_the_repository_config(services: dict[str, dict[str, Any]]) -> None:
    prometheus = services["prometheus"]
    assert "--enable-feature=exemplar-storage" in prometheus["command"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert mount_target(prometheus, "./infra/prometheus") == "/etc/prometheus"
    assert "/-/ready" in " ".join(prometheus["healthcheck"]["test"])


def test_prometheus_targets_and_alert_receivers_are_compose_services(services: dict[str, dict[str, Any]]) -> None:
    for targets_file in sorted((ROOT / "infra/prometheus/targets").glob("*.yml")):
        for group in yaml.safe_load(targets_file.read_text()):
            for target in group["targets"]:
                host = target.rsplit(":", 1)[0]
                assert host == "localhost" or host in services, f"{targets_file.name}: {target}"
    receiver_port = environment(services["alert-receiver"])["TECHNO_ALERT_RECEIVER_PORT"]
    alertmanager = yaml.safe_load((ROOT / "infra/alertmanager/alertmanager.yml").read_text())
    for receiver in alertmanager["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            url = urlsplit(webhook["url"])
            assert url.hostname in services, webhook["url"]
            if url.hostname == "alert-receiver":
                assert str(url.port) == receiver_port


def test_the_services_use_postgresql_and_redis(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    for name in ("memory", "memory-migrate"):
        url = urlsplit(environment(services[name])["TECHNO_MEMORY_DATABASE_URL"])
        assert (url.scheme, url.hostname, url.password) == ("postgresql+psycopg", "postgres", None)
        assert "postgres_password" in services[name]["secrets"]
    postgres = environment(services["postgres"])
    assert postgres["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert "POSTGRES_PASSWORD" not in postgres
    assert re.fullmatch(r"postgres:15[.\d]*(-\w+)?", services["postgres"]["image"])
    assert re.fullmatch(r"redis:7[.\d]*(-\w+)?", services["redis"]["image"])
    gate = environment(services["gate"])
    assert gate["TECHNO_GATE_LIMITS_BACKEND"] == "redis"
    assert urlsplit(gate["TECHNO_GATE_REDIS_URL"]).hostname == "redis"


def test_every_container_is_hardened_and_limited(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        assert service.get("read_only") is True, name
        assert service.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        assert service["deploy"]["resources"]["limits"]["memory"], name
        assert ":" in service["image"], f"{name}: pin the image tag"
        assert not service["image"].endswith(":latest"), f"{name}: pin the image tag"
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_dollar_signs_are_escaped_or_deliberate() -> None:
    """Compose interpolates ``$VAR`` from the host: a shell ``$`` meant for the container must be ``$$``."""
    for number, line in enumerate(COMPOSE.read_text().splitlines(), 1):
        code = line.split(" #", 1)[0].replace("$$", "")
        assert re.fullmatch(r"[^$]*(\$\{[A-Z_]+(:-[^}]*)?\}[^$]*)*", code), f"line {number}: {line}"


def test_the_stateless_services_scale_without_host_ports(services: dict[str, dict[str, Any]]) -> None:
    """`docker compose up --scale gate=3`: a fixed host port or container name would clash between replicas."""
    for name in GRPC:
        assert "ports" not in services[name], f"{name} publishes a host port, so it cannot scale"
        assert "container_name" not in services[name], name
    assert services["edge"]["ports"] == ["127.0.0.1:8080:8080"]
    targets = {"TECHNO_GATE_TARGET": "gate:50051", "TECHNO_EXECUTOR_TARGET": "executor:50052"}
    targets |= {"TECHNO_MEMORY_TARGET": "memory:50053"}
    for name in IDENTITIES:
        env = environment(services[name])
        for variable, address in targets.items():
            # dns:/// resolves the service name to every replica, for round_robin over them.
            assert env[variable] == f"dns:///{address}", f"{name}: {variable}"


def test_every_service_has_its_identity_from_the_certs_job(services: dict[str, dict[str, Any]]) -> None:
    certs = services["certs"]
    assert "python -m techno_stack.certs --out /certs" in " ".join(certs["entrypoint"])
    assert "certs:/certs" in certs["volumes"]
    assert certs.get("cap_add", []) == ["CHOWN"], "the certs job needs nothing but handing the files over"
    for name in IDENTITIES:
        service = services[name]
        env = environment(service)
        assert env["TECHNO_TLS_CERT_FILE"] == f"{TLS_DIR}/{name}.crt", name
        assert env["TECHNO_TLS_KEY_FILE"] == f"{TLS_DIR}/{name}.key", name
        assert env["TECHNO_TLS_CA_FILE"] == f"{TLS_DIR}/ca.crt", name
        assert f"certs:{TLS_DIR}:ro" in service["volumes"], name
        assert service["depends_on"]["certs"] == {"condition": "service_completed_successfully"}, name


def test_grpc_healthchecks_ask_the_plaintext_health_port_for_readiness(services: dict[str, dict[str, Any]]) -> None:
    for name, (_, health_port) in GRPC.items():
        assert environment(services[name])[f"TECHNO_{name.upper()}_HEALTH_PORT"] == str(health_port)
        test = services[name]["healthcheck"]["test"]
        assert test == ["CMD", "python", "-m", "techno_core.healthcheck", f"127.0.0.1:{health_port}", "readiness"]


def test_the_services_send_their_traces_to_the_collector(services: dict[str, dict[str, Any]]) -> None:
    """Standard OTEL_* variables on every service; the collector's OTLP/HTTP receiver listens where they send."""
    collector = yaml.safe_load(COLLECTOR_CONFIG.read_text())
    http = urlsplit(f"//{collector['receivers']['otlp']['protocols']['http']['endpoint']}")
    for name in IDENTITIES:
        env = environment(services[name])
        assert env["OTEL_TRACES_EXPORTER"] == "otlp", name
        endpoint = urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
        assert (endpoint.scheme, endpoint.hostname, endpoint.port) == ("http", "otel-collector", http.port), name
        assert "TECHNO_TRACE_EXPORTER" not in env, f"{name}: the deprecated spelling"
        # Telemetry being down must not keep a service from starting.
        assert "otel-collector" not in services[name].get("depends_on", {}), name


def test_the_collector_reads_the_repository_config_and_exports_to_jaeger(services: dict[str, dict[str, Any]]) -> None:
    collector = services["otel-collector"]
    assert collector["image"].startswith("otel/opentelemetry-collector-contrib:")
    target = mount_target(collector, "./infra/otel-collector/config.yaml")
    assert f"--config={target}" in collector["command"]
    config = yaml.safe_load(COLLECTOR_CONFIG.read_text())
    (pipeline,) = config["service"]["pipelines"].values()
    assert pipeline["receivers"] == ["otlp"]
    assert pipeline["processors"][0] == "memory_limiter", "the limiter goes first, to refuse before batching"
    (exporter,) = pipeline["exporters"]
    host, port = config["exporters"][exporter]["endpoint"].rsplit(":", 1)
    assert (host, port) == ("jaeger", "4317")  # Jaeger's OTLP/gRPC receiver
    assert services["jaeger"]["healthcheck"]
    assert collector["depends_on"]["jaeger"] == {"condition": "service_healthy"}
    for name in NO_HEALTHCHECK:
        waits = [s for s in services.values() if name in s.get("depends_on", {})]
        assert not waits, f"nothing can wait for {name}: it has no healthcheck"


def test_grafana_links_exemplars_to_the_trace_datasource() -> None:
    datasources = ROOT / "infra/grafana/provisioning/datasources"
    (prometheus,) = yaml.safe_load((datasources / "prometheus.yml").read_text())["datasources"]
    (jaeger,) = yaml.safe_load((datasources / "jaeger.yml").read_text())["datasources"]
    (destination,) = prometheus["jsonData"]["exemplarTraceIdDestinations"]
    assert destination["name"] == "trace_id"  # the exemplar label techno_core.metrics.trace_exemplar sets
    assert destination["datasourceUid"] == jaeger["uid"]
    assert (jaeger["type"], urlsplit(jaeger["url"]).hostname) == ("jaeger", "jaeger")
    assert urlsplit(jaeger["url"]).port == 16686  # the query service, as published by compose
