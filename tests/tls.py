"""Mutual TLS for the tests: one development PKI per test process, and the settings and channels of each identity.

The suite runs with mutual TLS on, as production does: every in-process service is given its own identity's
certificate (``as_identity``), and a test talking to a service connects as the identity it plays (``connect``).
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path
from typing import TypedDict

import grpc

from techno_core.identity import Identity
from techno_core.tls import CertificateFiles, channel_credentials, server_credentials
from techno_stack.certs import ensure_development_pki


@functools.cache
def pki() -> Path:
    """The CA and a certificate per identity, made once per test process (in a directory removed at exit)."""
    directory = Path(tempfile.mkdtemp(prefix="techno-test-pki-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return ensure_development_pki(directory / "tls")


def certificate_files(identity: Identity, directory: Path | None = None) -> CertificateFiles:
    directory = directory or pki()
    return CertificateFiles(directory / f"{identity}.crt", directory / f"{identity}.key", directory / "ca.crt")


class IdentitySettings(TypedDict):
    """The TLS fields of ``TechnoSettings``, typed so ``Settings(**as_identity(...))`` is checked by mypy."""

    tls_cert_file: str
    tls_key_file: str
    tls_ca_file: str


def as_identity(identity: Identity, directory: Path | None = None) -> IdentitySettings:
    """Settings keyword arguments that make a service (or tool) present ``identity``'s certificate."""
    files = certificate_files(identity, directory)
    return {"tls_cert_file": str(files.certificate), "tls_key_file": str(files.key), "tls_ca_file": str(files.ca)}


def environment(identity: Identity, directory: Path | None = None) -> dict[str, str]:
    """``as_identity`` as the environment variables of a child process (``TECHNO_TLS_CERT_FILE``, ...)."""
    settings = as_identity(identity, directory)
    return {
        "TECHNO_TLS_CERT_FILE": settings["tls_cert_file"],
        "TECHNO_TLS_KEY_FILE": settings["tls_key_file"],
        "TECHNO_TLS_CA_FILE": settings["tls_ca_file"],
    }


def connect(
    address: str, *, identity: Identity, server: Identity | None = None, directory: Path | None = None
) -> grpc.aio.Channel:
    """A mutual TLS channel to ``address``, presenting ``identity``; ``server`` is the identity the server's
    certificate must carry (None: checked against the address, which every development certificate lists)."""
    options = [] if server is None else [("grpc.ssl_target_name_override", server.value)]
    credentials = channel_credentials(certificate_files(identity, directory).read())
    return grpc.aio.secure_channel(address, credentials, options=options)


def add_port(server: grpc.aio.Server, identity: Identity, address: str = "127.0.0.1:0") -> int:
    """Bind a fake of a service with mutual TLS as ``identity`` (it presents that certificate and requires a
    client's, as the real service does); the bound port."""
    return server.add_secure_port(address, server_credentials(certificate_files(identity)))
