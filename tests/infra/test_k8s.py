"""The Kubernetes deployment (infra/k8s): every overlay builds with kubectl's kustomize, and what it builds keeps
the promises of docs/kubernetes.md — probes, resources, hardened pods, disruption budgets, autoscaling, network
policies, mTLS identities, hot-reloaded configuration — with the generated files current and the schema and
checkov checks (scripts/k8s_check.py) passing.

No cluster runs here: the manifests are checked as built. kubectl and checkov are required: a missing one fails
the test, never skips it (`make k8s-tools` installs both).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
OVERLAYS = ("dev", "prod")
GENERATOR = ROOT / "scripts" / "k8s_generate.py"
CHECKER = ROOT / "scripts" / "k8s_check.py"
CHECKOV = ROOT / "build" / "k8s-tools" / "bin" / "checkov"
DOCS = ROOT / "docs" / "kubernetes.md"
GRPC = {"gate": (50051, 50061, 9101), "executor": (50052, 50062, 9102), "memory": (50053, 50063, 9103)}
SERVICES = ("edge", *GRPC)
IDENTITIES = (*SERVICES, "operator")
AUTOSCALED = ("edge", "gate", "executor")
TLS_DIR = "/etc/techno/tls"
SCRATCH = "/tmp"  # noqa: S108  # a path inside the pods; nothing here writes to it
SKIP_ANNOTATION = re.compile(r"CKV2?_K8S_\d+=\S.{15,}")

Manifest = dict[str, Any]


def required_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is required to build the Kubernetes overlays: make k8s-tools")
    return path


@pytest.fixture(scope="module")
def built() -> dict[str, list[Manifest]]:
    kubectl = required_tool("kubectl")
    overlays = {}
    for overlay in OVERLAYS:
        result = subprocess.run(
            [kubectl, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, f"{overlay}: {result.stderr}"
        overlays[overlay] = [m for m in yaml.safe_load_all(result.stdout) if m]
    return overlays


def of_kind(manifests: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def deployments(built: dict[str, list[Manifest]]) -> Iterator[tuple[str, str, Manifest]]:
    for overlay, manifests in built.items():
        for name, deployment in of_kind(manifests, "Deployment").items():
            yield overlay, name, deployment


def pod(deployment: Manifest) -> Manifest:
    spec: Manifest = deployment["spec"]["template"]["spec"]
    return spec


def main_container(deployment: Manifest) -> Manifest:
    (container,) = [c for c in pod(deployment)["containers"] if c["name"] == deployment["metadata"]["name"]]
    found: Manifest = container
    return found


def all_containers(deployment: Manifest) -> list[Manifest]:
    return [*pod(deployment).get("initContainers", []), *pod(deployment)["containers"]]


def env(container: Manifest) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container.get("env", [])}


def selects(selector: Manifest, labels: dict[str, str]) -> bool:
    """A label selector (matchLabels / matchExpressions with In) that is not empty and matches ``labels``."""
    match = selector.get("matchLabels", {})
    expressions = selector.get("matchExpressions", [])
    if not match and not expressions:
        return False
    in_sets = all(e["operator"] == "In" and labels.get(e["key"]) in e["values"] for e in expressions)
    return in_sets and all(labels.get(key) == value for key, value in match.items())


# --- it builds, and the right objects are there ----------------------------------------------------------------


def test_every_overlay_builds_into_the_four_services(built: dict[str, list[Manifest]]) -> None:
    for overlay, manifests in built.items():
        assert set(of_kind(manifests, "Deployment")) == set(SERVICES), overlay
        (namespace,) = of_kind(manifests, "Namespace").values()
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        for manifest in manifests:
            if manifest["kind"] != "Namespace":
                assert manifest["metadata"]["namespace"] == namespace["metadata"]["name"], manifest["metadata"]
            labels = manifest["metadata"]["labels"]
            assert labels["app.kubernetes.io/part-of"] == "techno", manifest["metadata"]
            assert labels["app.kubernetes.io/version"], manifest["metadata"]


def test_every_pod_carries_the_common_labels(built: dict[str, list[Manifest]]) -> None:
    for overlay, name, deployment in deployments(built):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == name
        assert labels["app.kubernetes.io/part-of"] == "techno"
        assert labels["app.kubernetes.io/component"]
        image_tag = main_container(deployment)["image"].rsplit(":", 1)[1]
        assert labels["app.kubernetes.io/version"] == image_tag, f"{overlay}/{name}"
        assert main_container(deployment)["image"] == f"techno:{image_tag}"


# --- probes, resources, hardening, draining ----------------------------------------------------------------------


def test_grpc_services_probe_the_plaintext_health_port_natively(built: dict[str, list[Manifest]]) -> None:
    for overlay, name, deployment in deployments(built):
        container = main_container(deployment)
        if name == "edge":
            # On the edge's own probe listener, which slow clients on the main port cannot starve.
            ports = {port["name"]: port["containerPort"] for port in container["ports"]}
            assert ports["health"] == 8090
            assert {"name": "TECHNO_EDGE_HEALTH_PORT", "value": "8090"} in container["env"]
            for probe, path in (
                ("livenessProbe", "/healthz"),
                ("readinessProbe", "/readyz"),
                ("startupProbe", "/healthz"),
            ):
                assert container[probe]["httpGet"] == {"path": path, "port": "health"}, probe
            continue
        grpc_port, health_port, metrics_port = GRPC[name]
        where = f"{overlay}/{name}"
        assert container["livenessProbe"]["grpc"] == {"port": health_port, "service": "liveness"}, where
        assert container["readinessProbe"]["grpc"] == {"port": health_port, "service": "readiness"}, where
        assert container["startupProbe"]["grpc"] == {"port": health_port, "service": "liveness"}, where
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"grpc": grpc_port, "health": health_port, "metrics": metrics_port}, where
        variables = env(container)
        prefix = f"TECHNO_{name.upper()}"
        assert variables[f"{prefix}_PORT"] == str(grpc_port)
        assert variables[f"{prefix}_HEALTH_PORT"] == str(health_port)
        assert variables[f"{prefix}_METRICS_PORT"] == str(metrics_port)


def test_every_container_has_requests_and_limits(built: dict[str, list[Manifest]]) -> None:
    for overlay, name, deployment in deployments(built):
        for container in all_containers(deployment):
            resources = container["resources"]
            for bound in ("requests", "limits"):
                assert set(resources[bound]) >= {"cpu", "memory"}, f"{overlay}/{name}/{container['name']}: {bound}"


def test_every_pod_and_container_is_hardened(built: dict[str, list[Manifest]]) -> None:
    for overlay, name, deployment in deployments(built):
        spec = pod(deployment)
        context = spec["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["runAsUser"] == 10001
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        assert spec["serviceAccountName"] == name
        for container in all_containers(deployment):
            where = f"{overlay}/{name}/{container['name']}"
            security = container["securityContext"]
            assert security["runAsNonRoot"] is True, where
            assert security["runAsUser"] == 10001, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["capabilities"] == {"drop": ["ALL"]}, where
            assert security["seccompProfile"] == {"type": "RuntimeDefault"}, where
            # The root file system is read-only: scratch files go to an emptyDir.
            (scratch,) = [m["name"] for m in container["volumeMounts"] if m["mountPath"] == SCRATCH]
            assert "emptyDir" in {v["name"]: v for v in spec["volumes"]}[scratch], where


def test_each_service_has_its_own_service_account_without_a_token(built: dict[str, list[Manifest]]) -> None:
    for overlay, manifests in built.items():
        accounts = of_kind(manifests, "ServiceAccount")
        assert set(accounts) == set(SERVICES), overlay
        assert all(account["automountServiceAccountToken"] is False for account in accounts.values())


def test_pods_drain_before_they_are_killed(built: dict[str, list[Manifest]]) -> None:
    for overlay, name, deployment in deployments(built):
        container = main_container(deployment)
        pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        grace = float(env(container)["TECHNO_SHUTDOWN_GRACE_SECONDS"])
        budget = pod(deployment)["terminationGracePeriodSeconds"]
        assert pre_stop >= 5, f"{overlay}/{name}: endpoints need time to drop the pod before SIGTERM"
        assert pre_stop + grace + 5 <= budget, f"{overlay}/{name}: SIGKILL would cut the drain short"


def test_replicas_spread_over_nodes_and_zones(built: dict[str, list[Manifest]]) -> None:
    for overlay, name, deployment in deployments(built):
        constraints = pod(deployment)["topologySpreadConstraints"]
        keys = {c["topologyKey"] for c in constraints}
        assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}, f"{overlay}/{name}"
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert all(selects(c["labelSelector"], labels) for c in constraints)


# --- availability and scaling ------------------------------------------------------------------------------------


def test_every_deployment_has_a_matching_disruption_budget(built: dict[str, list[Manifest]]) -> None:
    for overlay, name, deployment in deployments(built):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        budgets = [
            b for b in of_kind(built[overlay], "PodDisruptionBudget").values() if selects(b["spec"]["selector"], labels)
        ]
        assert len(budgets) == 1, f"{overlay}/{name}"
        assert budgets[0]["spec"]["minAvailable"] == 1


def test_edge_gate_and_executor_autoscale_on_cpu(built: dict[str, list[Manifest]]) -> None:
    for overlay, manifests in built.items():
        autoscalers = of_kind(manifests, "HorizontalPodAutoscaler")
        assert set(autoscalers) == set(AUTOSCALED), overlay
        for name, hpa in autoscalers.items():
            assert hpa["apiVersion"] == "autoscaling/v2"
            spec = hpa["spec"]
            assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
            assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 10)
            (metric,) = spec["metrics"]
            assert metric["resource"]["name"] == "cpu"
            assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
        deployments_ = of_kind(manifests, "Deployment")
        for name in AUTOSCALED:
            assert "replicas" not in deployments_[name]["spec"], f"{name}: `kubectl apply` would undo the HPA"
        assert deployments_["memory"]["spec"]["replicas"] >= 2


def test_memory_migrates_before_it_serves(built: dict[str, list[Manifest]]) -> None:
    for manifests in built.values():
        memory = of_kind(manifests, "Deployment")["memory"]
        (migrate,) = pod(memory)["initContainers"]
        assert migrate["command"] == ["python", "-m", "techno_memory", "migrate"]
        assert migrate["image"] == main_container(memory)["image"]
        for container in (migrate, main_container(memory)):
            url = env(container)["TECHNO_MEMORY_DATABASE_URL"]["secretKeyRef"]
            assert url["key"] == "url"
            assert re.fullmatch(r"techno-memory-db(-[a-z0-9]{10})?", url["name"])  # dev's is generated


# --- service discovery, identities, configuration ----------------------------------------------------------------


def test_clients_balance_over_headless_services(built: dict[str, list[Manifest]]) -> None:
    for overlay, manifests in built.items():
        services = of_kind(manifests, "Service")
        for name, (grpc_port, _, _) in GRPC.items():
            headless = services[f"{name}-headless"]["spec"]
            assert headless["clusterIP"] == "None"
            assert headless["ports"][0]["port"] == grpc_port
            assert services[name]["spec"]["type"] == "ClusterIP", overlay
        assert services["edge"]["spec"]["ports"][0]["port"] == 8080
        deployments_ = of_kind(manifests, "Deployment")
        expected = {
            "edge": {"TECHNO_GATE_TARGET": "dns:///gate-headless:50051"},
            "gate": {
                "TECHNO_MEMORY_TARGET": "dns:///memory-headless:50053",
                "TECHNO_EXECUTOR_TARGET": "dns:///executor-headless:50052",
            },
            "executor": {"TECHNO_MEMORY_TARGET": "dns:///memory-headless:50053"},
        }
        for name, targets in expected.items():
            variables = env(main_container(deployments_[name]))
            assert {key: variables.get(key) for key in targets} == targets, f"{overlay}/{name}"


def test_each_identity_has_a_short_lived_certificate_with_its_spiffe_id(built: dict[str, list[Manifest]]) -> None:
    for overlay, manifests in built.items():
        namespace = next(iter(of_kind(manifests, "Namespace")))
        certificates = of_kind(manifests, "Certificate")
        issuers = of_kind(manifests, "Issuer")
        assert "ca" in issuers["techno-ca"]["spec"], overlay
        for identity in IDENTITIES:
            spec = certificates[f"techno-{identity}"]["spec"]
            assert spec["secretName"] == f"techno-{identity}-tls"
            assert spec["uris"] == [f"spiffe://techno/{identity}"]
            assert {"server auth", "client auth"} <= set(spec["usages"])
            assert spec["issuerRef"]["name"] in issuers
            assert spec["privateKey"]["rotationPolicy"] == "Always"
            assert (spec["duration"], spec["renewBefore"]) == ("168h", "48h")
            if identity in SERVICES:
                assert spec["dnsNames"][:2] == [identity, f"{identity}.{namespace}.svc.cluster.local"]
            if identity in GRPC:
                assert spec["dnsNames"][2:] == [
                    f"{identity}-headless",
                    f"{identity}-headless.{namespace}.svc.cluster.local",
                ]
        assert "NAMESPACE" not in yaml.safe_dump_all(manifests)


def test_services_load_their_identity_from_a_reloadable_secret_volume(built: dict[str, list[Manifest]]) -> None:
    for overlay, name, deployment in deployments(built):
        container = main_container(deployment)
        variables = env(container)
        assert variables["TECHNO_TLS_CERT_FILE"] == f"{TLS_DIR}/tls.crt"
        assert variables["TECHNO_TLS_KEY_FILE"] == f"{TLS_DIR}/tls.key"
        assert variables["TECHNO_TLS_CA_FILE"] == f"{TLS_DIR}/ca.crt"
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == TLS_DIR]
        assert "subPath" not in mount, f"{overlay}/{name}: a subPath mount never sees the renewed files"
        volumes = {v["name"]: v for v in pod(deployment)["volumes"]}
        assert volumes[mount["name"]]["secret"]["secretName"] == f"techno-{name}-tls"
        for other in container["volumeMounts"]:
            assert "subPath" not in other, f"{overlay}/{name}: {other}"


def test_the_gate_reads_the_repository_policy_from_a_fixed_name_configmap(built: dict[str, list[Manifest]]) -> None:
    policy = (ROOT / "config" / "policy.yaml").read_text()
    actions = (ROOT / "config" / "actions.yaml").read_text()
    for overlay, manifests in built.items():
        configmaps = of_kind(manifests, "ConfigMap")
        assert configmaps["techno-policy"]["data"] == {"policy.yaml": policy}, overlay
        gate = of_kind(manifests, "Deployment")["gate"]
        assert env(main_container(gate))["TECHNO_GATE_POLICY_FILE"] == "/etc/techno/policy/policy.yaml"
        volumes = {v["name"]: v for v in pod(gate)["volumes"]}
        (mount,) = [m for m in main_container(gate)["volumeMounts"] if m["mountPath"] == "/etc/techno/policy"]
        assert volumes[mount["name"]]["configMap"]["name"] == "techno-policy"
        executor = of_kind(manifests, "Deployment")["executor"]
        assert env(main_container(executor))["TECHNO_EXECUTOR_ACTIONS_FILE"] == "/etc/techno/actions/actions.yaml"
        (actions_map,) = [m for name, m in configmaps.items() if name.startswith("techno-actions-")]
        assert actions_map["data"] == {"actions.yaml": actions}


def test_prod_counts_limits_in_redis_and_keeps_provider_keys_in_files(built: dict[str, list[Manifest]]) -> None:
    deployments_ = of_kind(built["prod"], "Deployment")
    gate = env(main_container(deployments_["gate"]))
    assert gate["TECHNO_GATE_LIMITS_BACKEND"] == "redis"
    assert gate["TECHNO_GATE_REDIS_URL"] == {"secretKeyRef": {"name": "techno-redis", "key": "url"}}
    executor = main_container(deployments_["executor"])
    assert env(executor)["OPENAI_API_KEY_FILE"] == "/etc/techno/providers/openai"
    assert not any(key.endswith("_API_KEY") for key in env(executor))
    ingress = of_kind(built["prod"], "Ingress")["edge"]["spec"]
    assert ingress["tls"][0]["secretName"]
    assert ingress["rules"][0]["http"]["paths"][0]["backend"]["service"] == {"name": "edge", "port": {"name": "http"}}


def test_every_secret_the_cluster_must_provide_is_documented(built: dict[str, list[Manifest]]) -> None:
    docs = DOCS.read_text()
    for overlay, manifests in built.items():
        text = yaml.safe_dump_all(manifests)
        referenced = set(re.findall(r"secretName: (\S+)", text)) | set(
            re.findall(r"secretKeyRef:\s+key: \S+\s+name: (\S+)", text)
        )
        made = {f"techno-{identity}-tls" for identity in IDENTITIES} | set(of_kind(manifests, "Secret"))
        made |= {c["spec"]["secretName"] for c in of_kind(manifests, "Certificate").values()}
        for secret in sorted(referenced - made):
            assert f"`{secret}`" in docs, f"{overlay} needs the Secret {secret}: document it in docs/kubernetes.md"


# --- network policies --------------------------------------------------------------------------------------------


def policies(manifests: list[Manifest]) -> dict[str, Manifest]:
    return of_kind(manifests, "NetworkPolicy")


def test_everything_is_denied_unless_allowed(built: dict[str, list[Manifest]]) -> None:
    for overlay, manifests in built.items():
        deny = policies(manifests)["default-deny"]["spec"]
        assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}, overlay
        dns = policies(manifests)["allow-dns"]["spec"]
        assert dns["podSelector"] == {}
        assert {p["port"] for p in dns["egress"][0]["ports"]} == {53}


def test_every_deployment_has_its_own_network_policy(built: dict[str, list[Manifest]]) -> None:
    for overlay, name, deployment in deployments(built):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        own = [
            p
            for p in policies(built[overlay]).values()
            if p["spec"]["podSelector"].get("matchLabels") == {"app.kubernetes.io/name": name}
        ]
        assert len(own) == 1, f"{overlay}/{name}"
        assert selects(own[0]["spec"]["podSelector"], labels)
        assert set(own[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}


def allowed_callers(policy: Manifest) -> set[str]:
    return {
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
        for rule in policy["spec"].get("ingress", [])
        for peer in rule["from"]
        if "namespaceSelector" not in peer
    }


def allowed_pod_egress(policy: Manifest) -> set[tuple[str, int]]:
    return {
        (peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"], port["port"])
        for rule in policy["spec"].get("egress", [])
        for peer in rule.get("to", [])
        for port in rule["ports"]
        if "podSelector" in peer and "namespaceSelector" not in peer
    }


def allowed_external_ports(policy: Manifest) -> set[int]:
    return {port["port"] for rule in policy["spec"].get("egress", []) if "to" not in rule for port in rule["ports"]}


def test_the_network_policies_follow_the_call_graph(built: dict[str, list[Manifest]]) -> None:
    for manifests in built.values():
        found = policies(manifests)
        assert allowed_callers(found["memory"]) == {"gate", "executor", "operator"}
        assert allowed_callers(found["executor"]) == {"gate"}
        assert allowed_callers(found["gate"]) == {"edge"}
        assert allowed_callers(found["edge"]) == set()
        (edge_from,) = found["edge"]["spec"]["ingress"][0]["from"]
        assert edge_from["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "ingress-nginx"}
        assert allowed_pod_egress(found["edge"]) == {("gate", 50051)}
        assert allowed_pod_egress(found["gate"]) == {("memory", 50053), ("executor", 50052)}
        assert allowed_pod_egress(found["executor"]) == {("memory", 50053)}
        assert allowed_pod_egress(found["operator"]) == {("memory", 50053)}
        assert allowed_external_ports(found["gate"]) == {6379}
        assert allowed_external_ports(found["executor"]) == {443}
        assert allowed_external_ports(found["memory"]) == {5432}
        assert allowed_external_ports(found["edge"]) == set()


# --- monitoring --------------------------------------------------------------------------------------------------


def test_monitoring_is_opt_in_and_included_by_prod(built: dict[str, list[Manifest]]) -> None:
    assert not of_kind(built["dev"], "PodMonitor")
    assert not of_kind(built["dev"], "PrometheusRule")
    assert of_kind(built["prod"], "PodMonitor")
    assert of_kind(built["prod"], "PrometheusRule")


def test_the_pod_monitor_gives_series_the_labels_the_rules_use(built: dict[str, list[Manifest]]) -> None:
    manifests = built["prod"]
    (monitor,) = of_kind(manifests, "PodMonitor").values()
    endpoints = {e["port"]: e for e in monitor["spec"]["podMetricsEndpoints"]}
    scraped: set[str] = set()
    for name, deployment in of_kind(manifests, "Deployment").items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selects(monitor["spec"]["selector"], labels), name
        ports = {p["name"] for p in main_container(deployment)["ports"]}
        scraped |= {name} if ports & set(endpoints) else set()
    assert scraped == set(SERVICES)
    for endpoint in endpoints.values():
        assert endpoint["path"] == "/metrics"
        relabelled = {r["targetLabel"]: r["sourceLabels"] for r in endpoint["relabelings"]}
        assert relabelled["job"] == relabelled["service"] == ["__meta_kubernetes_pod_label_app_kubernetes_io_name"]
    (allow,) = [p for p in policies(manifests).values() if p["metadata"]["name"] == "allow-prometheus"]
    assert {p["port"] for p in allow["spec"]["ingress"][0]["ports"]} == {8080, 9101, 9102, 9103}


def test_the_rules_and_dashboards_are_the_repository_ones(built: dict[str, list[Manifest]]) -> None:
    (rule,) = of_kind(built["prod"], "PrometheusRule").values()
    source = [
        group
        for path in sorted((ROOT / "infra" / "prometheus" / "rules").glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
    ]
    assert rule["spec"]["groups"] == source
    dashboards = {
        key: value
        for configmap in of_kind(built["prod"], "ConfigMap").values()
        if configmap["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
        for key, value in configmap["data"].items()
    }
    files = {path.name: path.read_text() for path in (ROOT / "infra" / "grafana" / "dashboards").glob("*.json")}
    assert dashboards == files


def run_generator(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(GENERATOR), *args], capture_output=True, text=True, check=False)


def test_the_generated_files_are_current() -> None:
    result = run_generator("--check")
    assert result.returncode == 0, result.stderr


def test_check_names_a_stale_generated_file(tmp_path: Path) -> None:
    assert run_generator("--out", str(tmp_path)).returncode == 0
    assert run_generator("--check", "--out", str(tmp_path)).returncode == 0
    rule = tmp_path / "components" / "monitoring" / "prometheusrule.yaml"
    rule.write_text(rule.read_text().replace("TechnoServiceDown", "HandEdited"))
    result = run_generator("--check", "--out", str(tmp_path))
    assert result.returncode == 1
    assert "prometheusrule.yaml" in result.stderr
    assert "dashboards.yaml" not in result.stderr


# --- schemas and checkov -----------------------------------------------------------------------------------------


def test_checkov_skips_are_annotations_with_a_reason(built: dict[str, list[Manifest]]) -> None:
    for overlay, manifests in built.items():
        for manifest in manifests:
            for key, value in manifest["metadata"].get("annotations", {}).items():
                if key.startswith("checkov.io/skip"):
                    assert SKIP_ANNOTATION.fullmatch(value), f"{overlay}/{manifest['metadata']['name']}: {value}"


def test_every_object_is_valid_and_checkov_finds_nothing(tmp_path: Path) -> None:
    required_tool("kubectl")
    if not CHECKOV.exists():
        pytest.fail(f"checkov is required at {CHECKOV}: make k8s-tools")
    result = subprocess.run(
        [sys.executable, str(CHECKER), "--checkov", str(CHECKOV), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"checkov [\d.]+: [1-9]\d* passed, 0 failed", result.stdout), result.stdout
    for overlay in OVERLAYS:
        assert re.search(rf"^{overlay}: built \d+ objects; [1-9]\d* valid .* 0 invalid", result.stdout, re.M)
