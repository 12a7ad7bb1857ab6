"""Real memory, executor and gate servers on loopback with mutual TLS, and clients presenting any certificate:
each Techno identity, a certificate of our CA without an identity, one from another CA, none at all."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from opentelemetry.sdk.trace import TracerProvider

from techno_core.grpc_errors import error_info_of, rpc_status_of
from techno_core.identity import Identity
from techno_core.server import GrpcApp
from techno_core.tls import CertificateFiles, channel_credentials
from techno_stack.certs import Authority, issue, new_authority
from tests.integration.services import InProcess, migrated_sqlite
from tests.tls import certificate_files, pki

POLICY = Path(__file__).resolve().parents[3] / "config" / "policy.yaml"
# Each test channel gets its own connections: gRPC would otherwise share one between channels of equal
# arguments, and a test about handshakes must make its own.
LOCAL_SUBCHANNELS = ("grpc.use_local_subchannel_pool", 1)


def our_authority() -> Authority:
    """The CA of the test PKI (``tests.tls.pki``), which every in-process service trusts."""
    directory = pki()
    certificate = x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes())
    key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return Authority(certificate, key)


def write_files(directory: Path, name: str, authority: Authority, *, uri: str | None = None) -> CertificateFiles:
    """A certificate for ``name`` from ``authority``, with a CA file trusting only our CA (so the client
    accepts the servers' certificates, and any refusal is the server's)."""
    directory.mkdir(parents=True, exist_ok=True)
    certificate, key = issue(authority, name, uri=uri)
    files = CertificateFiles(directory / f"{name}.crt", directory / f"{name}.key", directory / "ca.crt")
    files.certificate.write_bytes(certificate)
    files.key.write_bytes(key)
    files.ca.write_bytes((pki() / "ca.crt").read_bytes())
    return files


def secure_channel(address: str, files: CertificateFiles) -> grpc.aio.Channel:
    return grpc.aio.secure_channel(address, channel_credentials(files.read()), options=[LOCAL_SUBCHANNELS])


def no_certificate_channel(address: str) -> grpc.aio.Channel:
    """TLS that trusts our CA but presents no client certificate."""
    credentials = grpc.ssl_channel_credentials(root_certificates=(pki() / "ca.crt").read_bytes())
    return grpc.aio.secure_channel(address, credentials, options=[LOCAL_SUBCHANNELS])


def plaintext_channel(address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(address, options=[LOCAL_SUBCHANNELS])


@dataclass(frozen=True)
class Peers:
    """Client certificate files for every kind of caller."""

    stranger: CertificateFiles  # our CA, no URI SAN
    foreign: CertificateFiles  # our CA, a URI of another trust domain
    outsider: CertificateFiles  # another CA, a well-formed Techno URI (spiffe://techno/gate)

    def named(self, name: str) -> CertificateFiles:
        files: CertificateFiles = getattr(self, name)
        return files


def as_peer(address: str, identity: Identity) -> grpc.aio.Channel:
    """A mutual TLS channel presenting ``identity``'s certificate of our CA."""
    return secure_channel(address, certificate_files(identity))


@pytest.fixture(scope="session")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Peers:
    directory = tmp_path_factory.mktemp("peers")
    ours = our_authority()
    return Peers(
        stranger=write_files(directory / "stranger", "stranger", ours, uri=""),
        foreign=write_files(directory / "foreign", "gate", ours, uri="spiffe://elsewhere/gate"),
        outsider=write_files(directory / "outsider", "gate", new_authority("Not Techno CA")),
    )


@dataclass
class Services:
    memory: GrpcApp
    executor: GrpcApp
    gate: GrpcApp

    def app(self, name: str) -> GrpcApp:
        app: GrpcApp = getattr(self, name)
        return app


@pytest.fixture
async def services(tmp_path: Path, tracer_provider: TracerProvider) -> AsyncIterator[Services]:
    """The three gRPC services, each presenting its own identity, as a deployment runs them."""
    async with InProcess(tracer_provider) as start:
        memory = await start.memory(await migrated_sqlite(tmp_path / "memory.db"))
        executor = await start.executor(memory, executor_id="executor-mtls")
        gate = await start.gate(memory, executor, policy_file=POLICY, gate_id="gate-mtls")
        yield Services(memory, executor, gate)


def reason_of(error: grpc.aio.AioRpcError) -> str:
    info = error_info_of(rpc_status_of(error))
    assert info is not None, f"{error.code().name} without ErrorInfo: {error.details()}"
    reason: str = info.reason
    return reason


def denial(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str]:
    """(code, ErrorInfo reason) of a refusal by the authorization interceptor."""
    return error.code(), reason_of(error)


NOT_AUTHORIZED = (grpc.StatusCode.PERMISSION_DENIED, "PEER_NOT_AUTHORIZED")
UNAUTHENTICATED = (grpc.StatusCode.UNAUTHENTICATED, "PEER_UNAUTHENTICATED")
