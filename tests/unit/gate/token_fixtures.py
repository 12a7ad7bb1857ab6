"""Helpers for the JWT tests: keys, key files and tokens, minted properly or forged by hand."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from techno_gate.token_settings import TokenSettings

AUDIENCE = "techno-gate"
ISSUER = "https://issuer.example"
NOW = 1_750_000_000
LEEWAY = 30
HS_SECRET = "a shared secret long enough for HS256, HS384 and HS512 alike: 64B"
DROP = object()  # a claim override meaning "leave this claim out"


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def private_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def jwk(key: rsa.RSAPrivateKey, kid: str | None, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    if kid is not None:
        entry["kid"] = kid
    entry.update(extra)
    return entry


def write(path: Path, content: bytes | str | dict[str, Any]) -> str:
    if isinstance(content, dict):
        content = json.dumps(content)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return str(path)


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims at ``NOW``; an override of ``DROP`` removes the claim."""
    base: dict[str, Any] = {"sub": "alice", "aud": AUDIENCE, "iss": ISSUER, "iat": NOW, "exp": NOW + 300}
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not DROP}


def mint_rs256(key: rsa.RSAPrivateKey, payload: dict[str, Any], kid: str | None = None) -> str:
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(payload, key, algorithm="RS256", headers=headers)


def mint_hs256(secret: str | bytes, payload: dict[str, Any]) -> str:
    return jwt.encode(payload, secret, algorithm="HS256")


def _segment(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    """A token assembled by hand, as an attacker would (PyJWT refuses to build the malicious ones)."""
    signing_input = _segment(json.dumps(header).encode()) + "." + _segment(json.dumps(payload).encode())
    return signing_input + "." + _segment(signature)


def forge_hs256(payload: dict[str, Any], secret: bytes, **header: Any) -> str:
    """An HS256 token HMAC-signed with arbitrary bytes (e.g. the RSA public key PEM: algorithm confusion)."""
    full_header = {"alg": "HS256", "typ": "JWT", **header}
    unsigned = forge(full_header, payload).rsplit(".", 1)[0]
    signature = hmac.new(secret, unsigned.encode(), hashlib.sha256).digest()
    return unsigned + "." + _segment(signature)


def token_settings(**fields: Any) -> TokenSettings:
    defaults: dict[str, Any] = {
        "gate_jwt_audience": AUDIENCE,
        "gate_jwt_issuer": ISSUER,
        "gate_jwt_leeway_seconds": LEEWAY,
    }
    return TokenSettings(**{**defaults, **fields})


def clock() -> float:
    return float(NOW)
