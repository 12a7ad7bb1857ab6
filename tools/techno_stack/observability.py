"""Prometheus and Alertmanager next to a local stack: render a runnable copy of ``infra/prometheus/`` and
``infra/alertmanager/`` whose targets are the stack's loopback ports, then run both as child processes.

The committed configuration targets the compose host names (``edge:8080``, ``gate:9101`` …); the copy in the
state dir is rewritten to ``127.0.0.1:<port>``, every Alertmanager webhook points at a loopback alert
receiver, and the ``FAST`` profile (the live test's) shortens every interval and every rule's ``for:`` so an
incident is seen in seconds rather than minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from techno_stack.stack import ROOT, StackConfig, StackError, open_log, port_is_free, private_directory, terminate

INFRA = ROOT / "infra"
PROMETHEUS_BINARY = "prometheus"
ALERTMANAGER_BINARY = "prometheus-alertmanager"  # the Debian package's name for it
INSTALL_HINT = "apt-get install -y prometheus prometheus-alertmanager"
SERVICE_JOBS = ("edge", "gate", "executor", "memory")

_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


@dataclass(frozen=True)
class Profile:
    """What the rendered copy changes besides addresses; ``None`` keeps the committed value."""

    scrape_interval: str | None = None
    evaluation_interval: str | None = None
    max_for: str | None = None  # every rule's ``for:`` becomes min(its own, this)
    group_wait: str | None = None
    group_interval: str | None = None
    repeat_interval: str | None = None
    resend_delay: str | None = None  # Prometheus' --rules.alert.resend-delay


NORMAL = Profile()
FAST = Profile(
    scrape_interval="1s",
    evaluation_interval="1s",
    max_for="2s",
    group_wait="1s",
    group_interval="1s",
    repeat_interval="1h",  # one firing notification per alert, then the resolved one
    resend_delay="1s",
)


@dataclass(frozen=True)
class ObservabilityPorts:
    prometheus: int = 9090
    alertmanager: int = 9093
    receiver: int = 9095  # the alert receiver child, when Observability runs one


@dataclass(frozen=True)
class RenderedConfig:
    prometheus_config: Path
    alertmanager_config: Path


def parse_duration(text: str) -> float:
    """Seconds of a Prometheus duration (``90s``, ``1m30s``, ``500ms``, ``0``)."""
    text = str(text).strip()
    if text == "0":
        return 0.0
    parts = _DURATION.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def shorter_for(original: str, ceiling: str) -> str:
    """``original`` if it is already at most ``ceiling`` (0 stays 0), else ``ceiling``."""
    return original if parse_duration(original) <= parse_duration(ceiling) else ceiling


def loopback_targets(stack: StackConfig, ports: ObservabilityPorts) -> dict[str, list[str]]:
    """Each scrape job's addresses on loopback: the edge on its HTTP port, the gRPC services on their metrics
    ports."""
    p = stack.ports
    return {
        "edge": [f"127.0.0.1:{p.edge}"],
        "gate": [f"127.0.0.1:{p.gate_metrics}"],
        "executor": [f"127.0.0.1:{p.executor_metrics}"],
        "memory": [f"127.0.0.1:{p.memory_metrics}"],
        "prometheus": [f"127.0.0.1:{ports.prometheus}"],
        "alertmanager": [f"127.0.0.1:{ports.alertmanager}"],
    }


def render(
    out_dir: Path,
    *,
    targets: Mapping[str, list[str]],
    receiver_url: str,
    profile: Profile = NORMAL,
    infra: Path = INFRA,
) -> RenderedConfig:
    """Copy ``infra/prometheus`` and ``infra/alertmanager`` into ``out_dir`` and rewrite the copy."""
    prometheus_dir, alertmanager_dir = out_dir / "prometheus", out_dir / "alertmanager"
    for source, copy in ((infra / "prometheus", prometheus_dir), (infra / "alertmanager", alertmanager_dir)):
        if not source.is_dir():
            raise StackError(f"{source} is missing")
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(source, copy)
    prometheus_config = prometheus_dir / "prometheus.yml"
    _render_prometheus(prometheus_config, targets, profile)
    for rules in sorted(prometheus_dir.glob("rules/*.y*ml")):
        _render_rules(rules, profile)
    alertmanager_config = alertmanager_dir / "alertmanager.yml"
    _render_alertmanager(alertmanager_config, receiver_url, profile)
    return RenderedConfig(prometheus_config, alertmanager_config)


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise StackError(f"{path} is missing")
    document = yaml.safe_load(path.read_text())
    if not isinstance(document, dict):
        raise StackError(f"{path} is not a YAML mapping")
    return document


def _dump(path: Path, document: object) -> None:
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def _render_prometheus(config_path: Path, targets: Mapping[str, list[str]], profile: Profile) -> None:
    config = _load(config_path)
    base = config_path.parent
    global_ = config.setdefault("global", {})
    if profile.scrape_interval:
        global_["scrape_interval"] = profile.scrape_interval
        global_.pop("scrape_timeout", None)  # defaults to min(10s, interval); a longer one would be invalid
    if profile.evaluation_interval:
        global_["evaluation_interval"] = profile.evaluation_interval
    jobs = {str(job["job_name"]): job for job in config.get("scrape_configs") or []}
    missing = [name for name in SERVICE_JOBS if name not in jobs]
    if missing:
        raise StackError(f"{config_path}: no scrape job for {missing}")
    for name, job in jobs.items():
        if profile.scrape_interval:  # per-job overrides would undo the profile
            job.pop("scrape_interval", None)
            job.pop("scrape_timeout", None)
        if name not in targets:
            raise StackError(f"{config_path}: job {name!r} has no loopback address (known: {sorted(targets)})")
        _retarget(job, base, name, targets[name])
    for alertmanagers in (config.get("alerting") or {}).get("alertmanagers") or []:
        _retarget(alertmanagers, base, "alertmanager", targets["alertmanager"])
    _dump(config_path, config)


def _retarget(section: dict[str, Any], base: Path, name: str, addresses: list[str]) -> None:
    """Point a scrape job (or an ``alertmanagers`` entry) at ``addresses``, in the file_sd files it reads or in
    its static targets; the labels of the first target group stay."""
    for static in section.get("static_configs") or []:
        static["targets"] = list(addresses)
    for file_sd in section.get("file_sd_configs") or []:
        for file in file_sd.get("files") or []:
            if any(char in str(file) for char in "*?["):  # one file per job: a glob could hold others' targets
                raise StackError(f"job {name!r}: file_sd_configs should name its own file, not {file!r}")
            path = base / str(file)
            groups = yaml.safe_load(path.read_text()) if path.is_file() else None
            labels = groups[0].get("labels") if isinstance(groups, list) and groups else None
            group: dict[str, Any] = {"targets": list(addresses)}
            if labels:
                group["labels"] = labels
            path.parent.mkdir(parents=True, exist_ok=True)
            _dump(path, [group])


def _render_rules(path: Path, profile: Profile) -> None:
    document = _load(path)
    for group in document.get("groups") or []:
        if profile.evaluation_interval and "interval" in group:
            group["interval"] = profile.evaluation_interval
        for rule in group.get("rules") or []:
            if profile.max_for and "for" in rule:
                rule["for"] = shorter_for(str(rule["for"]), profile.max_for)
    _dump(path, document)


def _routes(route: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield route
    for child in route.get("routes") or []:
        yield from _routes(child)


def _render_alertmanager(path: Path, receiver_url: str, profile: Profile) -> None:
    config = _load(path)
    for route in _routes(config.setdefault("route", {})):
        top = route is config["route"]
        for key in ("group_wait", "group_interval", "repeat_interval"):
            value = getattr(profile, key)
            if value and (top or key in route):
                route[key] = value
    for receiver in config.get("receivers") or []:
        for webhook in receiver.get("webhook_configs") or []:
            webhook.pop("url_file", None)
            webhook.pop("http_config", None)  # the loopback receiver needs no credentials
            webhook["url"] = _receiver_endpoint(receiver_url, str(receiver.get("name", "")), webhook.get("url"))
    _dump(path, config)


def _receiver_endpoint(receiver_url: str, receiver_name: str, original: object) -> str:
    """The loopback receiver's ``/webhook`` or ``/log``: the original URL's path when it is one of them, else the
    receiver's name when it is, else ``/webhook``."""
    path = urlsplit(str(original)).path.strip("/") if original else ""
    name = path if path in ("webhook", "log") else receiver_name if receiver_name in ("webhook", "log") else "webhook"
    return f"{receiver_url.rstrip('/')}/{name}"


def missing_binaries() -> list[str]:
    return [binary for binary in (PROMETHEUS_BINARY, ALERTMANAGER_BINARY) if shutil.which(binary) is None]


@dataclass
class _Child:
    name: str
    process: asyncio.subprocess.Process


@dataclass
class Observability:
    """Prometheus and Alertmanager for one stack, configured from a rendered copy under its state dir.

    Alertmanager's webhooks go to ``receiver_url``; without one, an alert receiver child process
    (``python -m techno_stack.alert_receiver``) is started on ``ports.receiver`` and logs the alerts."""

    stack: StackConfig
    receiver_url: str | None = None
    ports: ObservabilityPorts = field(default_factory=ObservabilityPorts)
    profile: Profile = NORMAL
    infra: Path = INFRA  # where infra/prometheus and infra/alertmanager are read from
    start_timeout_seconds: float = 30.0
    children: list[_Child] = field(default_factory=list)

    @property
    def state_dir(self) -> Path:
        return self.stack.state_dir / "observability"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.prometheus}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.alertmanager}"

    @property
    def webhook_url(self) -> str:
        return self.receiver_url or f"http://127.0.0.1:{self.ports.receiver}"

    def render(self) -> RenderedConfig:
        return render(
            self.state_dir,
            targets=loopback_targets(self.stack, self.ports),
            receiver_url=self.webhook_url,
            profile=self.profile,
            infra=self.infra,
        )

    async def start(self) -> None:
        missing = missing_binaries()
        if missing:
            raise StackError(f"{', '.join(missing)} not installed ({INSTALL_HINT})")
        ports = [self.ports.prometheus, self.ports.alertmanager]
        if self.receiver_url is None:
            ports.append(self.ports.receiver)
        taken = [port for port in ports if not port_is_free(port)]
        if taken:
            raise StackError(f"ports already in use: {taken} (is another Prometheus or Alertmanager running?)")
        config = self.render()
        private_directory(self.stack.log_dir)
        try:
            if self.receiver_url is None:
                await self._start(
                    "alert-receiver",
                    [sys.executable, "-m", "techno_stack.alert_receiver"],
                    f"{self.webhook_url}/healthz",
                    env={
                        **{key: value for key, value in os.environ.items() if not key.startswith("TECHNO_")},
                        "TECHNO_ALERT_RECEIVER_HOST": "127.0.0.1",
                        "TECHNO_ALERT_RECEIVER_PORT": str(self.ports.receiver),
                    },
                )
            # Alertmanager first, so Prometheus has somewhere to send its first alerts.
            await self._start(
                "alertmanager",
                [
                    ALERTMANAGER_BINARY,
                    f"--config.file={config.alertmanager_config}",
                    f"--storage.path={self.state_dir / 'alertmanager-data'}",
                    f"--web.listen-address=127.0.0.1:{self.ports.alertmanager}",
                    "--cluster.listen-address=",  # one instance: no gossip port
                ],
                f"{self.alertmanager_url}/-/ready",
            )
            prometheus = [
                PROMETHEUS_BINARY,
                f"--config.file={config.prometheus_config}",
                f"--storage.tsdb.path={self.state_dir / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{self.ports.prometheus}",
                "--enable-feature=exemplar-storage",
            ]
            if self.profile.resend_delay:
                prometheus.append(f"--rules.alert.resend-delay={self.profile.resend_delay}")
            await self._start("prometheus", prometheus, f"{self.prometheus_url}/-/ready")
        except BaseException:
            await self.stop()
            raise

    async def stop(self, *, grace_seconds: float = 10.0) -> None:
        """SIGTERM in reverse start order, then SIGKILL whatever has not exited after ``grace_seconds``."""
        for child in reversed(self.children):
            await terminate(child.process, grace_seconds)
        self.children.clear()

    def exited(self) -> list[str]:
        return [child.name for child in self.children if child.process.returncode is not None]

    async def _start(
        self, name: str, command: list[str], ready_url: str, *, env: Mapping[str, str] | None = None
    ) -> None:
        log_path = self.stack.log_dir / f"{name}.log"
        with open_log(log_path) as log:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdout=log,
                stderr=log,
                stdin=asyncio.subprocess.DEVNULL,
                env=None if env is None else dict(env),
                start_new_session=True,
            )
        self.children.append(_Child(name, process))
        deadline = time.monotonic() + self.start_timeout_seconds
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise StackError(f"{name} exited with {process.returncode}; see {log_path}")
            if await asyncio.to_thread(_http_ok, ready_url):
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 0.1)
        raise StackError(f"{name} not ready after {self.start_timeout_seconds}s; see {log_path}")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (loopback URL we built)
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False
