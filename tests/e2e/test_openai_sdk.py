"""The official OpenAI Python SDK against the real stack (mutual TLS inside), pointed at the edge by base_url:
models, a completion, a streamed one, its refusals, and the audit trail every one of them leaves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio
from openai.types.chat import ChatCompletionFunctionToolParam, ChatCompletionMessageParam

from techno_stack.stack import Stack

from .conftest import RunningStack
from .support import eventually, started_stack

pytestmark = pytest.mark.asyncio(loop_scope="session")

HELLO: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Tell me about governed AI."},
]


def sdk(running_stack: RunningStack, key: str | None = None) -> openai.OpenAI:
    # No retries: a refusal must reach the test as it was answered, once.
    return openai.OpenAI(base_url=f"{running_stack.url}/v1", api_key=key or running_stack.key, max_retries=0)


async def audit_events(client: httpx.AsyncClient, key: str, trace_id: str) -> list[dict[str, Any]]:
    page = await client.get("/v1/audit/events", params={"traceId": trace_id}, headers={"X-API-Key": key})
    assert page.status_code == 200, page.text
    events: list[dict[str, Any]] = page.json()["events"]
    return events


async def audit_kinds(client: httpx.AsyncClient, running_stack: RunningStack, trace_id: str) -> list[str]:
    return [event["kind"] for event in await audit_events(client, running_stack.key, trace_id)]


async def assert_audited(client: httpx.AsyncClient, running_stack: RunningStack, completion_id: str) -> None:
    trace_id = completion_id.removeprefix("chatcmpl-")

    async def decided_and_done() -> bool:  # a stream's OUTCOME is recorded as it ends, maybe after [DONE]
        return await audit_kinds(client, running_stack, trace_id) == ["DECISION", "OUTCOME"]

    await eventually(decided_and_done)


async def test_models_are_the_providers_the_profile_allows(running_stack: RunningStack) -> None:
    models = await asyncio.to_thread(lambda: list(sdk(running_stack).models.list()))
    assert [model.id for model in models] == ["fake"]  # the e2e default profile: providers [fake]
    assert {model.owned_by for model in models} == {"techno"}
    fake = await asyncio.to_thread(lambda: sdk(running_stack).models.retrieve("fake"))
    assert (fake.id, fake.owned_by) == ("fake", "techno")
    with pytest.raises(openai.NotFoundError) as refused:  # a provider the profile does not allow is not a model
        await asyncio.to_thread(lambda: sdk(running_stack).models.retrieve("openai"))
    assert refused.value.code == "model_not_found"


async def test_a_completion_is_governed_and_audited(client: httpx.AsyncClient, running_stack: RunningStack) -> None:
    def create() -> Any:
        return sdk(running_stack).chat.completions.with_raw_response.create(model="fake", messages=HELLO)

    raw = await asyncio.to_thread(create)
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.model == "fake"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    assert raw.headers["x-trace-id"] == completion.id.removeprefix("chatcmpl-")
    await assert_audited(client, running_stack, completion.id)


async def test_a_stream_arrives_in_chunks_that_add_up(client: httpx.AsyncClient, running_stack: RunningStack) -> None:
    def stream() -> list[Any]:
        chunks = sdk(running_stack).chat.completions.create(
            model="fake", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
        return list(chunks)

    chunks = await asyncio.to_thread(stream)
    *with_choices, usage_chunk = chunks
    texts = [chunk.choices[0].delta.content for chunk in with_choices if chunk.choices[0].delta.content]
    assert len(texts) > 1, "the answer arrived in one piece"
    assert with_choices[0].choices[0].delta.role == "assistant"
    assert with_choices[-1].choices[0].finish_reason == "stop"
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens > 0
    assert len({chunk.id for chunk in chunks}) == 1

    # The same request unstreamed gives the same reply (the fake provider answers deterministically).
    whole = await asyncio.to_thread(lambda: sdk(running_stack).chat.completions.create(model="fake", messages=HELLO))
    assert "".join(texts) == whole.choices[0].message.content
    await assert_audited(client, running_stack, chunks[0].id)


async def test_a_model_the_profile_does_not_allow_is_refused_with_its_reason(running_stack: RunningStack) -> None:
    def create(**extra: Any) -> Any:
        return sdk(running_stack).chat.completions.create(model="openai", messages=HELLO, **extra)

    for stream in (False, True):
        with pytest.raises(openai.PermissionDeniedError) as refused:
            await asyncio.to_thread(create, stream=stream)
        assert refused.value.status_code == 403
        assert refused.value.code == "PROVIDER_NOT_ALLOWED"
        assert refused.value.response.headers["x-trace-id"]


async def test_a_bad_key_is_an_authentication_error(running_stack: RunningStack) -> None:
    client = sdk(running_stack, key="tk_not-a-real-key")
    with pytest.raises(openai.AuthenticationError) as refused:
        await asyncio.to_thread(lambda: client.chat.completions.create(model="fake", messages=HELLO))
    assert refused.value.code == "invalid_api_key"
    assert isinstance(refused.value.body, dict)
    assert refused.value.body["reason_codes"] in (["API_KEY_INVALID"], ["TOKEN_INVALID"])
    with pytest.raises(openai.AuthenticationError):
        await asyncio.to_thread(lambda: list(client.models.list()))


async def test_what_the_chat_action_cannot_do_is_a_bad_request(running_stack: RunningStack) -> None:
    tool: ChatCompletionFunctionToolParam = {
        "type": "function",
        "function": {"name": "lookup", "parameters": {"type": "object"}},
    }
    with pytest.raises(openai.BadRequestError) as refused:
        await asyncio.to_thread(
            lambda: sdk(running_stack).chat.completions.create(model="fake", messages=HELLO, tools=[tool])
        )
    assert refused.value.param == "tools"


async def test_an_idempotency_key_answers_a_repeat_with_the_first_completion(running_stack: RunningStack) -> None:
    def create() -> Any:
        return sdk(running_stack).chat.completions.create(
            model="fake", messages=HELLO, extra_headers={"Idempotency-Key": "openai-sdk-e2e-1"}
        )

    first, again = await asyncio.to_thread(create), await asyncio.to_thread(create)
    assert again.id == first.id  # the stored response's trace: the request ran once
    assert again.choices[0].message.content == first.choices[0].message.content


async def test_a_repeated_stream_with_its_idempotency_key_replays_the_same_answer(running_stack: RunningStack) -> None:
    def stream() -> tuple[set[str], str]:
        chunks = list(
            sdk(running_stack).chat.completions.create(
                model="fake", messages=HELLO, stream=True, extra_headers={"Idempotency-Key": "openai-sdk-e2e-stream"}
            )
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
        return {chunk.id for chunk in chunks}, text

    (first_ids, first_text), (again_ids, again_text) = await asyncio.to_thread(stream), await asyncio.to_thread(stream)
    assert again_text == first_text
    assert first_text
    assert again_ids == first_ids  # the first run's trace: it ran once


async def test_the_routes_are_traced_and_counted_like_every_other(
    client: httpx.AsyncClient, running_stack: RunningStack
) -> None:
    def stream() -> str:
        chunks = sdk(running_stack).chat.completions.create(model="fake", messages=HELLO, stream=True)
        [only] = {chunk.id for chunk in chunks}  # read to the end: the request is then counted, as answered
        return only

    trace_id = (await asyncio.to_thread(stream)).removeprefix("chatcmpl-")

    async def traced_through_the_stack() -> bool:
        return running_stack.receiver.services_in_trace(trace_id) >= {"edge", "gate", "executor"}

    await eventually(traced_through_the_stack)
    edge_spans = {s.name for s in running_stack.receiver.spans if s.trace_id == trace_id and s.service == "edge"}
    assert "POST /v1/chat/completions" in edge_spans

    async def counted() -> bool:  # counted once the answer's last byte is sent, which the client saw first
        metrics = (await client.get("/metrics")).text
        return 'http_requests_total{method="POST",route="/v1/chat/completions",status="200"}' in metrics

    await eventually(counted)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def slow_stream_stack(
    create_postgres_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    """A stack whose fake provider streams 4 characters every 0.2 s and fails every stream after 3 pieces, and
    whose edge sends a keep-alive comment whenever the gate is quiet for 0.05 s (between every two pieces)."""
    env = {
        "TECHNO_EDGE_STREAM_KEEPALIVE_SECONDS": "0.05",
        "TECHNO_FAKE_STREAM_CHUNK_CHARS": "4",
        "TECHNO_FAKE_STREAM_CHUNK_DELAY_MS": "200",
        "TECHNO_FAKE_STREAM_FAULT_AFTER_CHUNKS": "3",
        "TECHNO_FAKE_ERROR_RATE": "1",
    }
    async with started_stack(tmp_path_factory.mktemp("openai-slow"), create_postgres_database(), env=env) as stack:
        yield stack


def slow_sdk(stack: Stack) -> tuple[openai.OpenAI, str]:
    key = Path(stack.config.key_file).read_text().strip()
    return openai.OpenAI(base_url=f"{stack.edge_url}/v1", api_key=key, max_retries=0), key


async def outcome_of(stack: Stack, key: str, trace_id: str) -> str | None:
    async with httpx.AsyncClient(base_url=stack.edge_url, timeout=10) as client:
        events = await audit_events(client, key, trace_id)
    return next((event["result"] for event in events if event["kind"] == "OUTCOME"), None)


async def test_closing_a_stream_cancels_the_call_and_the_audit_says_so(slow_stream_stack: Stack) -> None:
    client, key = slow_sdk(slow_stream_stack)

    def read_one_piece_and_leave() -> str:
        with client.chat.completions.create(model="fake", messages=HELLO, stream=True) as chunks:
            for chunk in chunks:
                if chunk.choices and chunk.choices[0].delta.content:
                    return chunk.id.removeprefix("chatcmpl-")  # leaving the block closes the connection
        raise AssertionError("the stream ended before its first piece")

    trace_id = await asyncio.to_thread(read_one_piece_and_leave)

    async def cancelled() -> bool:
        return await outcome_of(slow_stream_stack, key, trace_id) == "CANCELLED"

    await eventually(cancelled)


async def test_a_failure_mid_stream_reaches_the_sdk_as_an_api_error(slow_stream_stack: Stack) -> None:
    client, key = slow_sdk(slow_stream_stack)
    pieces: list[str] = []

    def read_until_it_fails() -> None:
        pieces.extend(chunk.id for chunk in client.chat.completions.create(model="fake", messages=HELLO, stream=True))

    with pytest.raises(openai.APIError) as failed:
        await asyncio.to_thread(read_until_it_fails)
    assert len(pieces) > 1  # the role and at least one piece came before the failure (keep-alives between them)
    assert isinstance(failed.value.body, dict)
    assert failed.value.body["type"] == "api_error"
    assert failed.value.body["reason_codes"]
    trace_id = pieces[0].removeprefix("chatcmpl-")

    async def failed_outcome() -> bool:
        return await outcome_of(slow_stream_stack, key, trace_id) == "FAILED"

    await eventually(failed_outcome)


async def test_keep_alive_comments_are_on_the_wire_and_the_sdk_skips_them(slow_stream_stack: Stack) -> None:
    client, key = slow_sdk(slow_stream_stack)
    request = {"model": "fake", "messages": HELLO, "stream": True}
    async with (
        httpx.AsyncClient(base_url=slow_stream_stack.edge_url, timeout=30) as raw,
        raw.stream("POST", "/v1/chat/completions", json=request, headers={"Authorization": f"Bearer {key}"}) as sent,
    ):
        lines = [line async for line in sent.aiter_lines() if line]
    assert ": keep-alive" in lines
    assert [line for line in lines if line != ": keep-alive" and not line.startswith("data: ")] == []

    def read_what_the_sdk_sees() -> list[Any]:
        chunks: list[Any] = []
        with pytest.raises(openai.APIError):  # this stack fails every stream after its third piece
            chunks.extend(client.chat.completions.create(model="fake", messages=HELLO, stream=True))
        return chunks

    chunks = await asyncio.to_thread(read_what_the_sdk_sees)
    assert len(chunks) > 1  # the role, then pieces: the comments between them were no chunks, nor errors
    assert {chunk.object for chunk in chunks} == {"chat.completion.chunk"}
    assert all(chunk.choices[0].delta.content for chunk in chunks[1:])
