"""The transport security a process runs with, decided once from its settings at start.

Mutual TLS unless the operator opted out; the opt-out refuses to start when any address it would use is not on
loopback, so plaintext can never reach a network by accident.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from opentelemetry.sdk.trace import TracerProvider

from techno_core.channels import open_channel
from techno_core.identity import Identity
from techno_core.runner import StartupError
from techno_core.settings import TechnoSettings
from techno_core.tls import CertificateFiles, is_loopback, server_credentials, target_hosts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Transport:
    """How this process talks to the others: ``certificates`` None means the plaintext opt-out."""

    certificates: CertificateFiles | None

    @property
    def secure(self) -> bool:
        return self.certificates is not None

    def server_credentials(self) -> grpc.ServerCredentials | None:
        return None if self.certificates is None else server_credentials(self.certificates)

    def channel(self, target: str, tracer_provider: TracerProvider, server: Identity | None) -> grpc.aio.Channel:
        return open_channel(target, tracer_provider, certificates=self.certificates, server=server)


def transport_from(
    settings: TechnoSettings, *, listen_hosts: Sequence[str] = (), targets: Sequence[str] = ()
) -> Transport:
    """The transport ``settings`` ask for, checked: StartupError says what to fix."""
    if settings.insecure_plaintext:
        exposed = [
            host for host in [*listen_hosts, *(h for t in targets for h in target_hosts(t))] if not is_loopback(host)
        ]
        if exposed:
            raise StartupError(
                f"TECHNO_INSECURE_PLAINTEXT is for loopback only, but {', '.join(exposed)} is not a loopback address; "
                "configure TECHNO_TLS_CERT_FILE, TECHNO_TLS_KEY_FILE and TECHNO_TLS_CA_FILE instead"
            )
        log.warning("internal gRPC hops are PLAINTEXT (TECHNO_INSECURE_PLAINTEXT): no peer authentication")
        return Transport(None)
    files = {
        "TECHNO_TLS_CERT_FILE": settings.tls_cert_file,
        "TECHNO_TLS_KEY_FILE": settings.tls_key_file,
        "TECHNO_TLS_CA_FILE": settings.tls_ca_file,
    }
    missing = [name for name, value in files.items() if not value]
    if missing:
        raise StartupError(
            f"mutual TLS needs {', '.join(missing)} (`make run` creates development certificates under var/tls); "
            "TECHNO_INSECURE_PLAINTEXT=true runs plaintext on loopback only"
        )
    certificates = CertificateFiles(
        Path(settings.tls_cert_file), Path(settings.tls_key_file), Path(settings.tls_ca_file)
    )
    certificates.current()  # unreadable files stop the start, naming the file
    return Transport(certificates)
