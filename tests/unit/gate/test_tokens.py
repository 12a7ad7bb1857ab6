"""JWT bearer tokens: verification, refusals (each with its safe message), claims mapping and start-up checks."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from techno_core import errors
from techno_gate.adapters.tokens import TokenConfigError, TokenVerifier, looks_like_jwt
from techno_gate.domain.principal import CredentialKind, Principal, Scope
from techno_gate.domain.reasons import Reason
from techno_gate.token_settings import TokenSettings

from .token_fixtures import (
    AUDIENCE,
    DROP,
    HS_SECRET,
    LEEWAY,
    NOW,
    claims,
    clock,
    forge,
    forge_hs256,
    jwk,
    mint_hs256,
    mint_rs256,
    private_pem,
    public_pem,
    rsa_key,
    token_settings,
    write,
)


@pytest.fixture(autouse=True)
def _no_token_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests configure tokens explicitly; a TECHNO_GATE_JWT_* variable of the shell must not leak in."""
    for name in (
        "HS256_SECRET_FILE",
        "HS256_SECRET",
        "PUBLIC_KEY_FILE",
        "JWKS_FILE",
        "AUDIENCE",
        "ISSUER",
        "LEEWAY_SECONDS",
        "PROFILE_CLAIM",
        "DEFAULT_PROFILE",
    ):
        monkeypatch.delenv(f"TECHNO_GATE_JWT_{name}", raising=False)


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa_key()


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return rsa_key()


@pytest.fixture
def pem_file(tmp_path: Path, signing_key: rsa.RSAPrivateKey) -> str:
    return write(tmp_path / "public.pem", public_pem(signing_key))


@pytest.fixture
def jwks_file(tmp_path: Path, signing_key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey) -> str:
    return write(tmp_path / "jwks.json", {"keys": [jwk(signing_key, "k1"), jwk(other_key, "k2", alg="RS256")]})


@pytest.fixture
def secret_file(tmp_path: Path) -> str:
    return write(tmp_path / "hs256.secret", HS_SECRET + "\n")


@pytest.fixture
def hs_verifier(secret_file: str) -> TokenVerifier:
    return TokenVerifier(token_settings(gate_jwt_hs256_secret_file=secret_file), clock=clock)


@pytest.fixture
def rs_verifier(pem_file: str) -> TokenVerifier:
    return TokenVerifier(token_settings(gate_jwt_public_key_file=pem_file), clock=clock)


@pytest.fixture
def jwks_verifier(jwks_file: str) -> TokenVerifier:
    return TokenVerifier(token_settings(gate_jwt_jwks_file=jwks_file), clock=clock)


@pytest.fixture
def all_verifier(secret_file: str, pem_file: str, jwks_file: str) -> TokenVerifier:
    """Every key source at once: the header must still not be able to pick a key of the wrong algorithm."""
    return TokenVerifier(
        token_settings(
            gate_jwt_hs256_secret_file=secret_file, gate_jwt_public_key_file=pem_file, gate_jwt_jwks_file=jwks_file
        ),
        clock=clock,
    )


def refusal(verifier: TokenVerifier, token: str) -> str:
    """The message of the TOKEN_INVALID refusal; checks on the way that nothing of the token leaks into it."""
    with pytest.raises(errors.Unauthenticated) as caught:
        verifier.verify(token)
    assert caught.value.reason == Reason.TOKEN_INVALID
    for segment in token.split("."):
        if len(segment) > 8:
            assert segment not in str(caught.value)
    return caught.value.message


# --- accepted tokens and the principal they map to ---------------------------------------------------------------


def test_hs256_token_maps_to_a_token_principal(hs_verifier: TokenVerifier) -> None:
    principal = hs_verifier.verify(mint_hs256(HS_SECRET, claims(scope="process audit:read")))
    assert principal.id == "token:alice"
    assert principal.kind is CredentialKind.TOKEN
    assert principal.profile == "default"
    assert principal.scopes == {Scope.PROCESS, Scope.AUDIT_READ}
    assert principal.expires_at == datetime.fromtimestamp(NOW + 300, tz=UTC)


def test_rs256_token_verified_with_the_pem_key(rs_verifier: TokenVerifier, signing_key: rsa.RSAPrivateKey) -> None:
    assert rs_verifier.verify(mint_rs256(signing_key, claims())).id == "token:alice"


def test_rs256_pem_key_ignores_a_kid_hint(rs_verifier: TokenVerifier, signing_key: rsa.RSAPrivateKey) -> None:
    assert rs_verifier.verify(mint_rs256(signing_key, claims(), kid="whatever")).id == "token:alice"


def test_rs256_token_verified_with_the_jwks_key_its_kid_names(
    jwks_verifier: TokenVerifier, signing_key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey
) -> None:
    assert jwks_verifier.verify(mint_rs256(signing_key, claims(sub="a"), kid="k1")).id == "token:a"
    assert jwks_verifier.verify(mint_rs256(other_key, claims(sub="b"), kid="k2")).id == "token:b"


def test_a_jwks_key_is_not_tried_under_another_kid(
    jwks_verifier: TokenVerifier, signing_key: rsa.RSAPrivateKey
) -> None:
    assert refusal(jwks_verifier, mint_rs256(signing_key, claims(), kid="k2")) == "token signature invalid"


def test_every_configured_source_works_side_by_side(
    all_verifier: TokenVerifier, signing_key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey
) -> None:
    assert all_verifier.verify(mint_hs256(HS_SECRET, claims(sub="h"))).id == "token:h"
    assert all_verifier.verify(mint_rs256(signing_key, claims(sub="p"))).id == "token:p"
    assert all_verifier.verify(mint_rs256(other_key, claims(sub="j"), kid="k2")).id == "token:j"


def test_audience_may_be_one_of_a_list(hs_verifier: TokenVerifier) -> None:
    assert hs_verifier.verify(mint_hs256(HS_SECRET, claims(aud=["other", AUDIENCE]))).id == "token:alice"


def test_issuer_is_optional_when_not_configured(secret_file: str) -> None:
    verifier = TokenVerifier(token_settings(gate_jwt_hs256_secret_file=secret_file, gate_jwt_issuer=""), clock=clock)
    assert verifier.verify(mint_hs256(HS_SECRET, claims(iss=DROP))).id == "token:alice"


def test_inline_secret_works_for_development() -> None:
    verifier = TokenVerifier(token_settings(gate_jwt_hs256_secret=HS_SECRET), clock=clock)
    assert verifier.verify(mint_hs256(HS_SECRET, claims())).id == "token:alice"


# --- claims mapping ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        pytest.param({}, set(), id="no-scope-claim"),
        pytest.param({"scope": "process"}, {Scope.PROCESS}, id="scope-string"),
        pytest.param({"scope": "  admin   process "}, {Scope.ADMIN, Scope.PROCESS}, id="scope-extra-spaces"),
        pytest.param({"scp": ["audit:read", "admin"]}, {Scope.AUDIT_READ, Scope.ADMIN}, id="scp-list"),
        pytest.param({"scp": "process admin"}, {Scope.PROCESS, Scope.ADMIN}, id="scp-string"),
        pytest.param({"scope": "process", "scp": ["admin"]}, {Scope.PROCESS}, id="scope-wins-over-scp"),
        pytest.param({"scope": "openid email process read:all"}, {Scope.PROCESS}, id="unknown-dropped"),
        pytest.param({"scp": ["Process", "ADMIN", "audit"]}, set(), id="case-sensitive"),
        pytest.param({"scope": ""}, set(), id="empty-scope"),
    ],
)
def test_scopes(hs_verifier: TokenVerifier, extra: dict[str, Any], expected: set[Scope]) -> None:
    assert hs_verifier.verify(mint_hs256(HS_SECRET, claims(**extra))).scopes == expected


@pytest.mark.parametrize("bad", [42, ["process", 1], {"process": True}, True])
def test_malformed_scope_claims_are_refused(hs_verifier: TokenVerifier, bad: object) -> None:
    assert refusal(hs_verifier, mint_hs256(HS_SECRET, claims(scope=bad))) == "token scope claim invalid"
    assert refusal(hs_verifier, mint_hs256(HS_SECRET, claims(scp=bad))) == "token scope claim invalid"


def test_profile_comes_from_the_profile_claim(hs_verifier: TokenVerifier) -> None:
    assert hs_verifier.verify(mint_hs256(HS_SECRET, claims(techno_profile="research"))).profile == "research"


def test_profile_claim_name_and_default_are_configurable(secret_file: str) -> None:
    verifier = TokenVerifier(
        token_settings(
            gate_jwt_hs256_secret_file=secret_file,
            gate_jwt_profile_claim="https://techno.example/profile",
            gate_jwt_default_profile="restricted",
        ),
        clock=clock,
    )
    assert verifier.verify(mint_hs256(HS_SECRET, claims())).profile == "restricted"
    named = claims(**{"https://techno.example/profile": "ops", "techno_profile": "ignored"})
    assert verifier.verify(mint_hs256(HS_SECRET, named)).profile == "ops"


@pytest.mark.parametrize("bad", ["", 7, ["a"], None])
def test_malformed_profile_claims_are_refused(hs_verifier: TokenVerifier, bad: object) -> None:
    message = refusal(hs_verifier, mint_hs256(HS_SECRET, claims(techno_profile=bad)))
    assert message == "token profile claim invalid"


@pytest.mark.parametrize("bad", ["", "a\nb", "x" * 257, "\x00"])
def test_unusable_subjects_are_refused(hs_verifier: TokenVerifier, bad: str) -> None:
    assert refusal(hs_verifier, mint_hs256(HS_SECRET, claims(sub=bad))) == "token subject invalid"


def test_non_string_subject_is_refused(hs_verifier: TokenVerifier) -> None:
    assert refusal(hs_verifier, mint_hs256(HS_SECRET, claims(sub=123))) == "token subject invalid"


# --- time: exp, nbf, iat and the leeway ---------------------------------------------------------------------------


def test_expired_token_is_refused(hs_verifier: TokenVerifier) -> None:
    token = mint_hs256(HS_SECRET, claims(iat=NOW - 3600, exp=NOW - LEEWAY - 60))
    assert refusal(hs_verifier, token) == "token expired"


def test_not_yet_valid_token_is_refused(hs_verifier: TokenVerifier) -> None:
    assert refusal(hs_verifier, mint_hs256(HS_SECRET, claims(nbf=NOW + LEEWAY + 60))) == "token not yet valid"


def test_token_issued_in_the_future_is_refused(hs_verifier: TokenVerifier) -> None:
    token = mint_hs256(HS_SECRET, claims(iat=NOW + LEEWAY + 60, exp=NOW + 3600))
    assert refusal(hs_verifier, token) == "token not yet valid"


def test_exp_leeway_boundary(hs_verifier: TokenVerifier) -> None:
    # Valid while exp > now - leeway (PyJWT's rule): one second either side of the boundary.
    assert hs_verifier.verify(mint_hs256(HS_SECRET, claims(iat=NOW - 600, exp=NOW - LEEWAY + 1)))
    assert refusal(hs_verifier, mint_hs256(HS_SECRET, claims(iat=NOW - 600, exp=NOW - LEEWAY))) == "token expired"


def test_nbf_and_iat_leeway_boundary(hs_verifier: TokenVerifier) -> None:
    assert hs_verifier.verify(mint_hs256(HS_SECRET, claims(nbf=NOW + LEEWAY, iat=NOW + LEEWAY)))
    assert refusal(hs_verifier, mint_hs256(HS_SECRET, claims(nbf=NOW + LEEWAY + 1))) == "token not yet valid"
    assert refusal(hs_verifier, mint_hs256(HS_SECRET, claims(iat=NOW + LEEWAY + 1))) == "token not yet valid"


def test_zero_leeway_is_exact(secret_file: str) -> None:
    verifier = TokenVerifier(
        token_settings(gate_jwt_hs256_secret_file=secret_file, gate_jwt_leeway_seconds=0), clock=clock
    )
    assert verifier.verify(mint_hs256(HS_SECRET, claims(iat=NOW - 10, exp=NOW + 1, nbf=NOW)))
    assert refusal(verifier, mint_hs256(HS_SECRET, claims(iat=NOW - 10, exp=NOW))) == "token expired"
    assert refusal(verifier, mint_hs256(HS_SECRET, claims(nbf=NOW + 1))) == "token not yet valid"


def test_verification_follows_the_clock(secret_file: str) -> None:
    now = [float(NOW)]
    verifier = TokenVerifier(token_settings(gate_jwt_hs256_secret_file=secret_file), clock=lambda: now[0])
    token = mint_hs256(HS_SECRET, claims())
    assert verifier.verify(token)
    now[0] += 300 + LEEWAY
    assert refusal(verifier, token) == "token expired"


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("bad", ["1750000100", True, [NOW], {"at": NOW}])
def test_non_numeric_dates_are_refused(hs_verifier: TokenVerifier, claim: str, bad: object) -> None:
    assert refusal(hs_verifier, mint_hs256(HS_SECRET, claims(**{claim: bad}))) == f"token claim invalid: {claim}"


def test_absurd_expiry_is_refused_not_crashed(hs_verifier: TokenVerifier) -> None:
    # Python's json reads Infinity and NaN; 1e300 is finite but beyond any datetime.
    for exp in (float("inf"), float("nan"), 1e300, -1e300):
        token = forge_hs256(claims(exp=exp), HS_SECRET.encode())
        assert refusal(hs_verifier, token) in {"token claim invalid: exp", "token expired"}


# --- audience, issuer, required claims ----------------------------------------------------------------------------


def test_wrong_audience_is_refused(hs_verifier: TokenVerifier) -> None:
    assert refusal(hs_verifier, mint_hs256(HS_SECRET, claims(aud="another-service"))) == "token audience mismatch"
    assert refusal(hs_verifier, mint_hs256(HS_SECRET, claims(aud=["a", "b"]))) == "token audience mismatch"


def test_wrong_issuer_is_refused(hs_verifier: TokenVerifier) -> None:
    assert refusal(hs_verifier, mint_hs256(HS_SECRET, claims(iss="https://evil.example"))) == "token issuer mismatch"


@pytest.mark.parametrize("claim", ["exp", "sub", "aud", "iss"])
def test_missing_required_claims_are_refused(hs_verifier: TokenVerifier, claim: str) -> None:
    message = refusal(hs_verifier, mint_hs256(HS_SECRET, claims(**{claim: DROP})))
    assert message == f"token claim missing: {claim}"


# --- signatures, algorithms and keys ------------------------------------------------------------------------------


def test_bad_hs256_signature_is_refused(hs_verifier: TokenVerifier) -> None:
    token = mint_hs256("a different secret of at least thirty-two bytes", claims())
    assert refusal(hs_verifier, token) == "token signature invalid"


def test_bad_rs256_signature_is_refused(rs_verifier: TokenVerifier, other_key: rsa.RSAPrivateKey) -> None:
    assert refusal(rs_verifier, mint_rs256(other_key, claims())) == "token signature invalid"


def test_tampered_payload_is_refused(rs_verifier: TokenVerifier, signing_key: rsa.RSAPrivateKey) -> None:
    header, _, signature = mint_rs256(signing_key, claims(scope="process")).split(".")
    elevated = base64.urlsafe_b64encode(json.dumps(claims(scope="admin")).encode()).rstrip(b"=").decode()
    assert refusal(rs_verifier, f"{header}.{elevated}.{signature}") == "token signature invalid"


@pytest.mark.parametrize("verifier_name", ["hs_verifier", "rs_verifier", "jwks_verifier", "all_verifier"])
@pytest.mark.parametrize("alg", ["none", "None", "NONE", ""])
def test_unsigned_tokens_are_refused(request: pytest.FixtureRequest, verifier_name: str, alg: str) -> None:
    verifier: TokenVerifier = request.getfixturevalue(verifier_name)
    token = forge({"alg": alg, "typ": "JWT"}, claims(scope="admin"))
    assert looks_like_jwt(token)
    assert refusal(verifier, token) == "token algorithm not accepted"


def test_pyjwt_unsigned_token_is_refused(all_verifier: TokenVerifier) -> None:
    token = jwt.encode(claims(), "", algorithm="none")
    assert refusal(all_verifier, token) == "token algorithm not accepted"


def test_algorithm_confusion_with_the_public_pem_is_refused(
    rs_verifier: TokenVerifier, all_verifier: TokenVerifier, signing_key: rsa.RSAPrivateKey
) -> None:
    # The attacker knows the public key and "signs" an HS256 token with its PEM as the HMAC secret.
    for pem in (public_pem(signing_key), public_pem(signing_key).strip()):
        token = forge_hs256(claims(scope="admin"), pem)
        # No HS256 secret configured: no key exists for HS256 at all.
        assert refusal(rs_verifier, token) == "token algorithm not accepted"
        # An HS256 secret configured too: only that secret verifies HS256, so the signature fails.
        assert refusal(all_verifier, token) == "token signature invalid"


def test_algorithm_confusion_with_a_jwks_kid_is_refused(
    jwks_verifier: TokenVerifier, signing_key: rsa.RSAPrivateKey
) -> None:
    token = forge_hs256(claims(), public_pem(signing_key), kid="k1")
    assert refusal(jwks_verifier, token) == "token algorithm not accepted"


def test_rs256_token_without_rsa_keys_is_refused(hs_verifier: TokenVerifier, signing_key: rsa.RSAPrivateKey) -> None:
    assert refusal(hs_verifier, mint_rs256(signing_key, claims())) == "token algorithm not accepted"


@pytest.mark.parametrize("alg", ["HS384", "HS512", "RS384", "RS512", "PS256", "ES256", "EdDSA"])
def test_algorithms_other_than_the_pinned_ones_are_refused(all_verifier: TokenVerifier, alg: str) -> None:
    token = forge({"alg": alg, "typ": "JWT", "kid": "k1"}, claims(), b"x" * 64)
    assert refusal(all_verifier, token) == "token algorithm not accepted"


def test_hs384_token_with_the_right_secret_is_refused(hs_verifier: TokenVerifier) -> None:
    token = jwt.encode(claims(), HS_SECRET, algorithm="HS384")
    assert refusal(hs_verifier, token) == "token algorithm not accepted"


def test_unknown_kid_in_jwks_is_refused(jwks_verifier: TokenVerifier, signing_key: rsa.RSAPrivateKey) -> None:
    assert refusal(jwks_verifier, mint_rs256(signing_key, claims(), kid="k9")) == "token key id unknown"


def test_unknown_kid_does_not_fall_back_to_the_pem_key(
    all_verifier: TokenVerifier, signing_key: rsa.RSAPrivateKey
) -> None:
    assert refusal(all_verifier, mint_rs256(signing_key, claims(), kid="k9")) == "token key id unknown"


def test_missing_kid_with_only_a_jwks_is_refused(jwks_verifier: TokenVerifier, signing_key: rsa.RSAPrivateKey) -> None:
    assert refusal(jwks_verifier, mint_rs256(signing_key, claims())) == "token key id missing"


def test_non_string_kid_is_refused(jwks_verifier: TokenVerifier) -> None:
    token = forge({"alg": "RS256", "typ": "JWT", "kid": 1}, claims(), b"x" * 256)
    assert refusal(jwks_verifier, token) == "token invalid"


# --- disabled, malformed, oversized -------------------------------------------------------------------------------


def test_disabled_verifier_refuses_every_token(signing_key: rsa.RSAPrivateKey) -> None:
    verifier = TokenVerifier(TokenSettings(), clock=clock)
    assert not verifier.enabled
    for token in (mint_hs256(HS_SECRET, claims()), mint_rs256(signing_key, claims()), "junk"):
        assert refusal(verifier, token) == "bearer tokens are not configured"


def test_audience_and_issuer_alone_do_not_enable_tokens() -> None:
    assert not TokenVerifier(token_settings()).enabled


@pytest.mark.parametrize("junk", ["", "a.b.c", "....", "eyJ.eyJ.", "tk_abc_def", "a" * 50, "é.é.é"])
def test_malformed_tokens_are_refused(hs_verifier: TokenVerifier, junk: str) -> None:
    assert refusal(hs_verifier, junk) == "token malformed"


def test_oversized_token_is_refused_before_parsing(hs_verifier: TokenVerifier) -> None:
    token = mint_hs256(HS_SECRET, claims(padding="x" * 10_000))
    assert refusal(hs_verifier, token) == "token too long"


def test_header_that_is_not_an_object_is_refused(hs_verifier: TokenVerifier) -> None:
    header = base64.urlsafe_b64encode(b'["HS256"]').rstrip(b"=").decode()
    assert refusal(hs_verifier, f"{header}.e30.") == "token malformed"


def test_payload_that_is_not_an_object_is_refused(hs_verifier: TokenVerifier) -> None:
    token = jwt.api_jws.encode(b'["not", "claims"]', HS_SECRET, algorithm="HS256")
    assert refusal(hs_verifier, token) == "token malformed"


@pytest.fixture(scope="module")
def fuzz_verifier(tmp_path_factory: pytest.TempPathFactory) -> TokenVerifier:
    """Module-scoped: hypothesis re-runs a test body many times and refuses function-scoped fixtures."""
    key = rsa_key()
    directory = tmp_path_factory.mktemp("fuzz")
    return TokenVerifier(
        token_settings(
            gate_jwt_hs256_secret=HS_SECRET,
            gate_jwt_public_key_file=write(directory / "p.pem", public_pem(key)),
            gate_jwt_jwks_file=write(directory / "j.json", {"keys": [jwk(key, "k1")]}),
        ),
        clock=clock,
    )


@settings(max_examples=300, deadline=None)
@given(junk=st.text(max_size=300) | st.from_regex(r"[A-Za-z0-9_.-]{0,200}", fullmatch=True))
def test_junk_strings_only_ever_raise_unauthenticated(fuzz_verifier: TokenVerifier, junk: str) -> None:
    with pytest.raises(errors.Unauthenticated) as caught:
        fuzz_verifier.verify(junk)
    assert caught.value.reason == Reason.TOKEN_INVALID


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    header=st.dictionaries(
        st.sampled_from(["alg", "kid", "typ", "crit", "b64", "jku", "x5u"]),
        st.sampled_from(["HS256", "RS256", "none", "k1", "k9"]) | _json,
    ),
    payload=st.dictionaries(st.sampled_from(["sub", "exp", "nbf", "iat", "aud", "iss", "scope", "scp"]), _json),
    signature=st.binary(max_size=300),
)
def test_forged_tokens_only_ever_raise_unauthenticated(
    fuzz_verifier: TokenVerifier, header: dict[str, Any], payload: dict[str, Any], signature: bytes
) -> None:
    # Unsigned or wrongly signed by construction: none of them can be accepted.
    token = forge(header, payload, signature)
    with pytest.raises(errors.Unauthenticated) as caught:
        fuzz_verifier.verify(token)
    assert caught.value.reason == Reason.TOKEN_INVALID


@settings(max_examples=100, deadline=None)
@given(payload=st.dictionaries(st.sampled_from(["sub", "exp", "nbf", "iat", "aud", "iss", "scope", "scp"]), _json))
def test_signed_junk_claims_only_ever_raise_unauthenticated_or_verify(
    fuzz_verifier: TokenVerifier, payload: dict[str, Any]
) -> None:
    # Correctly signed, so the claim checks themselves meet arbitrary JSON values.
    token = forge_hs256(payload, HS_SECRET.encode())
    outcome: Principal | errors.Unauthenticated
    try:
        outcome = fuzz_verifier.verify(token)
    except errors.Unauthenticated as refused:
        outcome = refused
    if isinstance(outcome, errors.Unauthenticated):
        assert outcome.reason == Reason.TOKEN_INVALID
    else:
        assert outcome.id == "token:" + payload["sub"]


# --- looks_like_jwt -----------------------------------------------------------------------------------------------


def test_looks_like_jwt(signing_key: rsa.RSAPrivateKey) -> None:
    assert looks_like_jwt(mint_hs256(HS_SECRET, claims()))
    assert looks_like_jwt(mint_rs256(signing_key, claims(), kid="k1"))
    assert looks_like_jwt(jwt.encode(claims(), "", algorithm="none"))  # refused later, as TOKEN_INVALID
    for value in ("", "tk_0123abcd_" + "A" * 43, "a.b", "a.b.c.d", ".b.c", "a..c", "a.b.c ", "a b.c.d", "a.b.c\n"):
        assert not looks_like_jwt(value), value


# --- start-up -----------------------------------------------------------------------------------------------------


def test_key_source_without_audience_refuses_to_start(secret_file: str, pem_file: str) -> None:
    with pytest.raises(ValidationError, match="TECHNO_GATE_JWT_AUDIENCE is required"):
        token_settings(gate_jwt_public_key_file=pem_file, gate_jwt_audience="")
    # Settings built without validation still cannot produce a verifier without audience checks.
    unchecked = TokenSettings.model_construct(gate_jwt_hs256_secret_file=secret_file, gate_jwt_audience="")
    with pytest.raises(TokenConfigError, match="TECHNO_GATE_JWT_AUDIENCE is required"):
        TokenVerifier(unchecked)


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch, secret_file: str) -> None:
    monkeypatch.setenv("TECHNO_GATE_JWT_HS256_SECRET_FILE", secret_file)
    monkeypatch.setenv("TECHNO_GATE_JWT_AUDIENCE", AUDIENCE)
    monkeypatch.setenv("TECHNO_GATE_JWT_LEEWAY_SECONDS", "5")
    loaded = TokenSettings()
    assert loaded.gate_jwt_hs256_secret_file == secret_file
    assert loaded.gate_jwt_audience == AUDIENCE
    assert loaded.gate_jwt_leeway_seconds == 5
    assert loaded.gate_jwt_enabled


def test_inline_secret_is_not_shown_in_the_settings_repr() -> None:
    assert HS_SECRET not in repr(token_settings(gate_jwt_hs256_secret=HS_SECRET))


@pytest.mark.parametrize("leeway", [-1, 301, float("nan")])
def test_leeway_is_bounded(leeway: float) -> None:
    with pytest.raises(ValidationError):
        token_settings(gate_jwt_leeway_seconds=leeway)


def test_leeway_bound_holds_without_validation(secret_file: str) -> None:
    unchecked = TokenSettings.model_construct(
        gate_jwt_hs256_secret_file=secret_file, gate_jwt_audience=AUDIENCE, gate_jwt_leeway_seconds=3600
    )
    with pytest.raises(TokenConfigError, match="LEEWAY"):
        TokenVerifier(unchecked)


def test_both_secret_sources_is_an_error(secret_file: str) -> None:
    with pytest.raises(ValidationError, match="not both"):
        token_settings(gate_jwt_hs256_secret_file=secret_file, gate_jwt_hs256_secret=HS_SECRET)


def _start_error(**fields: Any) -> str:
    with pytest.raises(TokenConfigError) as caught:
        TokenVerifier(token_settings(**fields))
    return str(caught.value)


def test_missing_key_files_stop_start_up(tmp_path: Path) -> None:
    absent = str(tmp_path / "absent")
    assert "cannot read HS256 secret file" in _start_error(gate_jwt_hs256_secret_file=absent)
    assert "cannot read RS256 public key file" in _start_error(gate_jwt_public_key_file=absent)
    assert "cannot read JWKS file" in _start_error(gate_jwt_jwks_file=absent)


def test_short_hs256_secret_stops_start_up_without_showing_it(tmp_path: Path) -> None:
    secret = "only-twenty-one-bytes"
    assert "at least 32 bytes" in (message := _start_error(gate_jwt_hs256_secret=secret))
    assert secret not in message
    path = write(tmp_path / "short", secret + "\n\n")
    assert "at least 32 bytes" in (message := _start_error(gate_jwt_hs256_secret_file=path))
    assert secret not in message


def test_pem_as_hs256_secret_stops_start_up(tmp_path: Path, signing_key: rsa.RSAPrivateKey) -> None:
    path = write(tmp_path / "secret", public_pem(signing_key))
    message = _start_error(gate_jwt_hs256_secret_file=path)
    assert "looks like an asymmetric key" in message
    assert "BEGIN" not in message


def test_bad_pem_stops_start_up(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.pem", b"-----BEGIN PUBLIC KEY-----\nnot base64 at all\n-----END PUBLIC KEY-----\n")
    assert "is not a PEM public key" in _start_error(gate_jwt_public_key_file=path)
    assert "is not a PEM public key" in _start_error(gate_jwt_public_key_file=write(tmp_path / "e", b""))


def test_private_key_pem_stops_start_up(tmp_path: Path, signing_key: rsa.RSAPrivateKey) -> None:
    path = write(tmp_path / "private.pem", private_pem(signing_key))
    message = _start_error(gate_jwt_public_key_file=path)
    assert "holds a private key" in message
    assert "MII" not in message


def test_non_rsa_pem_stops_start_up(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert "is not an RSA public key" in _start_error(gate_jwt_public_key_file=write(tmp_path / "ec.pem", ec_pem))


def test_short_rsa_key_stops_start_up(tmp_path: Path) -> None:
    weak = rsa_key(1024)
    assert "at least 2048" in _start_error(gate_jwt_public_key_file=write(tmp_path / "weak.pem", public_pem(weak)))
    jwks = write(tmp_path / "weak.json", {"keys": [jwk(weak, "w")]})
    assert "at least 2048" in _start_error(gate_jwt_jwks_file=jwks)


def test_certificate_pem_is_accepted(tmp_path: Path, signing_key: rsa.RSAPrivateKey) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer.example")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(signing_key.public_key())
        .serial_number(1)
        .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2040, 1, 1, tzinfo=UTC))
        .sign(signing_key, hashes.SHA256())
    )
    path = write(tmp_path / "cert.pem", certificate.public_bytes(serialization.Encoding.PEM))
    verifier = TokenVerifier(token_settings(gate_jwt_public_key_file=path), clock=clock)
    assert verifier.verify(mint_rs256(signing_key, claims())).id == "token:alice"


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        pytest.param(b"{not json", "is not valid JSON", id="not-json"),
        pytest.param(b"[]", "with a `keys` list", id="not-an-object"),
        pytest.param(b'{"keys": {}}', "with a `keys` list", id="keys-not-a-list"),
        pytest.param(b'{"keys": [1]}', "is not a JSON object", id="entry-not-an-object"),
        pytest.param(b'{"keys": []}', "holds no RSA signing key", id="empty"),
        pytest.param(b'{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}', "holds no RSA", id="only-oct"),
        pytest.param(b'{"keys": [{"kty": "RSA", "kid": "x", "n": "AQAB"}]}', "not a valid RSA public key", id="no-e"),
    ],
)
def test_bad_jwks_stops_start_up(tmp_path: Path, document: bytes, expected: str) -> None:
    assert expected in _start_error(gate_jwt_jwks_file=write(tmp_path / "jwks.json", document))


def test_jwks_key_problems_stop_start_up(tmp_path: Path, signing_key: rsa.RSAPrivateKey) -> None:
    def start(*entries: dict[str, Any]) -> str:
        return _start_error(gate_jwt_jwks_file=write(tmp_path / "jwks.json", {"keys": list(entries)}))

    assert "has no `kid`" in start(jwk(signing_key, None))
    assert "is used twice" in start(jwk(signing_key, "a"), jwk(signing_key, "a"))
    private = jwk(signing_key, "p", d="c2VjcmV0")
    assert "is a private key" in (message := start(private))
    assert "c2VjcmV0" not in message


def test_jwks_keys_for_other_uses_are_ignored(
    tmp_path: Path, signing_key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey
) -> None:
    document = {
        "keys": [
            jwk(signing_key, "sig"),
            jwk(other_key, "enc", use="enc"),
            jwk(other_key, "ps", alg="PS256"),
            {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AA", "y": "AA"},
        ]
    }
    verifier = TokenVerifier(token_settings(gate_jwt_jwks_file=write(tmp_path / "j.json", document)), clock=clock)
    assert verifier.verify(mint_rs256(signing_key, claims(), kid="sig")).id == "token:alice"
    for kid in ("enc", "ps", "ec"):
        assert refusal(verifier, mint_rs256(other_key, claims(), kid=kid)) == "token key id unknown"
