"""Shared HTTP plumbing of the vendor adapters: one pooled ``httpx.AsyncClient`` each, one error mapping.

Why httpx rather than the vendors' official SDKs (openai, anthropic, google-genai):

- **Exact control of timeouts and retries.** The executor's ``RetryPolicy`` and circuit breaker govern every
  retry, and each call must give up after exactly the ``timeout`` it is given (the caller's remaining deadline).
  The SDKs each retry on their own by default, with their own backoff and Retry-After handling, and express
  timeouts per client or per phase; turning all of that off and re-checking it on every SDK upgrade is more
  work, and easier to get wrong, than one ``post`` with ``retries=0`` under ``asyncio.timeout``.
- **One error mapping.** Three SDKs mean three exception hierarchies to translate into the four
  ``ProviderError`` kinds; here one function maps an HTTP status or an httpx exception, the same for everyone.
- **No heavy dependency trees.** The three SDKs pull in dozens of packages (google-genai alone brings
  google-auth, websockets, …) for a single endpoint each; httpx is one small library already in the tree.
- **The wire formats are small and stable.** One JSON request and three or four fields of the answer per
  vendor, all versioned APIs (``/v1/chat/completions``, ``/v1/messages`` with ``anthropic-version``,
  ``/v1beta/…:generateContent``).

API keys travel only in request headers, never in URLs, and never in an exception message or a log line:
error messages carry the vendor's name, the HTTP status and at most a sanitised error code from the body
(vendors echo part of a wrong key in their 401 messages, so those messages are never copied).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC
from typing import Any

import httpx

from techno_executor.adapters.providers.sse import ServerSentEvent, parse_sse
from techno_executor.domain.provider import (
    ProviderConnectionError,
    ProviderError,
    ProviderRateLimited,
    ProviderServerError,
    ProviderTimeout,
)

USER_AGENT = "techno-executor"
# A short, identifier-like vendor error code ("invalid_api_key", "PERMISSION_DENIED") is safe to repeat.
_SAFE_CODE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
# Statuses the vendors' own SDKs retry besides 429 and 5xx: request timeout and lock conflict.
_TRANSIENT_4XX = frozenset({408, 409})


class ProviderRejected(ProviderError):
    """The vendor refused the request itself (HTTP 4xx other than 429: bad key, no access, unknown model,
    invalid request). Sending it again cannot help, so it is not retryable: the retry policy only retries the
    kinds in ``domain.retry.RETRYABLE``."""

    error_type = "provider_error"

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ProviderBadResponse(ProviderError):
    """The vendor answered 2xx with a body that is not the expected JSON (malformed, or a field missing).
    Not retryable (see ``ProviderRejected``)."""

    error_type = "provider_error"


def parse_retry_after(headers: httpx.Headers, *, now: Callable[[], float] = time.time) -> float | None:
    """The wait a 429 asks for, in seconds: ``retry-after-ms`` (OpenAI), else ``Retry-After`` as seconds or as
    an HTTP-date (a date in the past means 0). None when absent or unreadable."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds is not None:
        seconds = _non_negative_float(milliseconds)
        if seconds is not None:
            return seconds / 1000
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _non_negative_float(value)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; parsedate_to_datetime leaves "-0000" naive
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now())


def _non_negative_float(value: str) -> float | None:
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _error_code(response: httpx.Response) -> str | None:
    """A sanitised error code from a vendor's error body (``error.type`` / ``error.code`` / ``error.status``),
    never its free-text message."""
    try:
        body = response.json()
    except ValueError:
        return None
    return error_code(body)


def error_code(body: Any) -> str | None:
    """The sanitised code of an error object ``{"error": {...}}`` (an error body, or an error event of a stream)."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None
    for key in ("type", "code", "status"):
        code = error.get(key)
        if isinstance(code, str) and _SAFE_CODE.fullmatch(code):
            return code
    return None


def error_for_status(vendor: str, response: httpx.Response) -> ProviderError:
    """The ``ProviderError`` for a non-2xx answer."""
    status = response.status_code
    if status == 429:
        return ProviderRateLimited(
            f"{vendor} rate limited the call (HTTP 429)", retry_after=parse_retry_after(response.headers)
        )
    if status >= 500 or status in _TRANSIENT_4XX:  # 529 is Anthropic's "overloaded"
        return ProviderServerError(f"{vendor} failed (HTTP {status})", status=status)
    code = _error_code(response)
    detail = f": {code}" if code else ""
    return ProviderRejected(f"{vendor} rejected the request (HTTP {status}{detail})", status=status)


class JsonHttpProvider:
    """Base of the vendor adapters: a name, a model and one pooled client posting JSON to the vendor.

    The client is created here, never at import time; ``aclose()`` closes its connections. Transport retries
    are 0 (httpx's default, made explicit): only the executor's retry policy retries."""

    def __init__(
        self,
        *,
        name: str,
        model: str,
        base_url: str,
        headers: Mapping[str, str],
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._name = name
        self._model = model
        self._client = httpx.AsyncClient(
            base_url=base_url,
            headers={"user-agent": USER_AGENT, **headers},
            transport=transport or httpx.AsyncHTTPTransport(retries=0),
            follow_redirects=False,
        )

    @property
    def name(self) -> str:
        return self._name

    @property
    def model(self) -> str:
        return self._model

    async def aclose(self) -> None:
        await self._client.aclose()

    async def post_json(self, path: str, body: Mapping[str, Any], *, timeout: float) -> Any:
        """POST ``body`` to ``path`` (relative to the base URL) and return the decoded JSON answer, or raise the
        matching ``ProviderError``. ``timeout`` bounds the whole call, not only each phase of it: httpx's own
        timeouts are per connect / read / write, so a vendor trickling bytes could otherwise run past it."""
        if timeout <= 0:
            raise ProviderTimeout(f"{self._name} had no time left for the call")
        try:
            async with asyncio.timeout(timeout):
                response = await self._client.post(path, json=body, timeout=httpx.Timeout(timeout))
        except (TimeoutError, httpx.TimeoutException) as error:
            raise ProviderTimeout(f"{self._name} did not answer within {timeout:.3f}s") from error
        except httpx.TransportError as error:  # connect / read / write / protocol errors: no usable answer
            raise ProviderConnectionError(f"{self._name} could not be reached ({type(error).__name__})") from error
        except httpx.DecodingError as error:
            raise ProviderBadResponse(f"{self._name} sent an undecodable body") from error
        if not response.is_success:
            raise error_for_status(self._name, response)
        try:
            return response.json()
        except ValueError as error:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
            raise ProviderBadResponse(f"{self._name} answered with malformed JSON") from error

    async def post_sse(self, path: str, body: Mapping[str, Any], *, timeout: float) -> AsyncIterator[Any]:
        """POST ``body`` and yield the decoded JSON ``data`` of each server-sent event of the answer, as
        (event name, data) pairs. ``timeout`` bounds each read (the wait for the next piece), not the whole
        answer; the caller bounds that. Leaving the iteration early closes the response, and with it the
        connection: the vendor sees the disconnect and stops generating."""
        if timeout <= 0:
            raise ProviderTimeout(f"{self._name} had no time left for the call")
        try:
            async with self._client.stream("POST", path, json=body, timeout=httpx.Timeout(timeout)) as response:
                if not response.is_success:
                    await response.aread()
                    raise error_for_status(self._name, response)
                async for event in parse_sse(response.aiter_lines()):
                    yield event.event, self._decoded(event)
        except (TimeoutError, httpx.TimeoutException) as error:
            raise ProviderTimeout(f"{self._name} sent nothing for {timeout:.3f}s") from error
        except httpx.TransportError as error:  # refused, reset, or closed before the end of the answer
            raise ProviderConnectionError(f"{self._name} stream broke ({type(error).__name__})") from error
        except httpx.DecodingError as error:
            raise ProviderBadResponse(f"{self._name} sent an undecodable stream") from error

    def _decoded(self, event: ServerSentEvent) -> Any:
        if event.data == "[DONE]":  # OpenAI's end marker, not JSON
            return event.data
        try:
            return json.loads(event.data)
        except ValueError as error:
            raise ProviderBadResponse(f"{self._name} streamed malformed JSON") from error

    def stream_failed(self, body: Any) -> ProviderServerError:
        """An error event in the middle of an answer (overloaded, internal error): the vendor gave up on it."""
        code = error_code(body)
        return ProviderServerError(f"{self._name} failed mid-stream{f': {code}' if code else ''}")

    def bad_response(self, what: str) -> ProviderBadResponse:
        return ProviderBadResponse(f"{self._name} answered without {what}")


def require_int(value: object) -> int:
    """``value`` as a non-negative token count; ``TypeError`` otherwise (bool is refused, though an int)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError("not a token count")
    return value
