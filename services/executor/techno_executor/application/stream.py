"""The StreamExecute use case: an execution whose answer is relayed piece by piece as the provider writes it.

Everything up to the first piece is ``ExecuteAction``'s: validation, the provider chain with its fallback, the
caller's context, and per provider the circuit breaker, the retry policy and the provider timeout (here: the wait
for the first piece). Opening a stream that fails before its first piece is an attempt like any other: retried,
counted by the breaker, then the next provider.

After the first piece nothing is retried or re-routed: the caller already holds part of an answer, and a second
provider's answer would not continue it. A failure then (a vendor error event, a broken connection, no next
piece within the provider timeout) ends the stream with its error status, ``PROVIDER_UNAVAILABLE`` or
``PROVIDER_TIMEOUT``, and is a failure for the breaker. The whole answer is validated at the end as Execute
validates it (a JSON action's answer is parsed then), failing with ``PROVIDER_OUTPUT_INVALID`` without asking
again: the caller has seen the text. A completed conversational stream is remembered in the session.

The breaker's verdict waits for the end of the stream (its permit is held meanwhile, so a half-open breaker lets
no second probe in); its slow-call clock is the time to the first piece. A caller who cancels (or whose deadline
passes) closes the provider's stream, which closes the vendor's HTTP call, and gives the breaker no verdict.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable
from contextlib import aclosing
from dataclasses import dataclass

from techno_core.errors import DeadlineExceeded, DomainError, Unavailable
from techno_executor.application.execute import (
    ExecuteAction,
    ExecuteCommand,
    Execution,
    Governed,
    NextProvider,
    Prepared,
    Progress,
    ProviderRoute,
    no_provider_answered,
)
from techno_executor.domain.actions import ActionOutputInvalid
from techno_executor.domain.breaker import CircuitOpenError
from techno_executor.domain.provider import (
    Completion,
    Provider,
    ProviderError,
    ProviderServerError,
    ProviderTimeout,
    StreamEvent,
    Usage,
)

# What the use case yields: the text pieces, then the finished ``Execution``.
StreamOutput = str | Execution


@dataclass(frozen=True)
class _Opened:
    """A provider stream that has produced its first event."""

    events: AsyncGenerator[StreamEvent, None]
    first: StreamEvent


@dataclass
class _Run:
    """One streamed execution's bookkeeping."""

    command: ExecuteCommand
    started: float
    deadline: float | None
    progress: Progress
    opened_at: float | None = None
    # Whether the caller's deadline, not the provider timeout, bounded the last read.
    read_cut_by_deadline: bool = False


class StreamAction:
    def __init__(self, execute: ExecuteAction) -> None:
        self._execute = execute
        self._clock = execute.clock
        self._observer = execute.observer

    async def stream(self, command: ExecuteCommand, *, timeout: float | None) -> AsyncGenerator[StreamOutput, None]:
        """The answer's pieces, then the ``Execution``, within ``timeout`` seconds (None: no deadline)."""
        self._observer.call_received()
        started = self._clock()
        run = _Run(command, started, None if timeout is None else started + timeout, Progress())
        result = "cancelled"  # unless it completes or fails: the caller went away (GeneratorExit, cancellation)
        try:
            # aclosing at every level: a generator left by ``async for`` is only closed when the garbage
            # collector finalises it, and the provider's HTTP call must end when the caller goes away.
            async with aclosing(self._run(run)) as outputs:
                async for output in outputs:
                    yield output
            result = "completed"
        except Exception:
            result = "failed"
            raise
        finally:
            self._finished(run, result)

    def _finished(self, run: _Run, result: str) -> None:
        progress = run.progress
        self._execute.report(progress, succeeded=result == "completed")
        if progress.provider is not None and progress.model is not None:
            self._observer.stream_finished(progress.provider, progress.model, self._clock() - run.started, result)

    async def _run(self, run: _Run) -> AsyncGenerator[StreamOutput, None]:
        prepared = await self._execute.prepare(run.command, run.deadline)
        rejected: list[CircuitOpenError] = []
        last_error: DomainError | None = None
        for route in prepared.chain:
            if last_error is not None and run.deadline is not None and run.deadline <= self._clock():
                break  # no time left to fall back
            provider = route.provider

            def call(timeout: float, provider: Provider = provider) -> Awaitable[_Opened]:
                return self._open(provider, prepared.prompt, timeout, run)

            try:
                governed = await self._execute.governed(route, call, run.deadline, run.progress)
            except CircuitOpenError as refusal:
                rejected.append(refusal)
                continue
            except NextProvider as skipped:
                last_error = skipped.error
                continue
            async with aclosing(self._relay(route, governed, prepared, run)) as outputs:
                async for output in outputs:
                    yield output
            return
        raise no_provider_answered(rejected, last_error)

    async def _open(self, provider: Provider, prompt: str, timeout: float, run: _Run) -> _Opened:
        """One attempt: start the provider's stream and wait up to ``timeout`` for its first event."""
        events = _events(provider, prompt, timeout)
        try:
            first = await self._execute.bounded_call(provider, timeout, lambda: _first(events, provider))
        except ProviderError:
            await events.aclose()
            raise
        run.opened_at = self._clock()
        self._observer.first_chunk(provider.name, provider.model, run.opened_at - run.started)
        return _Opened(events, first)

    async def _relay(
        self, route: ProviderRoute, governed: Governed[_Opened], prepared: Prepared, run: _Run
    ) -> AsyncGenerator[StreamOutput, None]:
        """Pass the opened stream on to the end, then validate, give the breaker its verdict, remember the turn
        and yield the ``Execution``."""
        provider, breaker, permit = route.provider, route.breaker, governed.permit
        pieces: list[str] = []
        try:
            async with aclosing(governed.value.events) as events:
                event = governed.value.first
                while not isinstance(event, Usage):
                    pieces.append(event)
                    yield event
                    event = await self._next(events, provider, run)
        except ProviderError as error:
            cut_by_deadline = isinstance(error, ProviderTimeout) and run.read_cut_by_deadline
            if cut_by_deadline:
                breaker.release(permit)
            else:
                breaker.record_failure(permit, seconds=governed.seconds)
            run.progress.breaker_state = breaker.state
            raise _mid_stream(error, provider.name, len(pieces), cut_by_deadline) from error
        except BaseException:  # the caller went away: no verdict on the provider
            breaker.release(permit)
            raise
        breaker.record_success(permit, seconds=governed.seconds)
        run.progress.breaker_state = breaker.state
        text = "".join(pieces)
        completion = run.progress.completion = Completion(text, event.input_tokens, event.output_tokens)
        try:
            result = prepared.action.parse(text, prepared.inputs)
        except ActionOutputInvalid as error:
            raise Unavailable(
                reason="PROVIDER_OUTPUT_INVALID",
                message=f"provider {provider.name} streamed no valid answer: {error}",
                metadata={"provider": provider.name, "action": prepared.action.name},
            ) from error
        await self._execute.remember(run.command, prepared, result)
        yield Execution(
            result=result,
            provider=provider.name,
            model=provider.model,
            input_tokens=completion.input_tokens,
            output_tokens=completion.output_tokens,
            execution_time_ms=round((self._clock() - run.started) * 1000),
            attempts=run.progress.attempts,
        )

    async def _next(self, events: AsyncGenerator[StreamEvent, None], provider: Provider, run: _Run) -> StreamEvent:
        """The next event, within the provider timeout (or what is left of the deadline)."""
        timeout, run.read_cut_by_deadline = self._execute.attempt_timeout(run.deadline)
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                return await anext(events)
        except StopAsyncIteration as error:
            raise ProviderServerError(f"{provider.name} ended its stream without its usage") from error
        except TimeoutError as error:
            raise ProviderTimeout(f"{provider.name} sent nothing more for {timeout:.3f}s") from error


async def _first(events: AsyncGenerator[StreamEvent, None], provider: Provider) -> StreamEvent:
    try:
        return await anext(events)
    except StopAsyncIteration as error:
        raise ProviderServerError(f"{provider.name} ended its stream before answering") from error


def _events(provider: Provider, prompt: str, timeout: float) -> AsyncGenerator[StreamEvent, None]:
    """The provider's stream; a provider that cannot stream answers in one piece."""
    stream = getattr(provider, "stream", None)
    if stream is not None:
        events: AsyncGenerator[StreamEvent, None] = stream(prompt, timeout=timeout)
        return events
    return _whole(provider, prompt, timeout)


async def _whole(provider: Provider, prompt: str, timeout: float) -> AsyncGenerator[StreamEvent, None]:
    completion = await provider.complete(prompt, timeout=timeout)
    yield completion.text
    yield Usage(completion.input_tokens, completion.output_tokens)


def _mid_stream(error: ProviderError, provider: str, pieces: int, cut_by_deadline: bool) -> DomainError:
    metadata = {"provider": provider, "chunks": str(pieces)}
    if isinstance(error, ProviderTimeout):
        reason = "DEADLINE_EXCEEDED" if cut_by_deadline else "PROVIDER_TIMEOUT"
        return DeadlineExceeded(
            reason=reason, message=f"provider {provider} stopped answering mid-stream", metadata=metadata
        )
    return Unavailable(
        reason="PROVIDER_UNAVAILABLE",
        message=f"provider {provider} failed mid-stream after {pieces} piece(s): {error}",
        metadata=metadata,
    )
