"""Configuration of the real language-model vendors: which providers may run, their endpoints, models and keys.

``ProviderSettings`` is a mixin of the executor's settings. Endpoints and models are ``TECHNO_LLM_*``
variables; the API keys keep each vendor's STANDARD variable name (``OPENAI_API_KEY`` …, no ``TECHNO_``
prefix), the one every vendor tool and secret manager already uses. A key can instead come from a file named by
``<VARIABLE>_FILE`` (Docker / Kubernetes secrets). Setting both the variable and its ``_FILE`` is refused as
ambiguous (the convention of the official Docker images) rather than one silently winning; the file's content
is stripped of surrounding whitespace (the trailing newline editors add). An empty variable counts as unset.

Keys are ``SecretStr``: they print as ``**********`` in reprs, logs and validation errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode

from techno_core.settings import TECHNO_CONFIG

# Provider name (as written in TECHNO_LLM_ALLOWED_PROVIDERS) → the standard variable holding its API key.
API_KEY_VARIABLES: dict[str, str] = {
    "openai": "OPENAI_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
    "xai": "XAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "google": "GOOGLE_API_KEY",
}


class ProviderConfigError(ValueError):
    """The provider configuration cannot be used; the message is one line naming the provider and the
    variable to set. The executor refuses to start with it (fail closed)."""


def _key_field(variable: str) -> Any:
    return Field(None, validation_alias=variable, description=f"API key, read from `{variable}` (no prefix).")


def _key_file_field(variable: str) -> Any:
    return Field(
        None,
        validation_alias=f"{variable}_FILE",
        description=f"File holding the API key instead of `{variable}`, read from `{variable}_FILE` (no prefix).",
    )


class ProviderSettings(BaseSettings):
    """Mixin: the language-model vendors the executor may call."""

    model_config = TECHNO_CONFIG

    llm_allowed_providers: Annotated[tuple[str, ...], NoDecode] = Field(
        ("fake",),
        description="Comma-separated providers the executor may call: fake, openai, deepseek, xai, anthropic, "
        "google. Each real one needs its API key; an unknown name or a missing key stops the executor at start.",
    )
    llm_openai_base_url: str = Field(
        "https://api.openai.com/v1",
        description="Base URL of the `openai` provider (any OpenAI-compatible API: vLLM, Ollama "
        "`http://127.0.0.1:11434/v1` …); `/chat/completions` is appended.",
    )
    llm_openai_model: str = Field("gpt-4o-mini", min_length=1, description="Model of the `openai` provider.")
    llm_deepseek_base_url: str = Field(
        "https://api.deepseek.com/v1", description="Base URL of the `deepseek` provider (OpenAI-compatible)."
    )
    llm_deepseek_model: str = Field("deepseek-chat", min_length=1, description="Model of the `deepseek` provider.")
    llm_xai_base_url: str = Field(
        "https://api.x.ai/v1", description="Base URL of the `xai` provider (OpenAI-compatible)."
    )
    llm_xai_model: str = Field("grok-3-mini", min_length=1, description="Model of the `xai` provider.")
    llm_anthropic_base_url: str = Field(
        "https://api.anthropic.com", description="Base URL of the `anthropic` provider; `/v1/messages` is appended."
    )
    llm_anthropic_model: str = Field(
        "claude-3-5-haiku-latest", min_length=1, description="Model of the `anthropic` provider."
    )
    llm_anthropic_max_tokens: int = Field(
        1024, ge=1, description="Most tokens an `anthropic` answer may have (the Messages API requires a limit)."
    )
    llm_google_base_url: str = Field(
        "https://generativelanguage.googleapis.com",
        description="Base URL of the `google` (Gemini) provider; `/v1beta/models/<model>:generateContent` is appended.",
    )
    llm_google_model: str = Field("gemini-2.5-flash", min_length=1, description="Model of the `google` provider.")

    openai_api_key: SecretStr | None = _key_field("OPENAI_API_KEY")
    openai_api_key_file: Path | None = _key_file_field("OPENAI_API_KEY")
    deepseek_api_key: SecretStr | None = _key_field("DEEPSEEK_API_KEY")
    deepseek_api_key_file: Path | None = _key_file_field("DEEPSEEK_API_KEY")
    xai_api_key: SecretStr | None = _key_field("XAI_API_KEY")
    xai_api_key_file: Path | None = _key_file_field("XAI_API_KEY")
    anthropic_api_key: SecretStr | None = _key_field("ANTHROPIC_API_KEY")
    anthropic_api_key_file: Path | None = _key_file_field("ANTHROPIC_API_KEY")
    google_api_key: SecretStr | None = _key_field("GOOGLE_API_KEY")
    google_api_key_file: Path | None = _key_file_field("GOOGLE_API_KEY")

    @field_validator("llm_allowed_providers", mode="before")
    @classmethod
    def _split_allowlist(cls, value: Any) -> Any:
        """``"openai, Anthropic,,openai"`` → ``("openai", "anthropic")``: trimmed, lower-cased, de-duplicated."""
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            return value
        names = (str(item).strip().lower() for item in items)
        return tuple(dict.fromkeys(name for name in names if name))

    @field_validator(
        "llm_openai_base_url",
        "llm_deepseek_base_url",
        "llm_xai_base_url",
        "llm_anthropic_base_url",
        "llm_google_base_url",
    )
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    def api_key(self, provider: str) -> SecretStr:
        """The API key of ``provider`` from its variable or its ``_FILE``; ``ProviderConfigError`` when it is
        missing, empty, unreadable or set both ways."""
        variable = API_KEY_VARIABLES.get(provider)
        if variable is None:
            raise ProviderConfigError(f"provider {provider!r} takes no API key")
        value: SecretStr | None = getattr(self, f"{provider}_api_key")
        path: Path | None = getattr(self, f"{provider}_api_key_file")
        key = value.get_secret_value().strip() if value is not None else ""
        if path is not None:
            if key:
                raise ProviderConfigError(f"provider {provider!r}: set either {variable} or {variable}_FILE, not both")
            try:
                key = path.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as error:
                reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
                raise ProviderConfigError(
                    f"provider {provider!r}: cannot read {variable}_FILE ({path}): {reason}"
                ) from None
            if not key:
                raise ProviderConfigError(f"provider {provider!r}: {variable}_FILE ({path}) is empty")
        if not key:
            raise ProviderConfigError(
                f"provider {provider!r} is allowed (TECHNO_LLM_ALLOWED_PROVIDERS) but has no API key: "
                f"set {variable} or {variable}_FILE"
            )
        return SecretStr(key)
