"""Provider settings and the registry: allowlist parsing, API keys from the environment or files, fail closed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from techno_executor.adapters.fake_provider import FakeProvider
from techno_executor.adapters.providers import (
    KNOWN_PROVIDERS,
    AnthropicProvider,
    GeminiProvider,
    OpenAICompatibleProvider,
    build_providers,
    close_providers,
)
from techno_executor.provider_settings import API_KEY_VARIABLES, ProviderConfigError, ProviderSettings

KEY = "sk-unit-S3CRET-0123456789"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own keys must not leak into (or change) these tests."""
    for variable in API_KEY_VARIABLES.values():
        monkeypatch.delenv(variable, raising=False)
        monkeypatch.delenv(f"{variable}_FILE", raising=False)
    for name in ProviderSettings.model_fields:
        monkeypatch.delenv(f"TECHNO_{name.upper()}", raising=False)


def test_defaults_allow_only_the_fake() -> None:
    settings = ProviderSettings()
    assert settings.llm_allowed_providers == ("fake",)
    assert settings.llm_openai_base_url == "https://api.openai.com/v1"
    assert settings.llm_anthropic_base_url == "https://api.anthropic.com"
    assert settings.llm_google_base_url == "https://generativelanguage.googleapis.com"
    assert settings.llm_deepseek_base_url == "https://api.deepseek.com/v1"
    assert settings.llm_xai_base_url == "https://api.x.ai/v1"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("fake", ("fake",)),
        ("openai,anthropic", ("openai", "anthropic")),
        (" OpenAI , ,google,openai,", ("openai", "google")),
        ("", ()),
    ],
)
def test_allowlist_parsing(monkeypatch: pytest.MonkeyPatch, value: str, expected: tuple[str, ...]) -> None:
    monkeypatch.setenv("TECHNO_LLM_ALLOWED_PROVIDERS", value)
    assert ProviderSettings().llm_allowed_providers == expected


def test_endpoints_and_models_from_techno_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TECHNO_LLM_OPENAI_BASE_URL", "http://127.0.0.1:11434/v1/")
    monkeypatch.setenv("TECHNO_LLM_OPENAI_MODEL", "llama3.2")
    monkeypatch.setenv("TECHNO_LLM_ANTHROPIC_MAX_TOKENS", "64")
    settings = ProviderSettings()
    assert settings.llm_openai_base_url == "http://127.0.0.1:11434/v1"  # trailing slash dropped
    assert (settings.llm_openai_model, settings.llm_anthropic_max_tokens) == ("llama3.2", 64)


def test_a_base_url_must_be_http(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TECHNO_LLM_GOOGLE_BASE_URL", "generativelanguage.googleapis.com")
    with pytest.raises(ValidationError, match="llm_google_base_url"):
        ProviderSettings()


@pytest.mark.parametrize(("provider", "variable"), sorted(API_KEY_VARIABLES.items()))
def test_keys_come_from_the_standard_variables(monkeypatch: pytest.MonkeyPatch, provider: str, variable: str) -> None:
    monkeypatch.setenv(variable, f"  {KEY}\n")
    monkeypatch.setenv(f"TECHNO_{variable}", "not-this-one")  # the prefixed name is not the key's variable
    settings = ProviderSettings()
    assert settings.api_key(provider).get_secret_value() == KEY
    assert KEY not in repr(settings)
    assert KEY not in str(settings)


@pytest.mark.parametrize(("provider", "variable"), sorted(API_KEY_VARIABLES.items()))
def test_keys_come_from_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, provider: str, variable: str) -> None:
    secret = tmp_path / "key"
    secret.write_text(f"{KEY}\n\n", encoding="utf-8")
    monkeypatch.setenv(f"{variable}_FILE", str(secret))
    assert ProviderSettings().api_key(provider).get_secret_value() == KEY


def test_an_empty_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text(KEY, encoding="utf-8")
    monkeypatch.setenv("OPENAI_API_KEY", "")
    monkeypatch.setenv("OPENAI_API_KEY_FILE", str(secret))
    assert ProviderSettings().api_key("openai").get_secret_value() == KEY


def test_variable_and_file_together_are_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text("other", encoding="utf-8")
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY_FILE", str(secret))
    with pytest.raises(ProviderConfigError, match="either ANTHROPIC_API_KEY or ANTHROPIC_API_KEY_FILE") as caught:
        ProviderSettings().api_key("anthropic")
    assert KEY not in str(caught.value)


@pytest.mark.parametrize(("content", "match"), [(None, "cannot read GOOGLE_API_KEY_FILE"), (" \n", "is empty")])
def test_unusable_key_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str | None, match: str) -> None:
    secret = tmp_path / "key"
    if content is not None:
        secret.write_text(content, encoding="utf-8")
    monkeypatch.setenv("GOOGLE_API_KEY_FILE", str(secret))
    with pytest.raises(ProviderConfigError, match=match):
        ProviderSettings().api_key("google")


async def test_only_allowlisted_providers_are_built(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in API_KEY_VARIABLES.values():
        monkeypatch.setenv(variable, KEY)  # every key set: the allowlist alone decides
    monkeypatch.setenv("TECHNO_LLM_ALLOWED_PROVIDERS", "fake,xai,anthropic,google")
    fake = FakeProvider()
    providers = build_providers(ProviderSettings(), fake=fake)
    try:
        assert list(providers) == ["fake", "xai", "anthropic", "google"]
        assert providers["fake"] is fake
        xai = providers["xai"]
        assert isinstance(xai, OpenAICompatibleProvider)
        assert (xai.name, xai.model) == ("xai", "grok-3-mini")
        assert isinstance(providers["anthropic"], AnthropicProvider)
        assert isinstance(providers["google"], GeminiProvider)
        assert (providers["google"].name, providers["google"].model) == ("google", "gemini-2.5-flash")
    finally:
        await close_providers(providers)


async def test_the_default_builds_only_the_fake() -> None:
    fake = FakeProvider()
    providers = build_providers(ProviderSettings(), fake=fake)
    assert providers == {"fake": fake}
    await close_providers(providers)  # nothing to close; the fake has no aclose


def _config_error(monkeypatch: pytest.MonkeyPatch, allowlist: str, **env: str) -> str:
    monkeypatch.setenv("TECHNO_LLM_ALLOWED_PROVIDERS", allowlist)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    with pytest.raises(ProviderConfigError) as caught:
        build_providers(ProviderSettings(), fake=FakeProvider())
    message = str(caught.value)
    assert "\n" not in message
    assert KEY not in message
    return message


def test_an_unknown_provider_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    message = _config_error(monkeypatch, "fake,openia")
    assert "unknown provider 'openia'" in message
    assert "TECHNO_LLM_ALLOWED_PROVIDERS" in message
    assert all(name in message for name in KNOWN_PROVIDERS)


@pytest.mark.parametrize(("provider", "variable"), sorted(API_KEY_VARIABLES.items()))
def test_a_provider_without_its_key_fails_closed(monkeypatch: pytest.MonkeyPatch, provider: str, variable: str) -> None:
    others = {v: KEY for v in API_KEY_VARIABLES.values() if v != variable}
    message = _config_error(monkeypatch, f"fake,{provider}", **others)
    assert f"{provider!r}" in message
    assert f"set {variable} or {variable}_FILE" in message


def test_an_empty_allowlist_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "TECHNO_LLM_ALLOWED_PROVIDERS is empty" in _config_error(monkeypatch, " , ")


def test_the_config_error_is_a_value_error() -> None:
    assert issubclass(ProviderConfigError, ValueError)


def test_every_known_provider_has_a_key_variable() -> None:
    assert set(KNOWN_PROVIDERS) - {"fake"} == set(API_KEY_VARIABLES)


def test_every_field_is_described() -> None:
    undescribed = [name for name, info in ProviderSettings.model_fields.items() if not info.description]
    assert undescribed == []


def test_invalid_anthropic_max_tokens() -> None:
    kwargs: dict[str, Any] = {"llm_anthropic_max_tokens": 0}
    with pytest.raises(ValidationError, match="llm_anthropic_max_tokens"):
        ProviderSettings(**kwargs)
