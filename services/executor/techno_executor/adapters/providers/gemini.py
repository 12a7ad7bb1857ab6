"""Google Gemini API (generativelanguage.googleapis.com).

``POST {base_url}/v1beta/models/{model}:generateContent`` with ``x-goog-api-key`` (a header, never the
``?key=`` query parameter, which would put the key in URLs and their logs). The answer is the concatenated
``text`` of ``candidates[0].content.parts`` (thought summaries excluded); the usage is
``usageMetadata.promptTokenCount`` / ``candidatesTokenCount`` plus ``thoughtsTokenCount``, which Gemini bills
as output. Gemini leaves zero counts out of its JSON, so a missing output count is 0.

Streamed: ``:streamGenerateContent?alt=sse``, each ``data:`` event a whole response object holding the next text
parts, the later ones ``usageMetadata`` (running totals: the last one counts). There is no end marker; the
stream ends with the HTTP answer, after an event with a ``finishReason``. An event with an ``error`` object is
a failure mid-stream.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import quote

import httpx

from techno_executor.adapters.providers.http import JsonHttpProvider, require_int
from techno_executor.domain.provider import Completion, StreamEvent, Usage


class GeminiProvider(JsonHttpProvider):
    def __init__(
        self,
        *,
        model: str,
        api_key: str,
        base_url: str = "https://generativelanguage.googleapis.com",
        name: str = "google",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        model = model.removeprefix("models/")
        super().__init__(
            name=name, model=model, base_url=base_url, headers={"x-goog-api-key": api_key}, transport=transport
        )
        self._path = f"/v1beta/models/{quote(model, safe='')}:generateContent"
        self._stream_path = f"/v1beta/models/{quote(model, safe='')}:streamGenerateContent?alt=sse"

    async def complete(self, prompt: str, *, timeout: float) -> Completion:
        body = {"contents": [{"role": "user", "parts": [{"text": prompt}]}]}
        answer = await self.post_json(self._path, body, timeout=timeout)
        return self._completion(answer)

    async def stream(self, prompt: str, *, timeout: float) -> AsyncGenerator[StreamEvent, None]:
        body = {"contents": [{"role": "user", "parts": [{"text": prompt}]}]}
        usage: Usage | None = None
        finished = False
        async for _, data in self.post_sse(self._stream_path, body, timeout=timeout):
            if not isinstance(data, dict) or "error" in data:
                raise self.stream_failed(data)
            try:
                candidate = data["candidates"][0] if data.get("candidates") else {}
                for part in candidate.get("content", {}).get("parts", []):
                    if isinstance(part.get("text"), str) and part["text"] and not part.get("thought"):
                        yield part["text"]
                finished = finished or bool(candidate.get("finishReason"))
                if "usageMetadata" in data:
                    usage = self._usage(data["usageMetadata"])
            except (KeyError, IndexError, TypeError, AttributeError) as error:
                raise self.bad_response("candidates[0].content.parts in a streamed event") from error
        if not finished or usage is None:
            raise self.bad_response("a finishReason and usageMetadata before the end of the stream")
        yield usage

    @staticmethod
    def _usage(usage: Any) -> Usage:
        """Input and output tokens of a ``usageMetadata``; the thinking tokens are billed as output."""
        output_tokens = require_int(usage.get("candidatesTokenCount", 0))
        output_tokens += require_int(usage.get("thoughtsTokenCount", 0))
        return Usage(require_int(usage["promptTokenCount"]), output_tokens)

    def _completion(self, answer: Any) -> Completion:
        try:
            parts = answer["candidates"][0]["content"]["parts"]
            if not isinstance(parts, list):
                raise TypeError("parts is not a list")
            texts = [part["text"] for part in parts if "text" in part and not part.get("thought")]
            if not texts or not all(isinstance(text, str) for text in texts):
                raise TypeError("no text part")
            usage = self._usage(answer["usageMetadata"])
        except (KeyError, IndexError, TypeError, AttributeError) as error:
            # A candidate without content is also how a safety block looks (finishReason SAFETY).
            raise self.bad_response("candidates[0].content.parts[].text and usageMetadata") from error
        return Completion(text="".join(texts), input_tokens=usage.input_tokens, output_tokens=usage.output_tokens)
