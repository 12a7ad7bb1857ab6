"""Who is calling: service identities as SPIFFE-style URI SANs in the peer's client certificate.

Every certificate of the deployment carries one URI ``spiffe://techno/<name>`` (the development CA of
``techno_stack.certs`` and the cert-manager ``Certificate`` resources in ``infra/k8s`` issue them so). The name is
what the authorization tables of the services grant RPCs to, so a table reads like policy.
"""

from __future__ import annotations

import enum
from typing import Any

TRUST_DOMAIN = "techno"
_PREFIX = f"spiffe://{TRUST_DOMAIN}/"
# gRPC metadata in which the gate names the principal an admin command is run for (to the executor, which trusts
# it from the gate's identity only).
PRINCIPAL_METADATA = "techno-principal"


class Identity(enum.StrEnum):
    """The peers a Techno service can meet: the four services and the operator's tools (``techno-keys``)."""

    EDGE = "edge"
    GATE = "gate"
    EXECUTOR = "executor"
    MEMORY = "memory"
    OPERATOR = "operator"

    @property
    def uri(self) -> str:
        return _PREFIX + self.value


def identity_of_uri(uri: str) -> Identity | None:
    """The identity a URI SAN names, or None for any other URI (another trust domain, an unknown name)."""
    if not uri.startswith(_PREFIX):
        return None
    try:
        return Identity(uri[len(_PREFIX) :])
    except ValueError:
        return None


def peer_uris(context: Any) -> list[str]:
    """The URI SANs of the peer's verified certificate; empty on a plaintext connection.

    gRPC fills ``peer_spiffe_id`` only when the certificate has exactly one well-formed SPIFFE URI, and
    ``peer_uri`` with every URI SAN; both come from the verified chain, never from the client's metadata."""
    auth = context.auth_context()
    return [value.decode("utf-8", "replace") for value in auth.get("peer_uri", ())]


def peer_identity(context: Any) -> Identity | None:
    """The Techno identity of the peer, or None when it presents none (plaintext, or a certificate without one)."""
    identities = {identity for uri in peer_uris(context) if (identity := identity_of_uri(uri)) is not None}
    # A certificate naming two identities is ambiguous; it gets none rather than the more powerful one.
    return identities.pop() if len(identities) == 1 else None


def peer_common_name(context: Any) -> str:
    """The subject common name of the peer's verified certificate ("" on a plaintext connection). Not an
    identity (the URI SAN is): it names *which* holder of an identity called, e.g. one operator among several
    whose certificates all carry ``spiffe://techno/operator``."""
    names = context.auth_context().get("x509_common_name", ())
    return names[0].decode("utf-8", "replace") if names else ""


def operator_principal_id(context: Any) -> str:
    """The audit principal of a caller holding the operator identity: ``operator:<certificate common name>``."""
    return f"{Identity.OPERATOR}:{peer_common_name(context) or Identity.OPERATOR}"
