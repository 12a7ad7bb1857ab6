"""Choosing the transport at start: mutual TLS from files, or plaintext on loopback only; and the address and
identity parsing that decision rests on."""

from __future__ import annotations

from pathlib import Path

import pytest

from techno_core.identity import Identity, identity_of_uri
from techno_core.runner import StartupError
from techno_core.settings import TechnoSettings
from techno_core.tls import is_loopback, target_hosts
from techno_core.transport import transport_from
from tests.tls import certificate_files

PLAINTEXT = TechnoSettings(insecure_plaintext=True)


@pytest.fixture(autouse=True)
def _no_transport_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what each test passes counts, whatever the environment running the suite sets."""
    for name in ("TECHNO_TLS_CERT_FILE", "TECHNO_TLS_KEY_FILE", "TECHNO_TLS_CA_FILE", "TECHNO_INSECURE_PLAINTEXT"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("target", "hosts"),
    [
        ("127.0.0.1:50053", ["127.0.0.1"]),
        ("localhost:50053", ["localhost"]),
        ("memory:50053", ["memory"]),
        ("dns:///memory-headless:50053", ["memory-headless"]),
        ("dns:memory:50053", ["memory"]),
        ("ipv4:127.0.0.1:50053,10.0.0.5:50063", ["127.0.0.1", "10.0.0.5"]),
        ("ipv6:[::1]:50053", ["[::1]"]),
        ("[::1]:50053", ["[::1]"]),
        ("memory", ["memory"]),
    ],
)
def test_target_hosts(target: str, hosts: list[str]) -> None:
    assert target_hosts(target) == hosts


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.5.6.7", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),  # noqa: S104 (an address under test, not a bind)
        ("::", False),
        ("10.0.0.5", False),
        ("memory", False),
        ("localhost.example.com", False),
        ("", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("uri", "identity"),
    [
        *((f"spiffe://techno/{identity.value}", identity) for identity in Identity),
        ("spiffe://techno/stranger", None),
        ("spiffe://techno/gate/extra", None),
        ("spiffe://techno/", None),
        ("spiffe://elsewhere/gate", None),
        ("spiffe://technology/gate", None),
        ("https://techno/gate", None),
        ("SPIFFE://techno/gate", None),
        ("", None),
    ],
)
def test_identity_of_uri(uri: str, identity: Identity | None) -> None:
    assert identity_of_uri(uri) is identity


@pytest.mark.parametrize(
    ("listen_hosts", "targets", "named"),
    [
        (["0.0.0.0"], [], "0.0.0.0"),  # noqa: S104
        (["::"], [], "::"),
        (["127.0.0.1"], ["10.0.0.5:50053"], "10.0.0.5"),
        (["127.0.0.1"], ["dns:///memory:50053"], "memory"),
        (["127.0.0.1"], ["127.0.0.1:50053", "ipv4:127.0.0.1:1,192.168.1.2:2"], "192.168.1.2"),
    ],
)
def test_plaintext_refuses_any_address_off_loopback(listen_hosts: list[str], targets: list[str], named: str) -> None:
    with pytest.raises(StartupError) as raised:
        transport_from(PLAINTEXT, listen_hosts=listen_hosts, targets=targets)
    message = str(raised.value)
    assert f"{named} is not a loopback address" in message
    assert "TECHNO_INSECURE_PLAINTEXT" in message


def test_plaintext_on_loopback_is_plaintext() -> None:
    transport = transport_from(
        PLAINTEXT, listen_hosts=["127.0.0.1", "localhost"], targets=["127.0.0.1:50053", "ipv6:[::1]:50052"]
    )
    assert not transport.secure
    assert transport.certificates is None
    assert transport.server_credentials() is None


def gate_settings(**overrides: str) -> TechnoSettings:
    files = certificate_files(Identity.GATE)
    values = {"tls_cert_file": str(files.certificate), "tls_key_file": str(files.key), "tls_ca_file": str(files.ca)}
    values.update(overrides)
    return TechnoSettings(
        tls_cert_file=values["tls_cert_file"], tls_key_file=values["tls_key_file"], tls_ca_file=values["tls_ca_file"]
    )


@pytest.mark.parametrize(
    "missing",
    [
        ["TECHNO_TLS_CERT_FILE", "TECHNO_TLS_KEY_FILE", "TECHNO_TLS_CA_FILE"],
        ["TECHNO_TLS_KEY_FILE"],
        ["TECHNO_TLS_CA_FILE"],
    ],
)
def test_mutual_tls_without_its_files_refuses_to_start_naming_them(missing: list[str]) -> None:
    settings = gate_settings(**{name.removeprefix("TECHNO_").lower(): "" for name in missing})
    with pytest.raises(StartupError) as raised:
        transport_from(settings, listen_hosts=["127.0.0.1"])
    named = str(raised.value).split(";")[0]  # "mutual TLS needs …", before the hint
    for name in ("TECHNO_TLS_CERT_FILE", "TECHNO_TLS_KEY_FILE", "TECHNO_TLS_CA_FILE"):
        assert (name in named) is (name in missing), name


def test_an_unreadable_file_refuses_to_start_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "gate.key"
    with pytest.raises(StartupError) as raised:
        transport_from(gate_settings(tls_key_file=str(missing)))
    assert str(missing) in str(raised.value)


def test_mutual_tls_is_the_default_and_allows_any_address() -> None:
    transport = transport_from(
        gate_settings(),
        listen_hosts=["0.0.0.0"],  # noqa: S104
        targets=["dns:///memory-headless:50053"],
    )
    assert transport.secure
    assert transport.certificates is not None
    assert transport.certificates.current() == certificate_files(Identity.GATE).read()
    assert transport.server_credentials() is not None
