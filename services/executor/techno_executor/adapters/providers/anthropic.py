"""Anthropic Messages API.

``POST {base_url}/v1/messages`` with ``x-api-key`` and ``anthropic-version: 2023-06-01``; ``max_tokens`` is
required. The answer is the concatenated ``text`` of the ``content`` blocks of type ``text``; the usage is
``usage.input_tokens`` (plus prompt-cache tokens, billed input too, when reported) / ``usage.output_tokens``.
An overloaded Anthropic answers HTTP 529, a server error like any 5xx.
"""

from __future__ import annotations

from typing import Any

import httpx

from techno_executor.adapters.providers.http import JsonHttpProvider, require_int
from techno_executor.domain.provider import Completion

ANTHROPIC_VERSION = "2023-06-01"
_CACHE_USAGE = ("cache_creation_input_tokens", "cache_read_input_tokens")


class AnthropicProvider(JsonHttpProvider):
    def __init__(
        self,
        *,
        model: str,
        api_key: str,
        base_url: str = "https://api.anthropic.com",
        max_tokens: int = 1024,
        name: str = "anthropic",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        super().__init__(
            name=name,
            model=model,
            base_url=base_url,
            headers={"x-api-key": api_key, "anthropic-version": ANTHROPIC_VERSION},
            transport=transport,
        )
        self._max_tokens = max_tokens

    async def complete(self, prompt: str, *, timeout: float) -> Completion:
        body = {
            "model": self.model,
            "max_tokens": self._max_tokens,
            "messages": [{"role": "user", "content": prompt}],
        }
        answer = await self.post_json("/v1/messages", body, timeout=timeout)
        return self._completion(answer)

    def _completion(self, answer: Any) -> Completion:
        try:
            blocks = answer["content"]
            if not isinstance(blocks, list):
                raise TypeError("content is not a list")
            texts = [block["text"] for block in blocks if block["type"] == "text"]
            if not all(isinstance(text, str) for text in texts):
                raise TypeError("text is not a string")
            usage = answer["usage"]
            input_tokens = require_int(usage["input_tokens"])
            input_tokens += sum(require_int(usage.get(key) or 0) for key in _CACHE_USAGE)
            output_tokens = require_int(usage["output_tokens"])
        except (KeyError, IndexError, TypeError, AttributeError) as error:
            raise self.bad_response("content[].text and usage") from error
        return Completion(text="".join(texts), input_tokens=input_tokens, output_tokens=output_tokens)
