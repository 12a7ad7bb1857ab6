"""OpenAI Chat Completions and every API that copies it (DeepSeek, xAI, vLLM, Ollama …): only the base URL,
the model and the key differ.

``POST {base_url}/chat/completions`` with a bearer key; the answer is ``choices[0].message.content`` and the
usage ``usage.prompt_tokens`` / ``usage.completion_tokens``. Streamed (``stream: true``), each ``data:`` event
carries ``choices[0].delta.content``; with ``stream_options.include_usage`` a last event with empty ``choices``
carries the usage; ``data: [DONE]`` ends the stream. An event with an ``error`` object is a failure mid-stream.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import httpx

from techno_executor.adapters.providers.http import JsonHttpProvider, require_int
from techno_executor.domain.provider import Completion, StreamEvent, Usage


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

    async def stream(self, prompt: str, *, timeout: float) -> AsyncGenerator[StreamEvent, None]:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        usage: Usage | None = None
        async for _, data in self.post_sse("/chat/completions", body, timeout=timeout):
            if data == "[DONE]":
                if usage is None:
                    raise self.bad_response("usage at the end of the stream")
                yield usage
                return
            if not isinstance(data, dict) or "error" in data:
                raise self.stream_failed(data)
            text = self._delta(data)
            if text:
                yield text
            if data.get("usage"):
                usage = self._usage(data["usage"])
        raise self.bad_response("the [DONE] end of the stream")

    def _delta(self, data: dict[str, Any]) -> str | None:
        try:
            choices = data["choices"]
            text = choices[0].get("delta", {}).get("content") if choices else None
        except (KeyError, IndexError, TypeError, AttributeError) as error:
            raise self.bad_response("choices[].delta") from error
        if text is not None and not isinstance(text, str):
            raise self.bad_response("a text delta")
        return text

    def _usage(self, usage: Any) -> Usage:
        try:
            return _usage_of(usage)
        except (KeyError, TypeError) as error:
            raise self.bad_response("usage") from error

    def _completion(self, answer: Any) -> Completion:
        try:
            text = answer["choices"][0]["message"]["content"]
            usage = _usage_of(answer["usage"])
        except (KeyError, IndexError, TypeError) as error:
            raise self.bad_response("choices[0].message.content and usage") from error
        if not isinstance(text, str):  # null when the model refused or only called tools
            raise self.bad_response("a text answer")
        return Completion(text=text, input_tokens=usage.input_tokens, output_tokens=usage.output_tokens)


def _usage_of(usage: Any) -> Usage:
    """The tokens of a ``usage`` object, a whole answer's or a stream's last event's."""
    return Usage(require_int(usage["prompt_tokens"]), require_int(usage["completion_tokens"]))
