"""JWT bearer-token verification: from a token to the ``Principal`` every decision is made for.

Keys are read and parsed once, when the verifier is built at start-up, so ``verify`` is synchronous and CPU-only
(no I/O on the request path) and a bad key file stops the gate from starting instead of failing requests.

Security choices, each closing a classic hole:

- Each key is pinned to one algorithm: the HS256 secret only ever verifies HS256 and RSA keys only RS256. The
  token header merely *selects* among the configured keys, so ``alg: none`` and algorithm confusion (an HS256
  token "signed" with the RSA public key as the HMAC secret) find no key and are refused.
- ``exp``, ``sub`` and ``aud`` are required (``iss`` too when configured); ``nbf`` and ``iat`` are honoured when
  present; the clock-skew leeway is bounded by the settings.
- Every refusal is ``Unauthenticated(TOKEN_INVALID)`` with a short, fixed message: never the token, a claim's
  value or anything about the keys.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt import exceptions as jwt_errors
from jwt.algorithms import HMACAlgorithm, RSAAlgorithm

from techno_core import errors
from techno_gate.domain.principal import CredentialKind, Principal, Scope
from techno_gate.domain.reasons import Reason
from techno_gate.token_settings import MAX_LEEWAY_SECONDS, TokenSettings

log = logging.getLogger(__name__)

HS256 = "HS256"
RS256 = "RS256"
# RFC 7518 §3.2: an HMAC key at least as long as the hash output; shorter shared secrets are brute-forceable.
MIN_HS256_SECRET_BYTES = 32
# NIST SP 800-131A: RSA below 2048 bits is no longer acceptable for signatures.
MIN_RSA_KEY_BITS = 2048
# Far above any real access token and far below what would make parsing a cost worth attacking; gRPC metadata is
# bounded too, this keeps the verifier safe on its own.
MAX_TOKEN_CHARS = 8192
# The subject becomes the principal id, written into audit records and logs: keep it short and printable.
MAX_SUBJECT_CHARS = 256

# Three base64url segments. The signature segment may be empty so that an unsigned (``alg: none``) token is still
# recognised as a JWT and refused as TOKEN_INVALID, rather than looked up as an API key.
_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")

_KNOWN_SCOPES: Mapping[str, Scope] = {scope.value: scope for scope in Scope}


class TokenConfigError(ValueError):
    """The token configuration cannot be used (unreadable or invalid key file, missing audience …).

    Raised at start-up only; the message names the setting or file, never key material.
    """


def looks_like_jwt(value: str) -> bool:
    """True when ``value`` has the shape of a JWT (three base64url segments separated by dots).

    Lets the gate tell a JWT from a ``tk_`` API key in ``Authorization: Bearer`` without parsing either; API keys
    never contain a dot.
    """
    return _JWT_SHAPE.fullmatch(value) is not None


@dataclass(frozen=True)
class _PinnedKey:
    """A verification key and the one algorithm it may verify."""

    algorithm: str
    key: bytes | RSAPublicKey


def _refuse(message: str) -> errors.Unauthenticated:
    return errors.Unauthenticated(reason=Reason.TOKEN_INVALID, message=message)


# PyJWT's exceptions mapped to safe messages; the first match wins, so subclasses come before their bases
# (InvalidSignatureError is a DecodeError, everything is an InvalidTokenError).
_FAILURES: tuple[tuple[type[jwt_errors.PyJWTError], str], ...] = (
    (jwt_errors.InvalidSignatureError, "token signature invalid"),
    (jwt_errors.ExpiredSignatureError, "token expired"),
    (jwt_errors.ImmatureSignatureError, "token not yet valid"),
    (jwt_errors.InvalidAudienceError, "token audience mismatch"),
    (jwt_errors.InvalidIssuerError, "token issuer mismatch"),
    (jwt_errors.InvalidAlgorithmError, "token algorithm not accepted"),
    (jwt_errors.InvalidSubjectError, "token subject invalid"),
    (jwt_errors.InvalidIssuedAtError, "token issued-at invalid"),
    (jwt_errors.DecodeError, "token malformed"),
)


class TokenVerifier:
    """Verifies JWT bearer tokens against the keys configured in ``TokenSettings``.

    Build it once at start-up (it reads the key files and raises ``TokenConfigError`` when they are unusable),
    then call ``verify`` per request. With no key source configured it is disabled and refuses every token.

    Key selection, from the unverified header (it only chooses among configured keys; embedded keys such as
    ``jwk``/``jku``/``x5u`` are never used):

    - ``alg: HS256`` → the shared secret;
    - ``alg: RS256`` with a ``kid`` and a JWKS configured → that JWKS key, or a refusal when the kid is unknown;
    - ``alg: RS256`` otherwise → the PEM key, or a refusal when only a JWKS is configured (no kid to select by);
    - any other ``alg`` (``none`` included) → refused.
    """

    def __init__(self, settings: TokenSettings, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._audience = settings.gate_jwt_audience
        self._issuer = settings.gate_jwt_issuer
        self._leeway = settings.gate_jwt_leeway_seconds
        self._profile_claim = settings.gate_jwt_profile_claim
        self._default_profile = settings.gate_jwt_default_profile
        # The settings validate these too; checked again because settings can be built without validation
        # (model_construct), and these are the checks that keep the door shut.
        if not 0 <= self._leeway <= MAX_LEEWAY_SECONDS:
            raise TokenConfigError(f"TECHNO_GATE_JWT_LEEWAY_SECONDS must be between 0 and {MAX_LEEWAY_SECONDS:g}")
        if not self._profile_claim or not self._default_profile:
            raise TokenConfigError(
                "TECHNO_GATE_JWT_PROFILE_CLAIM and TECHNO_GATE_JWT_DEFAULT_PROFILE must not be empty"
            )

        self._hs256 = _load_hs256_secret(settings)
        self._rsa_default = _load_public_key_file(settings.gate_jwt_public_key_file)
        self._rsa_by_kid = _load_jwks_file(settings.gate_jwt_jwks_file)
        self._enabled = bool(self._hs256 or self._rsa_default or self._rsa_by_kid)
        if self._enabled and not self._audience:
            raise TokenConfigError("TECHNO_GATE_JWT_AUDIENCE is required when a bearer-token key source is configured")
        # Claims PyJWT must find; it then checks aud/iss values itself. Time claims are checked here instead,
        # against the injectable clock.
        self._required = ["exp", "sub", "aud"] + (["iss"] if self._issuer else [])
        if self._enabled:
            log.info(
                "bearer tokens enabled",
                extra={
                    "hs256": self._hs256 is not None,
                    "rs256_pem": self._rsa_default is not None,
                    "rs256_jwks_kids": sorted(self._rsa_by_kid),
                },
            )

    @property
    def enabled(self) -> bool:
        """True when a key source is configured; a disabled verifier refuses every token."""
        return self._enabled

    def verify(self, token: str) -> Principal:
        """The principal a valid token stands for; raises ``Unauthenticated(TOKEN_INVALID)`` otherwise.

        Synchronous and CPU-only (one signature check, no I/O): safe to call on the event loop.
        """
        if not self._enabled:
            raise _refuse("bearer tokens are not configured")
        if len(token) > MAX_TOKEN_CHARS:
            raise _refuse("token too long")
        try:
            header = jwt.get_unverified_header(token)
            pinned = self._select_key(header)
            claims = jwt.decode(
                token,
                pinned.key,
                # Only the algorithm the selected key is pinned to: the header cannot widen this.
                algorithms=[pinned.algorithm],
                audience=self._audience,
                issuer=self._issuer or None,
                options={
                    "require": self._required,
                    "verify_signature": True,
                    "verify_aud": True,
                    "verify_iss": bool(self._issuer),
                    "verify_sub": True,
                    "verify_jti": True,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt_errors.MissingRequiredClaimError as error:
            # The claim name comes from our own list (or "aud"/"iss"), never from the token.
            raise _refuse(f"token claim missing: {error.claim}") from None
        except jwt_errors.PyJWTError as error:
            raise _refuse(_failure_message(error)) from None
        except (ValueError, TypeError, OverflowError):
            # Defensive: malformed input surfacing from below PyJWT must still be a refusal, never a 500.
            raise _refuse("token malformed") from None
        expires_at = self._check_times(claims)
        return self._principal(claims, expires_at)

    def _select_key(self, header: Mapping[str, Any]) -> _PinnedKey:
        algorithm = header.get("alg")
        if algorithm == HS256 and self._hs256 is not None:
            return _PinnedKey(HS256, self._hs256)
        if algorithm == RS256:
            kid = header.get("kid")
            if kid is not None and self._rsa_by_kid:
                # A JWKS is the authority on its kids: an unknown kid is refused, not tried against other keys.
                key = self._rsa_by_kid.get(kid) if isinstance(kid, str) else None
                if key is None:
                    raise _refuse("token key id unknown")
                return _PinnedKey(RS256, key)
            if self._rsa_default is not None:
                return _PinnedKey(RS256, self._rsa_default)
            if self._rsa_by_kid:
                raise _refuse("token key id missing")
        # "none", HS256 without a configured secret (e.g. signed with the RSA public key), anything else.
        raise _refuse("token algorithm not accepted")

    def _check_times(self, claims: Mapping[str, Any]) -> datetime:
        """Checks exp/nbf/iat against the clock with the leeway (as PyJWT would); returns the expiry."""
        now = self._clock()
        exp = _numeric_date(claims, "exp")
        if exp is None:  # required above; kept so the type is narrowed without an assert
            raise _refuse("token claim missing: exp")
        if exp <= now - self._leeway:
            raise _refuse("token expired")
        nbf = _numeric_date(claims, "nbf")
        if nbf is not None and nbf > now + self._leeway:
            raise _refuse("token not yet valid")
        iat = _numeric_date(claims, "iat")
        if iat is not None and iat > now + self._leeway:
            raise _refuse("token not yet valid")
        try:
            return datetime.fromtimestamp(exp, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise _refuse("token claim invalid: exp") from None

    def _principal(self, claims: Mapping[str, Any], expires_at: datetime) -> Principal:
        sub = claims["sub"]  # required and checked to be a string by PyJWT
        if not isinstance(sub, str) or not sub or len(sub) > MAX_SUBJECT_CHARS or not sub.isprintable():
            raise _refuse("token subject invalid")
        profile = claims.get(self._profile_claim, self._default_profile)
        if not isinstance(profile, str) or not profile:
            raise _refuse("token profile claim invalid")
        return Principal(
            id="token:" + sub,
            kind=CredentialKind.TOKEN,
            profile=profile,
            scopes=_scopes(claims),
            expires_at=expires_at,
        )


def _failure_message(error: jwt_errors.PyJWTError) -> str:
    for kind, message in _FAILURES:
        if isinstance(error, kind):
            return message
    return "token invalid"


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    """A NumericDate claim (RFC 7519 §2) as seconds, None when absent; anything but a finite number is refused."""
    value = claims.get(name)
    if value is None:
        return None
    # bool is an int in Python; "true" is no date.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _refuse(f"token claim invalid: {name}")
    return float(value)


def _scopes(claims: Mapping[str, Any]) -> frozenset[Scope]:
    """Scopes from ``scope`` (OAuth 2.0, RFC 8693: space-separated string) or else ``scp`` (a list, or a string as
    some issuers send it). Only scopes the gate knows are kept: an issuer's other scopes grant nothing here."""
    raw = claims["scope"] if "scope" in claims else claims.get("scp")
    if raw is None:
        return frozenset()
    if isinstance(raw, str):
        names = raw.split()
    elif isinstance(raw, list) and all(isinstance(name, str) for name in raw):
        names = raw
    else:
        raise _refuse("token scope claim invalid")
    return frozenset(_KNOWN_SCOPES[name] for name in names if name in _KNOWN_SCOPES)


# --- start-up: loading and checking the keys ------------------------------------------------------------------


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise TokenConfigError(f"cannot read {what} {path}: {error.strerror}") from None


def _load_hs256_secret(settings: TokenSettings) -> bytes | None:
    inline = settings.gate_jwt_hs256_secret.get_secret_value()
    if settings.gate_jwt_hs256_secret_file and inline:
        raise TokenConfigError("set either TECHNO_GATE_JWT_HS256_SECRET_FILE or TECHNO_GATE_JWT_HS256_SECRET, not both")
    if settings.gate_jwt_hs256_secret_file:
        path = settings.gate_jwt_hs256_secret_file
        # Editors and `echo` add a final newline that is not part of the secret.
        secret = _read(path, "HS256 secret file").rstrip(b"\r\n")
        source = f"HS256 secret file {path}"
    elif inline:
        secret = inline.encode()
        source = "TECHNO_GATE_JWT_HS256_SECRET"
    else:
        return None
    if len(secret) < MIN_HS256_SECRET_BYTES:
        raise TokenConfigError(f"{source}: the secret must be at least {MIN_HS256_SECRET_BYTES} bytes")
    try:
        # PyJWT's own guard: a PEM/SSH/DER key used as an HMAC secret is the algorithm-confusion setup.
        HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(secret)
    except jwt_errors.InvalidKeyError:
        raise TokenConfigError(f"{source}: the secret looks like an asymmetric key or certificate") from None
    return secret


def _load_public_key_file(path: str) -> RSAPublicKey | None:
    if not path:
        return None
    data = _read(path, "RS256 public key file")
    if b"PRIVATE KEY" in data:
        # The gate only verifies; a private key here means the signing key has been spread too widely.
        raise TokenConfigError(f"RS256 public key file {path} holds a private key; give the gate the public key only")
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            key: object = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise TokenConfigError(f"RS256 public key file {path} is not a PEM public key or certificate") from None
    return _checked_rsa(key, f"RS256 public key file {path}")


def _load_jwks_file(path: str) -> dict[str, RSAPublicKey]:
    if not path:
        return {}
    where = f"JWKS file {path}"
    data = _read(path, "JWKS file")  # outside the try: its TokenConfigError is a ValueError too
    try:
        document = json.loads(data)
    except ValueError:
        raise TokenConfigError(f"{where} is not valid JSON") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise TokenConfigError(f"{where} must be a JSON object with a `keys` list")
    keys: dict[str, RSAPublicKey] = {}
    skipped: list[str] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise TokenConfigError(f"{where}: key #{index} is not a JSON object")
        kid = entry.get("kid")
        label = f"{where}: key #{index}" + (f" (kid {kid!r})" if isinstance(kid, str) else "")
        # Only RSA signing keys meant for RS256 are used; a set shared with other verifiers may hold more.
        if entry.get("kty") != "RSA" or entry.get("use", "sig") != "sig" or entry.get("alg", RS256) != RS256:
            skipped.append(kid if isinstance(kid, str) else f"#{index}")
            continue
        if not isinstance(kid, str) or not kid:
            raise TokenConfigError(f"{label} has no `kid`; every key of the set must be named")
        if "d" in entry:
            raise TokenConfigError(f"{label} is a private key; give the gate public keys only")
        if kid in keys:
            raise TokenConfigError(f"{label}: the kid is used twice")
        try:
            key = RSAAlgorithm.from_jwk(entry)
        except (jwt_errors.InvalidKeyError, ValueError, KeyError, TypeError):
            raise TokenConfigError(f"{label} is not a valid RSA public key") from None
        keys[kid] = _checked_rsa(key, label)
    if not keys:
        raise TokenConfigError(f"{where} holds no RSA signing key usable with RS256")
    if skipped:
        log.warning("JWKS keys not usable with RS256 were ignored", extra={"jwks_skipped": skipped})
    return keys


def _checked_rsa(key: object, label: str) -> RSAPublicKey:
    if not isinstance(key, RSAPublicKey):
        raise TokenConfigError(f"{label} is not an RSA public key")
    if key.key_size < MIN_RSA_KEY_BITS:
        raise TokenConfigError(
            f"{label}: the RSA key has {key.key_size} bits, at least {MIN_RSA_KEY_BITS} are required"
        )
    return key
