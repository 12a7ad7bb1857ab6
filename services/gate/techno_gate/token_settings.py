"""Configuration of bearer-token (JWT) authentication, a mixin of the gate's settings.

Tokens stay disabled until a key source is configured: an HS256 shared secret, an RS256 public key (PEM) or a
JSON Web Key Set file. The key files are read and parsed once, at start-up, by
``techno_gate.adapters.tokens.TokenVerifier``; this class only checks what can be checked without I/O.
"""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings

from techno_core.settings import TECHNO_CONFIG

MAX_LEEWAY_SECONDS = 300.0


class TokenSettings(BaseSettings):
    """Mixin: how the gate verifies JWT bearer tokens."""

    # Without this the mixin would carry BaseSettings' default config and silently drop the TECHNO_ prefix.
    model_config = TECHNO_CONFIG

    gate_jwt_hs256_secret_file: str = Field(
        "",
        description="File holding the HS256 shared secret (at least 32 bytes; trailing newlines are ignored). "
        "Preferred over `TECHNO_GATE_JWT_HS256_SECRET`: a file keeps the secret out of the environment listing.",
    )
    gate_jwt_hs256_secret: SecretStr = Field(
        SecretStr(""),
        description="HS256 shared secret given inline, for development only; "
        "use `TECHNO_GATE_JWT_HS256_SECRET_FILE` in production. Setting both is an error.",
    )
    gate_jwt_public_key_file: str = Field(
        "", description="PEM file of the RSA public key (at least 2048 bits) that verifies RS256 tokens."
    )
    gate_jwt_jwks_file: str = Field(
        "",
        description="JSON Web Key Set file of RSA public keys verifying RS256 tokens; "
        "the token's `kid` header selects the key, and a token naming no known `kid` is refused.",
    )
    gate_jwt_audience: str = Field(
        "",
        description="Audience (`aud`) every token must carry. Required as soon as a token key source is configured: "
        "the gate refuses to start without it.",
    )
    gate_jwt_issuer: str = Field("", description="Issuer (`iss`) every token must carry, when set (recommended).")
    gate_jwt_leeway_seconds: float = Field(
        30.0,
        ge=0,
        le=MAX_LEEWAY_SECONDS,
        description="Clock skew tolerated when checking a token's `exp`, `nbf` and `iat` (0 to 300 seconds).",
    )
    gate_jwt_profile_claim: str = Field(
        "techno_profile", min_length=1, description="Token claim naming the caller's governance profile."
    )
    gate_jwt_default_profile: str = Field(
        "default", min_length=1, description="Governance profile of a token that has no profile claim."
    )

    @property
    def gate_jwt_enabled(self) -> bool:
        """True when any key source is configured, so bearer JWTs are accepted at all."""
        return bool(
            self.gate_jwt_hs256_secret_file
            or self.gate_jwt_hs256_secret.get_secret_value()
            or self.gate_jwt_public_key_file
            or self.gate_jwt_jwks_file
        )

    @model_validator(mode="after")
    def _check_token_sources(self) -> TokenSettings:
        # Fail at start-up rather than at the first request: a misconfiguration here is a security hole, not a
        # degraded mode.
        if self.gate_jwt_hs256_secret_file and self.gate_jwt_hs256_secret.get_secret_value():
            raise ValueError("set either TECHNO_GATE_JWT_HS256_SECRET_FILE or TECHNO_GATE_JWT_HS256_SECRET, not both")
        if self.gate_jwt_enabled and not self.gate_jwt_audience:
            # A token minted for another service by the same issuer would otherwise be accepted here.
            raise ValueError("TECHNO_GATE_JWT_AUDIENCE is required when a bearer-token key source is configured")
        return self
