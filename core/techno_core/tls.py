"""Transport security of the internal gRPC hops: mutual TLS from files, reloaded when the files change.

Every service presents its identity certificate (a URI SAN ``spiffe://techno/<name>``, see ``identity``) and
requires one from every caller, with grpcio's own credentials. The files are named by settings and re-read
when they change, so a rotated certificate (cert-manager rewrites a mounted Secret in place) is used without a
restart: the server asks for its certificate on every new handshake (``dynamic_ssl_server_credentials``), and a
client channel is rebuilt on its next call (``channels.ReloadingChannel``).

Plaintext is an explicit opt-out (``TECHNO_INSECURE_PLAINTEXT``) that refuses any non-loopback address.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from techno_core.runner import StartupError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CertificateBundle:
    """One consistent read of the three files: this process's certificate chain and key, and the trusted CAs."""

    certificate_chain: bytes
    private_key: bytes
    trusted_cas: bytes


@dataclass
class CertificateFiles:
    """The certificate, key and CA files of one identity, re-read at most every ``recheck_seconds``.

    The contents (not the modification time) decide whether they changed: Kubernetes swaps a Secret volume's files
    by renaming a symlink, which keeps old modification times."""

    certificate: Path
    key: Path
    ca: Path
    recheck_seconds: float = 1.0
    _current: CertificateBundle | None = field(default=None, init=False)
    _checked_at: float = field(default=float("-inf"), init=False)

    def read(self) -> CertificateBundle:
        """The files as they are now; StartupError names the one that cannot be read."""
        parts = []
        for path in (self.certificate, self.key, self.ca):
            try:
                parts.append(path.read_bytes())
            except OSError as error:
                raise StartupError(f"cannot read TLS file {path}: {error.strerror}") from error
        return CertificateBundle(*parts)

    def current(self) -> CertificateBundle:
        if self._current is None:
            self._current = self.read()
            self._checked_at = time.monotonic()
        return self._current

    def changed(self) -> CertificateBundle | None:
        """The new bundle if the files changed since the last look, else None. A half-written rotation (a file
        missing or unreadable for a moment) keeps the current bundle and is looked at again later."""
        now = time.monotonic()
        if now - self._checked_at < self.recheck_seconds:
            return None
        self._checked_at = now
        current = self.current()
        try:
            fresh = self.read()
        except StartupError as error:
            log.warning("keeping the current TLS certificate: %s", error)
            return None
        if fresh == current:  # the three files' bytes compared, no hashing needed
            return None
        self._current = fresh
        log.info(
            "TLS certificate files changed; new connections use them", extra={"certificate": str(self.certificate)}
        )
        return fresh


def _server_configuration(bundle: CertificateBundle) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(bundle.private_key, bundle.certificate_chain)], root_certificates=bundle.trusted_cas
    )


def server_credentials(files: CertificateFiles) -> grpc.ServerCredentials:
    """Mutual TLS: the server presents ``files``' certificate and requires a client certificate signed by one of
    its CAs. gRPC calls the fetcher on every new handshake, so rotated files take effect without a restart."""

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        fresh = files.changed()
        return None if fresh is None else _server_configuration(fresh)

    # grpc-stubs types the fetcher as never returning None, but None is how it says "no change" (grpc docs).
    return grpc.dynamic_ssl_server_credentials(
        _server_configuration(files.current()),
        fetch,  # type: ignore[arg-type]
        require_client_authentication=True,
    )


def channel_credentials(bundle: CertificateBundle) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=bundle.trusted_cas,
        private_key=bundle.private_key,
        certificate_chain=bundle.certificate_chain,
    )


def is_loopback(host: str) -> bool:
    """True for a loopback address or ``localhost``; a name that merely resolves there today does not count."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def target_hosts(target: str) -> list[str]:
    """The hosts of a gRPC target: ``host:port``, ``dns:///host:port``, ``ipv4:a:p,b:p`` or ``ipv6:[..]:p``."""
    for scheme in ("dns:///", "dns:", "ipv4:", "ipv6:"):
        if target.startswith(scheme):
            target = target[len(scheme) :]
            break
    hosts = []
    for address in target.split(","):
        host, _, _ = address.rpartition(":")
        hosts.append(host or address)
    return hosts
