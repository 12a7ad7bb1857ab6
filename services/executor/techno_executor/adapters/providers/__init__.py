"""Adapters of real language-model vendors behind the ``Provider`` port (see ``http`` for why httpx)."""

from __future__ import annotations

from techno_executor.adapters.providers.anthropic import AnthropicProvider
from techno_executor.adapters.providers.gemini import GeminiProvider
from techno_executor.adapters.providers.http import ProviderBadResponse, ProviderRejected
from techno_executor.adapters.providers.openai_compatible import OpenAICompatibleProvider
from techno_executor.adapters.providers.registry import KNOWN_PROVIDERS, build_providers, close_providers

__all__ = [
    "KNOWN_PROVIDERS",
    "AnthropicProvider",
    "GeminiProvider",
    "OpenAICompatibleProvider",
    "ProviderBadResponse",
    "ProviderRejected",
    "build_providers",
    "close_providers",
]
