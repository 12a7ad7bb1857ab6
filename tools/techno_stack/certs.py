"""A development certificate authority and one certificate per Techno identity, for `make run` and the tests.

``python -m techno_stack.certs --out DIR`` writes ``DIR/ca.crt`` and ``DIR/<identity>.crt`` / ``.key`` for every
identity (edge, gate, executor, memory, operator). Each leaf certificate carries:

- the URI SAN ``spiffe://techno/<identity>``: who it is, read by the services' authorization tables;
- the DNS SAN ``<identity>`` (the name clients check a server's certificate against, whatever the address),
  plus ``localhost`` and the IP SAN 127.0.0.1 / ::1, so plain loopback tools can connect too;
- both server and client authentication usages, since every service is both.

Production issues the same shape with cert-manager (``infra/k8s``). Keys are ECDSA P-256, written 0600. The
CA's key stays in DIR too (``ca.key``), so a developer can issue more; it is only ever a development CA.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from techno_core.identity import TRUST_DOMAIN, Identity

_VALIDITY = datetime.timedelta(days=30)
_RENEW_BEFORE = datetime.timedelta(days=7)
_LOOPBACK = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]


@dataclass(frozen=True)
class Authority:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _write(path: Path, data: bytes, *, private: bool) -> None:
    """Atomically, as a rotation would: readers see the old file or the new one, never half of one."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.chmod(temporary, 0o600 if private else 0o644)
    temporary.replace(path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def new_authority(name: str = "Techno development CA") -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + 4 * _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(certificate, key)


def issue(authority: Authority, identity: str, *, uri: str | None = None) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) for ``identity``; ``uri`` overrides its SPIFFE URI (tests issue strangers)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    names: list[x509.GeneralName] = [x509.DNSName(identity), x509.DNSName("localhost")]
    names += [x509.IPAddress(address) for address in _LOOPBACK]
    if uri != "":
        names.append(x509.UniformResourceIdentifier(uri or f"spiffe://{TRUST_DOMAIN}/{identity}"))
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)]))
        .issuer_name(authority.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()), critical=False)
        .sign(authority.key, hashes.SHA256())
    )
    return _cert_pem(certificate), _key_pem(key)


def write_identity(directory: Path, authority: Authority, identity: str, *, uri: str | None = None) -> None:
    certificate, key = issue(authority, identity, uri=uri)
    _write(directory / f"{identity}.key", key, private=True)
    _write(directory / f"{identity}.crt", certificate, private=False)


def _load_authority(directory: Path) -> Authority | None:
    try:
        certificate = x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes())
        key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), password=None)
    except (OSError, ValueError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or certificate.not_valid_after_utc - _now() < _RENEW_BEFORE:
        return None
    return Authority(certificate, key)


def _fresh(path: Path) -> bool:
    try:
        certificate = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return False
    return certificate.not_valid_after_utc - _now() > _RENEW_BEFORE


def ensure_development_pki(directory: Path, identities: Iterable[str] = tuple(Identity)) -> Path:
    """Create (or keep, while valid for another week) the CA and a certificate per identity in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    authority = _load_authority(directory)
    if authority is None:
        authority = new_authority()
        _write(directory / "ca.key", _key_pem(authority.key), private=True)
        _write(directory / "ca.crt", _cert_pem(authority.certificate), private=False)
        for stale in directory.glob("*.crt"):
            if stale.name != "ca.crt":
                stale.unlink()
    for identity in identities:
        if not _fresh(directory / f"{identity}.crt"):
            write_identity(directory, authority, str(identity))
    return directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m techno_stack.certs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for ca.crt and <identity>.crt/.key")
    arguments = parser.parse_args(argv)
    ensure_development_pki(arguments.out)
    print(f"development CA and certificates for {', '.join(Identity)} in {arguments.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
