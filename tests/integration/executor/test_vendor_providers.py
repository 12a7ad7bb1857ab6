"""The vendor adapters against real local HTTP servers speaking each vendor's wire format (vendor_stubs)."""

from __future__ import annotations

import asyncio
import email.utils
import socket
import time
import traceback
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from techno_executor.adapters.providers import (
    AnthropicProvider,
    GeminiProvider,
    OpenAICompatibleProvider,
    ProviderBadResponse,
    ProviderRejected,
    build_providers,
    close_providers,
)
from techno_executor.domain.provider import (
    ProviderConnectionError,
    ProviderError,
    ProviderRateLimited,
    ProviderServerError,
    ProviderTimeout,
)
from techno_executor.domain.retry import RETRYABLE, GaveUp, RetryPolicy, StopReason
from techno_executor.provider_settings import ProviderSettings
from tests.integration.executor.vendor_stubs import (
    ANSWER,
    Recorded,
    Reply,
    VendorStub,
    anthropic_success,
    gemini_success,
    openai_success,
    serve,
)

Adapter = OpenAICompatibleProvider | AnthropicProvider | GeminiProvider

KEY = "sk-test-S3CRET-key-0123456789"
PROMPT = "Say hello in French."


@dataclass(frozen=True)
class Vendor:
    name: str
    success: Callable[[Recorded], Any]
    build: Callable[[str], Adapter]  # base URL of the stub → adapter
    tokens: tuple[int, int]
    check_request: Callable[[Recorded], None]


def _check_openai(request: Recorded) -> None:
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.body == {"model": "gpt-test", "messages": [{"role": "user", "content": PROMPT}]}


def _check_anthropic(request: Recorded) -> None:
    assert (request.method, request.path) == ("POST", "/v1/messages")
    assert request.headers["x-api-key"] == KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in request.headers
    assert request.body == {
        "model": "claude-test",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": PROMPT}],
    }


def _check_gemini(request: Recorded) -> None:
    assert (request.method, request.path) == ("POST", "/v1beta/models/gemini-test:generateContent")
    assert request.headers["x-goog-api-key"] == KEY
    assert "key=" not in request.path
    assert request.body == {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]}


VENDORS = [
    Vendor(
        "openai",
        openai_success,
        lambda url: OpenAICompatibleProvider(name="openai", model="gpt-test", base_url=f"{url}/v1", api_key=KEY),
        (11, 3),
        _check_openai,
    ),
    Vendor(
        "anthropic",
        anthropic_success,
        lambda url: AnthropicProvider(model="claude-test", base_url=url, api_key=KEY, max_tokens=256),
        (12, 4),
        _check_anthropic,
    ),
    Vendor(
        "google",
        gemini_success,
        lambda url: GeminiProvider(model="models/gemini-test", base_url=url, api_key=KEY),
        (13, 2 + 5),  # thoughts are billed output
        _check_gemini,
    ),
]


@dataclass
class Running:
    vendor: Vendor
    stub: VendorStub
    provider: Adapter


@pytest.fixture(params=VENDORS, ids=lambda vendor: vendor.name)
async def running(request: pytest.FixtureRequest) -> AsyncIterator[Running]:
    vendor: Vendor = request.param
    stub = VendorStub(vendor.success)
    async with serve(stub) as url:
        provider = vendor.build(url)
        try:
            yield Running(vendor, stub, provider)
        finally:
            await provider.aclose()


def _assert_no_key(error: BaseException) -> None:
    text = "".join(traceback.format_exception(error)) + repr(error) + str(error)
    assert KEY not in text
    assert KEY[-10:] not in text


async def _failure(running: Running, *replies: Reply, timeout: float = 5.0) -> ProviderError:
    running.stub.script.extend(replies)
    with pytest.raises(ProviderError) as caught:
        await running.provider.complete(PROMPT, timeout=timeout)
    _assert_no_key(caught.value)
    return caught.value


async def test_success_with_tokens_and_the_vendor_request_shape(running: Running) -> None:
    completion = await running.provider.complete(PROMPT, timeout=5)
    assert completion.text == ANSWER
    assert (completion.input_tokens, completion.output_tokens) == running.vendor.tokens
    (request,) = running.stub.requests
    running.vendor.check_request(request)
    assert request.headers["content-type"] == "application/json"


async def test_one_pooled_connection_is_kept_alive(running: Running) -> None:
    for _ in range(3):
        await running.provider.complete(PROMPT, timeout=5)
    assert len(running.stub.requests) == 3
    assert len(running.stub.client_ports) == 1, "each call opened a new connection"


@pytest.mark.parametrize(("headers", "expected"), [({"retry-after": "7"}, 7.0), ({}, None)])
async def test_rate_limited_with_retry_after_seconds(
    running: Running, headers: dict[str, str], expected: float | None
) -> None:
    error = await _failure(running, Reply(429, {"error": {"type": "rate_limit_error"}}, headers))
    assert isinstance(error, ProviderRateLimited)
    assert error.retry_after == expected


async def test_rate_limited_with_retry_after_http_date(running: Running) -> None:
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    error = await _failure(running, Reply(429, {}, {"retry-after": date}))
    assert isinstance(error, ProviderRateLimited)
    assert error.retry_after is not None
    assert 28 <= error.retry_after <= 30


async def test_openai_retry_after_ms_is_preferred() -> None:
    stub = VendorStub(openai_success)
    async with serve(stub) as url:
        provider = OpenAICompatibleProvider(name="openai", model="m", base_url=url, api_key=KEY)
        stub.script.append(Reply(429, {}, {"retry-after-ms": "1500", "retry-after": "2"}))
        with pytest.raises(ProviderRateLimited) as caught:
            await provider.complete(PROMPT, timeout=5)
        await provider.aclose()
    assert caught.value.retry_after == 1.5


@pytest.mark.parametrize("status", [500, 502, 503, 529])
async def test_server_errors(running: Running, status: int) -> None:
    error = await _failure(running, Reply(status, {"error": {"type": "overloaded_error"}}))
    assert isinstance(error, ProviderServerError)
    assert error.status == status
    assert isinstance(error, RETRYABLE)


async def test_a_server_slower_than_the_timeout_is_a_timeout(running: Running) -> None:
    started = time.monotonic()
    error = await _failure(running, Reply(hang=True), timeout=0.3)
    elapsed = time.monotonic() - started
    assert isinstance(error, ProviderTimeout)
    assert error.error_type == "timeout"
    assert 0.3 <= elapsed < 1.0
    # The pool is still usable after a call was abandoned mid-flight.
    assert (await running.provider.complete(PROMPT, timeout=5)).text == ANSWER


@pytest.mark.parametrize("vendor", VENDORS, ids=lambda vendor: vendor.name)
async def test_connection_refused(vendor: Vendor) -> None:
    # Bound but not listening: the kernel refuses connections, and no other process can take the port meanwhile.
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        provider = vendor.build(f"http://127.0.0.1:{unused.getsockname()[1]}")
        try:
            with pytest.raises(ProviderConnectionError) as caught:
                await provider.complete(PROMPT, timeout=5)
        finally:
            await provider.aclose()
    _assert_no_key(caught.value)
    assert isinstance(caught.value, RETRYABLE)


@pytest.mark.parametrize("status", [400, 401, 403, 404])
async def test_client_errors_are_not_retryable(running: Running, status: int) -> None:
    # Vendors echo (part of) a wrong key in their messages: it must not reach our error text.
    body = {"error": {"type": "authentication_error", "message": f"Incorrect API key provided: {KEY}"}}
    error = await _failure(running, Reply(status, body))
    assert isinstance(error, ProviderRejected)
    assert (error.status, error.error_type) == (status, "provider_error")
    assert not isinstance(error, RETRYABLE)
    assert "authentication_error" in str(error)


async def test_the_retry_policy_gives_up_at_once_on_a_401(running: Running) -> None:
    running.stub.script.extend([Reply(401, {"error": {"message": KEY}})] * 3)
    policy = RetryPolicy(max_attempts=3, initial_backoff_seconds=0)
    with pytest.raises(GaveUp) as caught:
        await policy.run(lambda: running.provider.complete(PROMPT, timeout=5), deadline=None)
    assert (caught.value.reason, caught.value.attempts) == (StopReason.NOT_RETRYABLE, 1)
    assert len(running.stub.requests) == 1
    _assert_no_key(caught.value)


async def test_the_retry_policy_retries_a_503(running: Running) -> None:
    running.stub.script.append(Reply(503, {}))
    policy = RetryPolicy(max_attempts=3, initial_backoff_seconds=0)
    attempted = await policy.run(lambda: running.provider.complete(PROMPT, timeout=5), deadline=None)
    assert (attempted.value.text, attempted.attempts) == (ANSWER, 2)


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"\xff\xfe", b"[]", {"unexpected": True}, {"choices": [], "content": [], "candidates": []}],
    ids=["malformed", "not-utf8", "array", "missing-fields", "empty-lists"],
)
async def test_malformed_answers_are_not_retryable(running: Running, body: bytes | dict[str, Any]) -> None:
    error = await _failure(running, Reply(200, body))
    assert isinstance(error, ProviderBadResponse)
    assert error.error_type == "provider_error"
    assert not isinstance(error, RETRYABLE)


async def test_wrong_field_types_are_bad_responses(running: Running) -> None:
    wrong = {
        "openai": {"choices": [{"message": {"content": None}}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}},
        "anthropic": {"content": [{"type": "text", "text": "x"}], "usage": {"input_tokens": "1", "output_tokens": 1}},
        "google": {"candidates": [{"finishReason": "SAFETY"}], "usageMetadata": {"promptTokenCount": 1}},
    }[running.vendor.name]
    assert isinstance(await _failure(running, Reply(200, wrong)), ProviderBadResponse)


async def test_registry_builds_working_adapters_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    stubs = {name: VendorStub(success) for name, success in [("o", openai_success), ("a", anthropic_success)]}
    stubs["g"] = VendorStub(gemini_success)
    async with serve(stubs["o"]) as o_url, serve(stubs["a"]) as a_url, serve(stubs["g"]) as g_url:
        monkeypatch.setenv("TECHNO_LLM_ALLOWED_PROVIDERS", "deepseek,anthropic,google")
        monkeypatch.setenv("TECHNO_LLM_DEEPSEEK_BASE_URL", f"{o_url}/v1/")
        monkeypatch.setenv("TECHNO_LLM_ANTHROPIC_BASE_URL", a_url)
        monkeypatch.setenv("TECHNO_LLM_GOOGLE_BASE_URL", g_url)
        for variable in ("DEEPSEEK_API_KEY", "ANTHROPIC_API_KEY", "GOOGLE_API_KEY"):
            monkeypatch.setenv(variable, KEY)
        providers = build_providers(ProviderSettings(), fake=_Unused())
        try:
            answers = await asyncio.gather(*(p.complete(PROMPT, timeout=5) for p in providers.values()))
        finally:
            await close_providers(providers)
    assert list(providers) == ["deepseek", "anthropic", "google"]
    assert [a.text for a in answers] == [ANSWER] * 3
    assert stubs["o"].requests[0].path == "/v1/chat/completions"
    assert stubs["o"].requests[0].body["model"] == "deepseek-chat"


class _Unused:
    name = "fake"
    model = "fake"

    async def complete(self, prompt: str, *, timeout: float) -> Any:
        raise AssertionError("not allowlisted")
