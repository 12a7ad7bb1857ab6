"""Builds the allowlisted providers from ``ProviderSettings``, failing closed.

Only the providers named in ``TECHNO_LLM_ALLOWED_PROVIDERS`` are built (a vendor not allowed gets no client,
even if its key is set). Everything is checked before any client is created, so a configuration error leaves
nothing to close: an unknown name or a missing key raises ``ProviderConfigError`` and the executor must refuse
to start.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from techno_executor.adapters.providers.anthropic import AnthropicProvider
from techno_executor.adapters.providers.gemini import GeminiProvider
from techno_executor.adapters.providers.openai_compatible import OpenAICompatibleProvider
from techno_executor.domain.provider import Provider
from techno_executor.provider_settings import ProviderConfigError, ProviderSettings

_Factory = Callable[[ProviderSettings, str], Provider]


def _openai_compatible(name: str) -> _Factory:
    def build(settings: ProviderSettings, key: str) -> Provider:
        return OpenAICompatibleProvider(
            name=name,
            model=getattr(settings, f"llm_{name}_model"),
            base_url=getattr(settings, f"llm_{name}_base_url"),
            api_key=key,
        )

    return build


def _anthropic(settings: ProviderSettings, key: str) -> Provider:
    return AnthropicProvider(
        model=settings.llm_anthropic_model,
        base_url=settings.llm_anthropic_base_url,
        max_tokens=settings.llm_anthropic_max_tokens,
        api_key=key,
    )


def _google(settings: ProviderSettings, key: str) -> Provider:
    return GeminiProvider(model=settings.llm_google_model, base_url=settings.llm_google_base_url, api_key=key)


_FACTORIES: dict[str, _Factory] = {
    "openai": _openai_compatible("openai"),
    "deepseek": _openai_compatible("deepseek"),
    "xai": _openai_compatible("xai"),
    "anthropic": _anthropic,
    "google": _google,
}
KNOWN_PROVIDERS: tuple[str, ...] = ("fake", *_FACTORIES)


def build_providers(settings: ProviderSettings, *, fake: Provider) -> dict[str, Provider]:
    """The allowlisted providers by name, in allowlist order; ``fake`` stands for the name ``fake``.
    Raises ``ProviderConfigError`` (one line: provider and variable to set) when the allowlist is empty, names
    an unknown provider, or allows a vendor without a usable API key. Close the result with
    ``close_providers``."""
    allowed = settings.llm_allowed_providers
    if not allowed:
        raise ProviderConfigError(f"TECHNO_LLM_ALLOWED_PROVIDERS is empty: name at least one of {_known()}")
    keys: dict[str, str] = {}
    for name in allowed:
        if name == "fake":
            continue
        if name not in _FACTORIES:
            raise ProviderConfigError(
                f"TECHNO_LLM_ALLOWED_PROVIDERS names unknown provider {name!r}: known are {_known()}"
            )
        keys[name] = settings.api_key(name).get_secret_value()
    return {name: fake if name == "fake" else _FACTORIES[name](settings, keys[name]) for name in allowed}


async def close_providers(providers: Mapping[str, Provider]) -> None:
    """Close the HTTP clients of the vendor adapters (the fake and other providers without ``aclose`` are left
    alone). Every client is closed even if one fails; the first failure is raised afterwards."""
    first_error: BaseException | None = None
    for provider in providers.values():
        aclose = getattr(provider, "aclose", None)
        if aclose is None:
            continue
        try:
            await aclose()
        except Exception as error:
            first_error = first_error or error
    if first_error is not None:
        raise first_error


def _known() -> str:
    return ", ".join(KNOWN_PROVIDERS)
