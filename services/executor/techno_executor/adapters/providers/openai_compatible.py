"""OpenAI Chat Completions and every API that copies it (DeepSeek, xAI, vLLM, Ollama …): only the base URL,
the model and the key differ.

``POST {base_url}/chat/completions`` with a bearer key; the answer is ``choices[0].message.content`` and the
usage ``usage.prompt_tokens`` / ``usage.completion_tokens``.
"""

from __future__ import annotations

from typing import Any

import httpx

from techno_executor.adapters.providers.http import JsonHttpProvider, require_int
from techno_executor.domain.provider import Completion


class OpenAICompatibleProvider(JsonHttpProvider):
    def __init__(
        self,
        *,
        name: str,
        model: str,
        base_url: str,
        api_key: str,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            name=name,
            model=model,
            base_url=base_url,
            headers={"authorization": f"Bearer {api_key}"},
            transport=transport,
        )

    async def complete(self, prompt: str, *, timeout: float) -> Completion:
        body = {"model": self.model, "messages": [{"role": "user", "content": prompt}]}
        answer = await self.post_json("/chat/completions", body, timeout=timeout)
        return self._completion(answer)

    def _completion(self, answer: Any) -> Completion:
        try:
            text = answer["choices"][0]["message"]["content"]
            usage = answer["usage"]
            input_tokens = require_int(usage["prompt_tokens"])
            output_tokens = require_int(usage["completion_tokens"])
        except (KeyError, IndexError, TypeError) as error:
            raise self.bad_response("choices[0].message.content and usage") from error
        if not isinstance(text, str):  # null when the model refused or only called tools
            raise self.bad_response("a text answer")
        return Completion(text=text, input_tokens=input_tokens, output_tokens=output_tokens)
