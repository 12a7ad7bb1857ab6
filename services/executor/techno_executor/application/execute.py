"""The ExecuteAction use case: validate, ask the circuit breaker, call the provider under the retry policy and
the deadline, parse the answer.

Order matters: the payload is validated before anything else, so bad input never costs a provider call nor
counts against the provider's breaker; the breaker is asked once per execution (not per attempt), so one
execution that spends all its retries is one failure, and ``cb_threshold`` counts failed executions.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from techno_core.errors import DeadlineExceeded, DomainError, Unavailable
from techno_executor.application.ports import ExecutionObserver
from techno_executor.domain.actions import ActionCatalogue, ActionOutputInvalid
from techno_executor.domain.breaker import CircuitBreaker, CircuitOpenError, CircuitState
from techno_executor.domain.provider import Completion, Provider, ProviderError, ProviderRateLimited, ProviderTimeout
from techno_executor.domain.retry import GaveUp, RetryPolicy, StopReason


@dataclass(frozen=True)
class ExecuteCommand:
    action: str
    payload: Mapping[str, Any]
    context_id: str = ""
    session_id: str = ""
    profile: str = ""  # will select the provider chain; one provider serves every profile for now


@dataclass(frozen=True)
class Execution:
    result: dict[str, Any]
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    execution_time_ms: int
    attempts: int


@dataclass(frozen=True)
class ProviderRoute:
    """A provider with its own breaker. Fallback chains will be an ordered list of these, per profile."""

    provider: Provider
    breaker: CircuitBreaker


@dataclass
class _Progress:
    """What is known so far about one execution, reported to the observer however it ends."""

    provider: str | None = None
    model: str | None = None
    attempts: int = 0
    completion: Completion | None = None
    breaker_state: CircuitState | None = None


class ExecuteAction:
    def __init__(
        self,
        *,
        catalogue: ActionCatalogue,
        route: ProviderRoute,
        retry: RetryPolicy,
        observer: ExecutionObserver,
        provider_timeout_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._catalogue = catalogue
        self._route = route
        self._retry = retry
        self._observer = observer
        self._provider_timeout = provider_timeout_seconds
        self._clock = clock

    async def execute(self, command: ExecuteCommand, *, timeout: float | None) -> Execution:
        """Run ``command`` within ``timeout`` seconds (None: no deadline, only the provider timeout)."""
        self._observer.call_received()
        started = self._clock()
        progress = _Progress()
        succeeded = False
        try:
            execution = await self._execute(command, started, None if timeout is None else started + timeout, progress)
            succeeded = True
            return execution
        finally:
            completion = progress.completion
            self._observer.execution_finished(
                succeeded=succeeded,
                provider=progress.provider,
                model=progress.model,
                attempts=progress.attempts,
                input_tokens=completion.input_tokens if completion else 0,
                output_tokens=completion.output_tokens if completion else 0,
                breaker_state=progress.breaker_state,
            )

    async def _execute(
        self, command: ExecuteCommand, started: float, deadline: float | None, progress: _Progress
    ) -> Execution:
        action = self._catalogue.get(command.action)
        inputs = action.validate(command.payload)
        prompt = action.prompt(inputs)
        provider, breaker = self._route.provider, self._route.breaker
        progress.provider, progress.model = provider.name, provider.model
        if deadline is not None and deadline <= self._clock():
            raise DeadlineExceeded(reason="DEADLINE_EXCEEDED", message="the deadline passed before the provider call")

        try:
            permit = breaker.allow()
        except CircuitOpenError as rejected:
            progress.breaker_state = breaker.state
            self._observer.circuit_rejected(provider.name)
            raise Unavailable(
                reason="CIRCUIT_OPEN",
                message=f"provider {provider.name} is failing; it was not called",
                metadata={"provider": provider.name},
                retry_after_seconds=rejected.retry_after,
            ) from rejected

        # Set by each attempt: whether the caller's deadline, not the provider timeout, bounded it. A timeout
        # forced by a caller in a hurry says nothing about the provider's health and must not trip its breaker.
        cut_by_deadline = False

        async def attempt() -> Completion:
            nonlocal cut_by_deadline
            timeout = self._provider_timeout
            cut_by_deadline = False
            if deadline is not None and deadline - self._clock() < timeout:
                timeout, cut_by_deadline = deadline - self._clock(), True
            if timeout <= 0:
                raise ProviderTimeout("no time left for another provider call")
            progress.attempts += 1
            return await self._call(provider, prompt, timeout)

        try:
            attempted = await self._retry.run(attempt, deadline=deadline)
        except GaveUp as gave_up:
            if isinstance(gave_up.last_error, ProviderTimeout) and cut_by_deadline:
                breaker.release(permit)
            else:
                breaker.record_failure(permit)
            progress.breaker_state = breaker.state
            raise _failure(gave_up, provider.name) from gave_up
        except BaseException:  # cancelled, or a bug: no verdict on the provider, but free a probe slot
            breaker.release(permit)
            raise
        breaker.record_success(permit)
        progress.breaker_state = breaker.state
        completion = progress.completion = attempted.value

        try:
            result = action.parse(completion.text, inputs)
        except ActionOutputInvalid as error:
            raise Unavailable(
                reason="PROVIDER_OUTPUT_INVALID",
                message=f"provider {provider.name} answered in an unexpected shape: {error}",
                metadata={"provider": provider.name},
            ) from error
        return Execution(
            result=result,
            provider=provider.name,
            model=provider.model,
            input_tokens=completion.input_tokens,
            output_tokens=completion.output_tokens,
            execution_time_ms=round((self._clock() - started) * 1000),
            attempts=attempted.attempts,
        )

    async def _call(self, provider: Provider, prompt: str, timeout: float) -> Completion:
        begun = self._clock()
        error_type: str | None = None
        try:
            # A backstop: adapters enforce ``timeout`` themselves, but one that does not must not hold the caller.
            async with asyncio.timeout(timeout):
                return await provider.complete(prompt, timeout=timeout)
        except TimeoutError as error:
            error_type = ProviderTimeout.error_type
            raise ProviderTimeout(f"{provider.name} did not answer within {timeout:.3f}s") from error
        except ProviderError as error:
            error_type = error.error_type
            raise
        finally:
            self._observer.attempt_finished(provider.name, provider.model, self._clock() - begun, error_type)


def _failure(gave_up: GaveUp, provider: str) -> DomainError:
    error = gave_up.last_error
    metadata = {"provider": provider, "attempts": str(gave_up.attempts)}
    if isinstance(error, ProviderTimeout):
        return DeadlineExceeded(
            reason="PROVIDER_TIMEOUT", message=f"provider {provider} did not answer in time", metadata=metadata
        )
    why = "not enough time left to retry" if gave_up.reason is StopReason.DEADLINE else f"{gave_up.attempts} attempt(s)"
    retry_after = error.retry_after if isinstance(error, ProviderRateLimited) else None
    return Unavailable(
        reason="PROVIDER_UNAVAILABLE",
        message=f"provider {provider} failed ({why}): {error}",
        metadata=metadata,
        retry_after_seconds=retry_after,
    )
