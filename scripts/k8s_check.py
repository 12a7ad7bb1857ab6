"""Build every Kubernetes overlay and check what it makes: schemas, then checkov's security checks.

Usage: python scripts/k8s_check.py [--checkov PATH] [--out DIR]

1. ``kubectl kustomize infra/k8s/overlays/<name>`` for every overlay (kubectl's built-in kustomize v5), written
   to ``DIR/<name>.yaml`` (default build/k8s).
2. Every object validated strictly (unknown fields are errors) against the Kubernetes KUBERNETES_VERSION
   schemas that ``kubernetes-validate`` ships. Custom resources have no schema there: their kinds are listed in
   SKIPPED, with the reason, and a kind that is in neither fails the check.
3. checkov's Kubernetes checks over the built files, offline: no failed check is allowed. A check that cannot
   apply is skipped only by an annotation on the object, ``checkov.io/skipN: CKV_K8S_XX=<reason>``.

Exit 0 when everything passes; the last lines summarise the counts.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from kubernetes_validate import utils as kubernetes_validate  # type: ignore[import-untyped]  # no stubs

ROOT = Path(__file__).resolve().parent.parent
OVERLAYS = ROOT / "infra" / "k8s" / "overlays"
CHECKOV = ROOT / "build" / "k8s-tools" / "bin" / "checkov"
OUT = ROOT / "build" / "k8s"
KUBERNETES_VERSION = "1.32.0"
MIN_KUSTOMIZE = (5, 0)

# Custom resources: kubernetes-validate ships the core API's schemas only, and no package on the registries we
# can reach ships these CRDs' schemas (cloudcoil's models ignore unknown fields, so they would not be strict).
# tests/infra/test_k8s.py checks the fields Techno relies on in each of them instead.
SKIPPED = {
    "Certificate": "cert-manager.io/v1 custom resource: no schema in kubernetes-validate",
    "Issuer": "cert-manager.io/v1 custom resource: no schema in kubernetes-validate",
    "PodMonitor": "monitoring.coreos.com/v1 custom resource: no schema in kubernetes-validate",
    "PrometheusRule": "monitoring.coreos.com/v1 custom resource: no schema in kubernetes-validate",
}

Manifest = dict[str, Any]


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        raise SystemExit("kubectl is required (with kustomize v5): make k8s-tools")
    version = subprocess.run([path, "version", "--client"], capture_output=True, text=True, check=True).stdout
    found = re.search(r"Kustomize Version: v(\d+)\.(\d+)", version)
    if found is None or (int(found[1]), int(found[2])) < MIN_KUSTOMIZE:
        raise SystemExit(f"kubectl with kustomize v{MIN_KUSTOMIZE[0]}+ is required, found:\n{version}")
    return path


def overlays() -> list[Path]:
    return sorted(path.parent for path in OVERLAYS.glob("*/kustomization.yaml"))


def build(overlay: Path, kubectl_path: str) -> str:
    result = subprocess.run([kubectl_path, "kustomize", str(overlay)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"kubectl kustomize {overlay.relative_to(ROOT)} failed:\n{result.stderr}")
    return result.stdout


def validate(manifests: list[Manifest]) -> tuple[list[str], Counter[str]]:
    """Errors, and the number of objects skipped per kind."""
    errors: list[str] = []
    skipped: Counter[str] = Counter()
    for manifest in manifests:
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        if kind in SKIPPED:
            skipped[kind] += 1
            continue
        try:
            kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(part) for part in error.path)
            errors.append(f"{kind}/{name}: {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(f"{kind}/{name}: no Kubernetes {KUBERNETES_VERSION} schema for {manifest['apiVersion']}")
    return errors, skipped


def checkov(checkov_path: Path, files: list[Path]) -> dict[str, Any]:
    if not checkov_path.exists():
        raise SystemExit(f"checkov is required at {checkov_path}: make k8s-tools")
    command = [str(checkov_path), "--framework", "kubernetes", "--skip-download", "--output", "json", "--compact"]
    for file in files:
        command += ["--file", str(file)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise SystemExit(f"checkov failed ({result.returncode}):\n{result.stdout}\n{result.stderr}") from None
    reports: list[dict[str, Any]] = report if isinstance(report, list) else [report]
    (kubernetes,) = [r for r in reports if r.get("check_type") == "kubernetes"]
    return kubernetes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--checkov", type=Path, default=CHECKOV, help=f"checkov executable (default: {CHECKOV})")
    parser.add_argument("--out", type=Path, default=OUT, help="where the built manifests go (default: build/k8s)")
    args = parser.parse_args(argv)
    kubectl_path = kubectl()
    args.out.mkdir(parents=True, exist_ok=True)
    failed = False
    built: list[Path] = []
    for overlay in overlays():
        text = build(overlay, kubectl_path)
        target = args.out / f"{overlay.name}.yaml"
        target.write_text(text)
        built.append(target)
        manifests = [m for m in yaml.safe_load_all(text) if m]
        errors, skipped = validate(manifests)
        for error in errors:
            print(f"ERROR {overlay.name}: {error}")
        failed |= bool(errors)
        kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(skipped.items()))
        validated = len(manifests) - sum(skipped.values()) - len(errors)
        print(
            f"{overlay.name}: built {len(manifests)} objects; {validated} valid against Kubernetes "
            f"{KUBERNETES_VERSION} (strict), {len(errors)} invalid; custom resources not schema-checked: {kinds}"
        )
    report = checkov(args.checkov, built)
    for check in report["results"]["failed_checks"]:
        print(f"FAILED {check['check_id']} {check['resource']} ({check['file_path']}): {check['check_name']}")
    for check in report["results"]["skipped_checks"]:
        reason = check["check_result"].get("suppress_comment", "")
        print(f"skipped {check['check_id']} {check['resource']}: {reason}")
    summary = report["summary"]
    print(
        f"checkov {summary['checkov_version']}: {summary['passed']} passed, {summary['failed']} failed, "
        f"{summary['skipped']} skipped by annotation, {summary['parsing_errors']} parsing errors"
    )
    failed |= bool(summary["failed"] or summary["parsing_errors"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
