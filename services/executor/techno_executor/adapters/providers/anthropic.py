"""Anthropic Messages API.

``POST {base_url}/v1/messages`` with ``x-api-key`` and ``anthropic-version: 2023-06-01``; ``max_tokens`` is
required. The answer is the concatenated ``text`` of the ``content`` blocks of type ``text``; the usage is
``usage.input_tokens`` (plus prompt-cache tokens, billed input too, when reported) / ``usage.output_tokens``.
An overloaded Anthropic answers HTTP 529, a server error like any 5xx.

Streamed (``stream: true``), the events are ``message_start`` (``message.usage`` with the input tokens),
``content_block_delta`` (``delta.text`` of a ``text_delta``), ``message_delta`` (``usage.output_tokens``, the
running total), ``message_stop``; ``ping`` keeps the connection alive and an ``error`` event (``overloaded_error``)
is a failure mid-stream.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import httpx

from techno_executor.adapters.providers.http import JsonHttpProvider, require_int
from techno_executor.domain.provider import Completion, StreamEvent, Usage

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

    async def stream(self, prompt: str, *, timeout: float) -> AsyncGenerator[StreamEvent, None]:
        body = {
            "model": self.model,
            "max_tokens": self._max_tokens,
            "messages": [{"role": "user", "content": prompt}],
            "stream": True,
        }
        input_tokens = output_tokens = 0
        async for event, data in self.post_sse("/v1/messages", body, timeout=timeout):
            if event == "error" or not isinstance(data, dict):
                raise self.stream_failed(data)
            try:
                if event == "message_start":
                    input_tokens, output_tokens = self._tokens(data["message"]["usage"], input_tokens)
                elif event == "message_delta":
                    input_tokens, output_tokens = self._tokens(data["usage"], input_tokens)
                elif event == "content_block_delta" and data["delta"]["type"] == "text_delta":
                    text = data["delta"]["text"]
                    if not isinstance(text, str):
                        raise TypeError("text is not a string")
                    yield text
                elif event == "message_stop":
                    yield Usage(input_tokens, output_tokens)
                    return
            except (KeyError, TypeError) as error:
                raise self.bad_response(f"the fields of a {event} event") from error
        raise self.bad_response("the message_stop end of the stream")

    @staticmethod
    def _tokens(usage: Any, input_tokens: int) -> tuple[int, int]:
        """(input, output) tokens of a usage object; a message_delta repeats the input count or leaves it out."""
        if "input_tokens" in usage:
            input_tokens = require_int(usage["input_tokens"])
            input_tokens += sum(require_int(usage.get(key) or 0) for key in _CACHE_USAGE)
        return input_tokens, require_int(usage.get("output_tokens") or 0)

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
