"""Certificate rotation without a restart: a server answers each new handshake with its files as they are now,
and a client channel rebuilds itself on its next call after its files changed.

The memory server here has its own certificate files in a temporary directory, rechecked on every handshake
(``recheck_seconds=0``), so a rotation takes effect on the next connection and no test waits for a clock."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from techno.memory.v1 import memory_pb2, memory_pb2_grpc
from techno_core.channels import ReloadingChannel, TraceContextChannel, open_channel
from techno_core.identity import Identity
from techno_core.server import GrpcApp
from techno_core.tls import CertificateBundle, CertificateFiles, channel_credentials
from techno_core.transport import Transport
from techno_memory.bootstrap import bootstrap as memory_bootstrap
from techno_memory.settings import MemorySettings
from techno_stack.certs import Authority, issue, new_authority
from tests.integration.services import migrated_sqlite

from .calls import refused
from .conftest import LOCAL_SUBCHANNELS, NOT_AUTHORIZED, denial

OK, REFUSED = grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE


def pem(*authorities: Authority) -> bytes:
    return b"".join(a.certificate.public_bytes(serialization.Encoding.PEM) for a in authorities)


def replace(path: Path, data: bytes) -> None:
    """Atomically, as a Secret volume is updated: a reader sees the old file or the new one."""
    temporary = path.with_name(f".{path.name}.new")
    temporary.write_bytes(data)
    temporary.replace(path)


def files_in(directory: Path, name: str) -> CertificateFiles:
    directory.mkdir(parents=True, exist_ok=True)
    return CertificateFiles(
        directory / f"{name}.crt", directory / f"{name}.key", directory / "ca.crt", recheck_seconds=0
    )


def install(files: CertificateFiles, identity: Identity, issuer: Authority, *trusted: Authority) -> None:
    """``identity``'s certificate from ``issuer``, and a CA file trusting ``trusted``, put in place."""
    certificate, key = issue(issuer, str(identity))
    replace(files.ca, pem(*trusted))
    replace(files.key, key)
    replace(files.certificate, certificate)


@dataclasses.dataclass
class Rotation:
    old: Authority
    new: Authority
    server_files: CertificateFiles
    memory: GrpcApp

    def client(self, identity: Identity, issuer: Authority, *trusted: Authority) -> grpc.aio.Channel:
        """A channel with its own connection, presenting ``identity`` from ``issuer`` and trusting ``trusted``."""
        certificate, key = issue(issuer, str(identity))
        credentials = channel_credentials(CertificateBundle(certificate, key, pem(*trusted)))
        options = [LOCAL_SUBCHANNELS, ("grpc.ssl_target_name_override", Identity.MEMORY.value)]
        return grpc.aio.secure_channel(self.memory.address, credentials, options=options)

    async def served(self, channel: grpc.aio.Channel) -> grpc.StatusCode:
        """How a call on ``channel`` ends: OK, or UNAVAILABLE when either side refused the other's certificate."""
        try:
            await memory_pb2_grpc.MemoryServiceStub(channel).ListApiKeys(memory_pb2.ListApiKeysRequest(), timeout=5)
        except grpc.aio.AioRpcError as error:
            return error.code()
        return grpc.StatusCode.OK

    async def serves(self, identity: Identity, issuer: Authority, *trusted: Authority) -> grpc.StatusCode:
        async with self.client(identity, issuer, *trusted) as channel:
            return await self.served(channel)


@pytest.fixture
async def rotation(tmp_path: Path, tracer_provider: TracerProvider) -> AsyncIterator[Rotation]:
    """Memory presenting a certificate of the old CA and trusting only the old CA."""
    old, new = new_authority("Techno CA 2026"), new_authority("Techno CA 2027")
    server_files = files_in(tmp_path / "memory-tls", "memory")
    install(server_files, Identity.MEMORY, old, old)
    settings = MemorySettings(
        memory_database_url=await migrated_sqlite(tmp_path / "memory.db"),
        memory_port=0,
        memory_metrics_port=0,
        tls_cert_file=str(server_files.certificate),
        tls_key_file=str(server_files.key),
        tls_ca_file=str(server_files.ca),
    )
    memory = await memory_bootstrap(settings, tracer_provider=tracer_provider, registry=CollectorRegistry())
    # The same files, rechecked on every handshake instead of at most once a second.
    memory.options = dataclasses.replace(memory.options, transport=Transport(server_files))
    await memory.start()
    yield Rotation(old, new, server_files, memory)
    await memory.stop()


async def test_a_server_serves_new_connections_with_rotated_files_without_a_restart(rotation: Rotation) -> None:
    old, new, port = rotation.old, rotation.new, rotation.memory.port
    assert await rotation.serves(Identity.GATE, old, old) == OK
    assert await rotation.serves(Identity.GATE, new, new) == REFUSED
    kept = rotation.client(Identity.GATE, old, old)
    assert await rotation.served(kept) == OK

    # Phase in: the server presents the new CA's certificate and accepts clients of both CAs.
    install(rotation.server_files, Identity.MEMORY, new, old, new)
    assert await rotation.serves(Identity.GATE, new, new) == OK  # trusting only the new CA now succeeds
    assert await rotation.serves(Identity.GATE, old, old) == REFUSED  # trusting only the old CA now fails
    assert await rotation.serves(Identity.GATE, old, old, new) == OK  # an old client certificate is still accepted
    assert await rotation.served(kept) == OK  # a connection made before the rotation is not cut

    # Phase out: the old CA is no longer trusted, so its client certificates stop working.
    install(rotation.server_files, Identity.MEMORY, new, new)
    assert await rotation.serves(Identity.GATE, old, old, new) == REFUSED
    assert await rotation.serves(Identity.GATE, new, new) == OK
    await kept.close(None)
    assert rotation.memory.port == port  # the same server all along


async def test_a_half_written_rotation_keeps_the_current_certificate(rotation: Rotation) -> None:
    """A file missing for a moment (a rotation in progress) neither stops the server nor serves a broken one."""
    rotation.server_files.key.unlink()
    assert await rotation.serves(Identity.GATE, rotation.old, rotation.old) == OK
    install(rotation.server_files, Identity.MEMORY, rotation.new, rotation.new)
    assert await rotation.serves(Identity.GATE, rotation.new, rotation.new) == OK


async def test_a_client_channel_follows_its_rotated_files(
    rotation: Rotation, tmp_path: Path, tracer_provider: TracerProvider
) -> None:
    """The channel of a process whose certificate is rotated (here from the edge's to the operator's, issued by
    another CA, so the server can tell which one it was shown) keeps working through the same stub."""
    install(rotation.server_files, Identity.MEMORY, rotation.old, rotation.old, rotation.new)
    client_files = files_in(tmp_path / "client-tls", "client")
    install(client_files, Identity.EDGE, rotation.old, rotation.old)
    opened = open_channel(rotation.memory.address, tracer_provider, certificates=client_files, server=Identity.MEMORY)
    # Unrecorded spans: the reloading channel is inside the one that adds the trace context to each call.
    channel = opened.inner if isinstance(opened, TraceContextChannel) else opened
    assert isinstance(channel, ReloadingChannel)
    async with opened:
        stub = memory_pb2_grpc.MemoryServiceStub(opened)
        before = await refused(stub.ListApiKeys(memory_pb2.ListApiKeysRequest(), timeout=5))
        assert denial(before) == NOT_AUTHORIZED  # the edge's certificate was presented
        assert channel.generation == 0

        install(client_files, Identity.OPERATOR, rotation.new, rotation.old)
        listed = await stub.ListApiKeys(memory_pb2.ListApiKeysRequest(), timeout=5)
        assert list(listed.api_keys) == []  # the operator's certificate, of the new CA, is presented now
        assert channel.generation == 1

        await stub.ListApiKeys(memory_pb2.ListApiKeysRequest(), timeout=5)
        assert channel.generation == 1  # unchanged files: the same channel

        # The old CA is retired on the server: the rotated channel is unaffected.
        install(rotation.server_files, Identity.MEMORY, rotation.old, rotation.new)
        assert await rotation.serves(Identity.OPERATOR, rotation.old, rotation.old) == REFUSED
        await stub.ListApiKeys(memory_pb2.ListApiKeysRequest(), timeout=5)
