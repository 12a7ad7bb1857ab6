"""StreamExecute and ListProviders on a real executor (gRPC with mutual TLS on loopback): the fake provider's
pieces and faults, and real HTTP vendors (``streaming_vendor``) for retries before the first piece and for a
cancelled caller that must close the vendor's HTTP call."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from techno.executor.v1 import executor_pb2, executor_pb2_grpc
from techno_core.identity import Identity
from techno_core.server import GrpcApp
from techno_executor.adapters.fake_provider import FakeProvider
from techno_executor.domain.faults import FaultProfile, FaultSwitch, StreamShape
from techno_executor.domain.provider import Completion, StreamEvent
from tests.integration.executor.conftest import AppFactory
from tests.integration.executor.scripted_vendor import serve
from tests.integration.executor.streaming_vendor import EVENTS, Stream, StreamingVendor
from tests.integration.executor.test_executor_service import PAYLOADS, reason_of
from tests.integration.executor.test_resilience_over_http import KEY
from tests.tls import connect
from tests.waiting import eventually

STREAMED = ("chat", "summarize", "analyze_document")


def request(action: str, payload: dict[str, Any]) -> executor_pb2.StreamExecuteRequest:
    inner = executor_pb2.ExecuteRequest(action=action, context_id="ctx", profile="default")
    json_format.ParseDict(payload, inner.payload)
    return executor_pb2.StreamExecuteRequest(request=inner)


async def stream(
    app: GrpcApp, action: str, payload: dict[str, Any], received: list[executor_pb2.StreamExecuteResponse]
) -> None:
    """Every message of the stream into ``received`` (kept when the stream then fails)."""
    async with connect(app.address, identity=Identity.GATE, server=Identity.EXECUTOR) as channel:
        call = executor_pb2_grpc.ExecutorServiceStub(channel).StreamExecute(request(action, payload), timeout=10)
        async for message in call:
            received.append(message)  # noqa: PERF401 - one by one: a failing stream keeps what came first


async def stream_failure(
    app: GrpcApp, action: str, payload: dict[str, Any], received: list[executor_pb2.StreamExecuteResponse]
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stream(app, action, payload, received)
    return raised.value


def chunks(received: list[executor_pb2.StreamExecuteResponse]) -> list[str]:
    return [message.chunk.text for message in received if message.WhichOneof("event") == "chunk"]


def sample(app: GrpcApp, name: str, **labels: str) -> float:
    return app.registry.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("action", STREAMED)
async def test_streams_pieces_then_done_with_the_result_and_usage(start_app: AppFactory, action: str) -> None:
    app = await start_app(fake_stream_chunk_chars=4)
    received: list[executor_pb2.StreamExecuteResponse] = []
    await stream(app, action, PAYLOADS[action], received)

    *pieces, last = received
    assert len(pieces) > 1
    assert all(message.WhichOneof("event") == "chunk" for message in pieces)
    assert last.WhichOneof("event") == "done"
    done = last.done
    text = "".join(chunks(received))
    result = json_format.MessageToDict(done.result)
    if action == "analyze_document":
        assert set(result) == {"summary", "key_points"}
        assert result["summary"] in text
    else:
        assert list(result.values()) == [text.strip()]
    assert (done.provider, done.model, done.executor_id, done.attempts) == ("fake", "fake-echo-1", "executor-test", 1)
    assert done.usage.input_tokens > 0
    assert done.usage.output_tokens > 0
    assert sample(app, "llm_time_to_first_token_seconds_count", provider="fake", model="fake-echo-1") == 1
    assert sample(app, "llm_streams_total", provider="fake", model="fake-echo-1", result="completed") == 1
    assert sample(app, "llm_tokens_total", provider="fake", model="fake-echo-1", type="output") > 0


async def test_list_providers_names_each_configured_provider_with_its_model(start_app: AppFactory) -> None:
    app = await start_app()
    async with connect(app.address, identity=Identity.GATE, server=Identity.EXECUTOR) as channel:
        listed = await executor_pb2_grpc.ExecutorServiceStub(channel).ListProviders(
            executor_pb2.ListProvidersRequest(), timeout=5
        )
    assert [(p.name, p.model) for p in listed.providers] == [("fake", "fake-echo-1")]


async def test_only_the_gate_may_stream(start_app: AppFactory) -> None:
    app = await start_app()
    async with connect(app.address, identity=Identity.EDGE, server=Identity.EXECUTOR) as channel:
        call = executor_pb2_grpc.ExecutorServiceStub(channel).StreamExecute(
            request("summarize", PAYLOADS["summarize"]), timeout=5
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await anext(aiter(call))
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_bad_input_ends_the_stream_with_its_reason_before_any_piece(start_app: AppFactory) -> None:
    app = await start_app()
    received: list[executor_pb2.StreamExecuteResponse] = []
    error = await stream_failure(app, "translate", {"text": "hola"}, received)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(error) == "ACTION_UNKNOWN"
    assert received == []


async def test_a_fault_mid_stream_ends_it_unavailable_is_not_retried_and_counts_for_the_breaker(
    start_app: AppFactory,
) -> None:
    fake = FakeProvider(
        faults=FaultSwitch(FaultProfile(error_rate=1.0)), stream_shape=StreamShape(chunk_chars=2, fault_after_chunks=3)
    )
    app = await start_app(providers=[fake])
    received: list[executor_pb2.StreamExecuteResponse] = []
    error = await stream_failure(app, "summarize", PAYLOADS["summarize"], received)

    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert reason_of(error) == "PROVIDER_UNAVAILABLE"
    assert chunks(received) == ["Th", "e ", "ca"]
    assert fake.calls == 1  # the caller holds part of an answer: never asked again
    async with connect(app.address, identity=Identity.GATE, server=Identity.EXECUTOR) as channel:
        breakers = await executor_pb2_grpc.ExecutorAdminServiceStub(channel).ListBreakers(
            executor_pb2.ListBreakersRequest(), timeout=5
        )
    assert [b.consecutive_failures for b in breakers.breakers] == [1]
    assert sample(app, "llm_streams_total", provider="fake", model="fake-echo-1", result="failed") == 1


async def test_a_fault_before_the_first_piece_is_retried_like_execute(start_app: AppFactory) -> None:
    app = await start_app(fake_error_rate=1.0, executor_retry_max_attempts=3)
    fake_errors = await stream_failure(app, "summarize", PAYLOADS["summarize"], [])
    assert reason_of(fake_errors) == "PROVIDER_UNAVAILABLE"
    assert "3 attempt(s)" in (fake_errors.details() or "")


async def test_a_cancelled_caller_stops_the_fake_provider(start_app: AppFactory) -> None:
    fake = FakeProvider(stream_shape=StreamShape(chunk_chars=1, chunk_delay_ms=20))
    app = await start_app(providers=[fake])
    async with connect(app.address, identity=Identity.GATE, server=Identity.EXECUTOR) as channel:
        call = executor_pb2_grpc.ExecutorServiceStub(channel).StreamExecute(
            request("summarize", PAYLOADS["summarize"]), timeout=10
        )
        first = await anext(aiter(call))
        assert first.chunk.text == "T"
        assert fake.streams_open == 1
        call.cancel()
        await eventually(lambda: fake.streams_open == 0)
    generated = fake.chunks_generated
    assert generated < len("The cat sat on the mat.")  # it stopped before the end of the answer
    await eventually(
        lambda: sample(app, "llm_streams_total", provider="fake", model="fake-echo-1", result="cancelled") == 1
    )
    assert fake.chunks_generated == generated


@pytest.fixture
async def vendor() -> AsyncIterator[tuple[StreamingVendor, str]]:
    stand_in = StreamingVendor("openai", ("Le chat", " dort", "."))
    async with serve([stand_in]) as urls:
        yield stand_in, urls["openai"]


def openai_settings(url: str) -> dict[str, Any]:
    return {
        "llm_allowed_providers": "openai",
        "llm_openai_base_url": f"{url}/v1",
        "llm_openai_model": "gpt-test",
        "OPENAI_API_KEY": KEY,
    }


async def test_a_vendor_failing_before_the_stream_is_retried_then_streams(
    start_app: AppFactory, vendor: tuple[StreamingVendor, str]
) -> None:
    stand_in, url = vendor
    stand_in.queue_streams(Stream(status=503))
    app = await start_app(**openai_settings(url))
    received: list[executor_pb2.StreamExecuteResponse] = []
    await stream(app, "summarize", PAYLOADS["summarize"], received)
    assert chunks(received) == ["Le chat", " dort", "."]
    assert received[-1].done.attempts == 2
    assert json_format.MessageToDict(received[-1].done.result) == {"summary": "Le chat dort."}
    assert (received[-1].done.usage.input_tokens, received[-1].done.usage.output_tokens) == (11, 3)
    assert len(stand_in.calls) == 2


async def test_a_cancelled_caller_closes_the_vendors_http_call(
    start_app: AppFactory, vendor: tuple[StreamingVendor, str]
) -> None:
    stand_in, url = vendor
    events = EVENTS["openai"](["Le chat", " dort", "."])
    stand_in.queue_streams(Stream(events, hang_after=2))  # role event, first piece, then holds the answer open
    app = await start_app(**openai_settings(url))
    async with connect(app.address, identity=Identity.GATE, server=Identity.EXECUTOR) as channel:
        call = executor_pb2_grpc.ExecutorServiceStub(channel).StreamExecute(
            request("summarize", PAYLOADS["summarize"]), timeout=10
        )
        assert (await anext(aiter(call))).chunk.text == "Le chat"
        call.cancel()
        await stand_in.wait_for_hang_up(0)
    await eventually(
        lambda: sample(app, "llm_streams_total", provider="openai", model="gpt-test", result="cancelled") == 1
    )


async def test_invalid_json_streamed_for_a_json_action_is_provider_output_invalid(
    start_app: AppFactory, vendor: tuple[StreamingVendor, str]
) -> None:
    stand_in, url = vendor
    app = await start_app(**openai_settings(url))
    received: list[executor_pb2.StreamExecuteResponse] = []
    error = await stream_failure(app, "analyze_document", PAYLOADS["analyze_document"], received)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert reason_of(error) == "PROVIDER_OUTPUT_INVALID"
    assert chunks(received) == ["Le chat", " dort", "."]  # the text was streamed as it came
    assert len(stand_in.calls) == 1  # and not asked for again


async def test_a_hang_mid_stream_ends_with_provider_timeout(
    start_app: AppFactory, vendor: tuple[StreamingVendor, str]
) -> None:
    stand_in, url = vendor
    stand_in.queue_streams(Stream(EVENTS["openai"](["Le chat", " dort"]), hang_after=2))
    app = await start_app(**openai_settings(url), executor_provider_timeout_seconds=0.3)
    received: list[executor_pb2.StreamExecuteResponse] = []
    error = await stream_failure(app, "summarize", PAYLOADS["summarize"], received)
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert reason_of(error) == "PROVIDER_TIMEOUT"
    assert chunks(received) == ["Le chat"]
    await stand_in.wait_for_hang_up(0)  # the executor hung up on the silent vendor


class CrashingProvider:
    """Streams one piece, then fails with a bug (not a ProviderError) whose text must not reach the caller."""

    name = "crashing"
    model = "crashing-1"

    async def complete(self, prompt: str, *, timeout: float) -> Completion:
        raise AssertionError("not called by streams")

    async def stream(self, prompt: str, *, timeout: float) -> AsyncGenerator[StreamEvent, None]:
        yield "A "
        raise RuntimeError("bug reading /srv/secret/config")


async def test_a_crash_mid_stream_is_internal_with_a_generic_message(start_app: AppFactory) -> None:
    app = await start_app(providers=[CrashingProvider()])
    received: list[executor_pb2.StreamExecuteResponse] = []
    error = await stream_failure(app, "summarize", PAYLOADS["summarize"], received)
    assert error.code() == grpc.StatusCode.INTERNAL
    assert reason_of(error) == "INTERNAL"
    assert "secret" not in (error.details() or "")
    assert "trace id" in (error.details() or "")
    assert chunks(received) == ["A "]


async def test_an_undecodable_stream_request_is_invalid_argument(start_app: AppFactory) -> None:
    app = await start_app()
    async with connect(app.address, identity=Identity.GATE, server=Identity.EXECUTOR) as channel:
        # Field 1 (request) announced as 50 bytes long, with 1 byte: protobuf refuses it.
        method = channel.unary_stream("/techno.executor.v1.ExecutorService/StreamExecute", None, None)
        call = method(b"\x0a\x32\x01", timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await anext(aiter(call))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(raised.value) == "INVALID_ARGUMENT"
