"""The provider port: what the executor needs from a language-model vendor, and how a vendor may fail.

Adapters (the fake now; OpenAI-compatible, Anthropic, Gemini later) translate their vendor's transport errors
into the four ``ProviderError`` kinds below, so retry and circuit-breaker decisions never depend on a vendor.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Completion:
    """What a provider answered, with the token usage it reported (or the adapter estimated)."""

    text: str
    input_tokens: int
    output_tokens: int


class Provider(Protocol):
    """One model of one vendor. ``complete`` must give up after ``timeout`` seconds with ``ProviderTimeout``."""

    @property
    def name(self) -> str: ...

    @property
    def model(self) -> str: ...

    async def complete(self, prompt: str, *, timeout: float) -> Completion: ...


@dataclass(frozen=True)
class Usage:
    """The token usage a streamed answer ends with."""

    input_tokens: int
    output_tokens: int


# What a stream yields: the answer's text pieces in order, then one ``Usage``, then nothing.
StreamEvent = str | Usage


class StreamingProvider(Provider, Protocol):
    """A provider that can also stream its answer. ``stream`` must give up with ``ProviderTimeout`` when
    ``timeout`` seconds pass without the next piece (each read, not the whole answer: an answer takes the
    time it takes, the caller's deadline bounds it). Closing the iterator early (``aclose``, or cancelling the
    task reading it) must end the vendor's work: the HTTP call is closed, nothing keeps generating."""

    def stream(self, prompt: str, *, timeout: float) -> AsyncGenerator[StreamEvent, None]: ...


class ProviderError(Exception):
    """A provider call failed. ``error_type`` is the bounded label used in metrics."""

    error_type = "provider_error"


class ProviderRateLimited(ProviderError):
    """The vendor throttled us (HTTP 429). ``retry_after`` is its Retry-After hint in seconds, when it sent one."""

    error_type = "rate_limited"

    def __init__(self, message: str = "rate limited", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ProviderServerError(ProviderError):
    """The vendor failed on its side (HTTP 5xx or an equivalent error answer)."""

    def __init__(self, message: str = "provider error", *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ProviderConnectionError(ProviderError):
    """The vendor could not be reached (DNS, refused, reset) — no answer was received."""


class ProviderTimeout(ProviderError):
    """The vendor did not answer within the timeout. Never retried: the time is spent, and the request may
    still be running at the vendor (retrying would double the cost and likely time out again)."""

    error_type = "timeout"
