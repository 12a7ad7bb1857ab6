"""The ExecuteAction use case: validate, pick the provider chain, and for each provider in turn ask its circuit
breaker, call it under the retry policy and the deadline, parse the answer.

Order matters: the payload is validated before anything else, so bad input never costs a provider call nor
counts against a provider's breaker; a breaker is asked once per execution (not per attempt), so one execution
that spends all its retries on a provider is one failure of that provider.

Fallback. The chain is the request's ``providers`` (the gate's policy-allowed providers, in order) kept to the
ones this executor has, or, when the request names none, every configured provider in configuration order. A
provider is skipped when its circuit is open; the next one is tried when a provider's attempts are spent
(retryable errors, or its retry budget ran out), when it failed with a non-retryable error (4xx, malformed
request: another vendor may well accept it), when its own timeout fired while the caller's deadline still
leaves time, or when its answer did not parse or validate twice in a row (a bad answer is asked for once more
from the same provider: one call, outside the retry policy, that gives the breaker no verdict; then the failure
is ``PROVIDER_OUTPUT_INVALID`` naming the action and what was wrong). Non-retryable errors say nothing about the
provider's health: they release the breaker permit without a verdict. A timeout cut short by the caller's deadline
ends the execution at once (there is no time left for anyone). When every provider of the chain is open the call fails
closed at once with ``CIRCUIT_OPEN`` and the smallest ``retry_after``, without calling anyone; otherwise the
last provider's failure is the answer.

Context (``application.context``). Before the prompt is built, the caller's preferences and, for a
conversational action called with a session, the session's history are read from memory (within the deadline);
after a success, the exchange is remembered in the session. What fails and what proceeds is ``ContextLoader``'s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from techno_core.errors import DeadlineExceeded, DomainError, FailedPrecondition, Unavailable
from techno_executor.application.context import ContextLoader
from techno_executor.application.ports import ExecutionObserver
from techno_executor.domain.actions import Action, ActionCatalogue, ActionOutputInvalid
from techno_executor.domain.breaker import CircuitBreaker, CircuitOpenError, CircuitState, Permit
from techno_executor.domain.provider import Completion, Provider, ProviderError, ProviderRateLimited, ProviderTimeout
from techno_executor.domain.retry import RETRYABLE, AttemptReport, GaveUp, RetryBudget, RetryPolicy, StopReason

T = TypeVar("T")


@dataclass(frozen=True)
class ExecuteCommand:
    action: str
    payload: Mapping[str, Any]
    context_id: str = ""
    session_id: str = ""
    profile: str = ""
    # The gate's policy-allowed providers in order of preference; empty: the executor's default chain.
    providers: Sequence[str] = ()
    # The caller: whose session and preferences apply (empty: none do).
    principal_id: str = ""


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
    """A provider with its own breaker and retry budget."""

    provider: Provider
    breaker: CircuitBreaker
    budget: RetryBudget = field(default_factory=RetryBudget)

    @property
    def name(self) -> str:
        return self.provider.name


@dataclass(frozen=True)
class Prepared:
    """A validated command ready for its providers: the action, its inputs, the chain and the prompt."""

    action: Action
    inputs: Mapping[str, Any]
    chain: tuple[ProviderRoute, ...]
    prompt: str
    remaining: Callable[[], float | None]


@dataclass(frozen=True)
class Governed(Generic[T]):
    """What a governed provider call gave: its value, the breaker permit still to be handed back, how long the
    last attempt took, and whether the caller's deadline bounded it."""

    value: T
    permit: Permit
    seconds: float | None
    cut_by_deadline: bool


@dataclass
class Progress:
    """What is known so far about one execution, reported to the observer however it ends."""

    provider: str | None = None
    model: str | None = None
    attempts: int = 0
    completion: Completion | None = None
    breaker_state: CircuitState | None = None


class NextProvider(Exception):
    """This provider could not answer; try the next one (``error`` is the answer if none can)."""

    def __init__(self, error: DomainError) -> None:
        super().__init__(str(error))
        self.error = error


class ExecuteAction:
    def __init__(
        self,
        *,
        catalogue: ActionCatalogue,
        retry: RetryPolicy,
        observer: ExecutionObserver,
        provider_timeout_seconds: float,
        routes: Sequence[ProviderRoute] = (),
        route: ProviderRoute | None = None,
        clock: Callable[[], float] = time.monotonic,
        context: ContextLoader | None = None,
    ) -> None:
        """``routes`` is the default chain in configuration order; ``route`` (one provider) is kept for callers
        that have a single provider. ``context`` reads sessions and preferences (None: every call is stateless
        and without preferences)."""
        chain = [*routes, *([route] if route is not None else [])]
        if not chain:
            raise ValueError("at least one provider route is required")
        self._routes = {r.name: r for r in chain}
        if len(self._routes) != len(chain):
            raise ValueError("provider names must be unique")
        self._default_chain = tuple(chain)
        self._catalogue = catalogue
        self._retry = retry
        self._observer = observer
        self._provider_timeout = provider_timeout_seconds
        self._clock = clock
        self._context = context or ContextLoader(None)

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    @property
    def observer(self) -> ExecutionObserver:
        return self._observer

    @property
    def routes(self) -> Mapping[str, ProviderRoute]:
        """Every configured provider's route, by name (the admin API reads the breakers from here)."""
        return self._routes

    async def execute(self, command: ExecuteCommand, *, timeout: float | None) -> Execution:
        """Run ``command`` within ``timeout`` seconds (None: no deadline, only the provider timeout)."""
        self._observer.call_received()
        started = self._clock()
        progress = Progress()
        succeeded = False
        try:
            execution = await self._execute(command, started, None if timeout is None else started + timeout, progress)
            succeeded = True
            return execution
        finally:
            self.report(progress, succeeded=succeeded)

    def report(self, progress: Progress, *, succeeded: bool) -> None:
        """Tell the observer how an execution (unary or streamed) ended."""
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

    def chain(self, requested: Sequence[str]) -> tuple[ProviderRoute, ...]:
        """The routes to try, in order: the requested providers this executor has, or the default chain."""
        if not requested:
            return self._default_chain
        chosen = tuple(self._routes[name] for name in dict.fromkeys(requested) if name in self._routes)
        if not chosen:
            raise FailedPrecondition(
                reason="PROVIDER_NOT_ALLOWED",
                message="none of the providers allowed for this request is configured on this executor",
                metadata={"requested": ",".join(requested)[:512], "configured": ",".join(self._routes)[:512]},
            )
        return chosen

    async def prepare(self, command: ExecuteCommand, deadline: float | None) -> Prepared:
        """Validate ``command``, choose its providers, read its context and render its prompt (shared with the
        streamed execution): bad input never costs a provider call."""
        action = self._catalogue.get(command.action)
        inputs = action.validate(command.payload)
        chain = self.chain(command.providers)

        def remaining() -> float | None:
            return None if deadline is None else deadline - self._clock()

        context = await self._context.load(
            principal_id=command.principal_id,
            session_id=command.session_id,
            conversational=action.conversation is not None,
            remaining=remaining,
        )
        prompt = action.prompt(inputs, history=context.history, preferences=context.preferences)
        if deadline is not None and deadline <= self._clock():
            raise DeadlineExceeded(reason="DEADLINE_EXCEEDED", message="the deadline passed before the provider call")
        return Prepared(action, inputs, chain, prompt, remaining)

    async def remember(self, command: ExecuteCommand, prepared: Prepared, result: Mapping[str, Any]) -> None:
        """Append a conversational action's exchange to the caller's session. Never raises: a failed write is
        logged and counted, and the caller still gets the reply."""
        await self._context.remember(
            principal_id=command.principal_id,
            session_id=command.session_id,
            turn=prepared.action.turn(prepared.inputs, result),
            remaining=prepared.remaining,
        )

    async def _execute(
        self, command: ExecuteCommand, started: float, deadline: float | None, progress: Progress
    ) -> Execution:
        prepared = await self.prepare(command, deadline)
        rejected: list[CircuitOpenError] = []
        last_error: DomainError | None = None
        for route in prepared.chain:
            if last_error is not None and deadline is not None and deadline <= self._clock():
                break  # no time left to fall back: the last provider's failure is the answer
            try:
                completion, result = await self._try(
                    route, prepared.action, prepared.inputs, prepared.prompt, deadline, progress
                )
            except CircuitOpenError as refusal:
                rejected.append(refusal)
                continue
            except NextProvider as skipped:
                last_error = skipped.error
                continue
            await self.remember(command, prepared, result)
            return Execution(
                result=result,
                provider=route.provider.name,
                model=route.provider.model,
                input_tokens=completion.input_tokens,
                output_tokens=completion.output_tokens,
                execution_time_ms=round((self._clock() - started) * 1000),
                attempts=progress.attempts,
            )
        raise no_provider_answered(rejected, last_error)

    async def governed(
        self,
        route: ProviderRoute,
        call: Callable[[float], Awaitable[T]],
        deadline: float | None,
        progress: Progress,
    ) -> Governed[T]:
        """``call(timeout)`` under ``route``'s breaker and retry policy and the provider timeout (lowered to the
        caller's deadline). The breaker's permit is handed back with the result: the caller gives the verdict
        when it knows it. Raises ``CircuitOpenError`` or ``NextProvider`` to move on, or a domain error that ends
        the execution."""
        provider, breaker = route.provider, route.breaker
        progress.provider, progress.model = provider.name, provider.model
        try:
            permit = breaker.allow()
        except CircuitOpenError:
            progress.breaker_state = breaker.state
            self._observer.circuit_rejected(provider.name)
            raise
        # Set by each attempt: whether the caller's deadline, not the provider timeout, bounded it. A timeout
        # forced by a caller in a hurry says nothing about the provider's health and must not trip its breaker.
        cut_by_deadline = False
        last_seconds: float | None = None

        async def attempt() -> T:
            nonlocal cut_by_deadline, last_seconds
            timeout, cut_by_deadline = self.attempt_timeout(deadline)
            if timeout <= 0:
                raise ProviderTimeout("no time left for another provider call")
            progress.attempts += 1
            begun = self._clock()
            try:
                return await call(timeout)
            finally:
                last_seconds = self._clock() - begun

        def report(attempted: AttemptReport) -> None:
            self._observer.attempt_reported(provider.name, provider.model, attempted)

        try:
            attempted = await self._retry.run(attempt, deadline=deadline, budget=route.budget, on_attempt=report)
        except GaveUp as gave_up:
            error = gave_up.last_error
            timed_out = isinstance(error, ProviderTimeout)
            if (timed_out and cut_by_deadline) or not (timed_out or isinstance(error, RETRYABLE)):
                breaker.release(permit)  # the caller's deadline, or a request this vendor refused: no verdict
            else:
                breaker.record_failure(permit, seconds=last_seconds)
            progress.breaker_state = breaker.state
            failure = _failure(gave_up, provider.name)
            if timed_out and cut_by_deadline:
                raise failure from gave_up
            raise NextProvider(failure) from gave_up
        except BaseException:  # cancelled, or a bug: no verdict on the provider, but free a probe slot
            breaker.release(permit)
            raise
        return Governed(attempted.value, permit, last_seconds, cut_by_deadline)

    def attempt_timeout(self, deadline: float | None) -> tuple[float, bool]:
        """The provider timeout, or what is left of the caller's deadline if less (then True: cut by it)."""
        if deadline is not None and deadline - self._clock() < self._provider_timeout:
            return deadline - self._clock(), True
        return self._provider_timeout, False

    async def _try(
        self,
        route: ProviderRoute,
        action: Action,
        inputs: Mapping[str, Any],
        prompt: str,
        deadline: float | None,
        progress: Progress,
    ) -> tuple[Completion, dict[str, Any]]:
        """One provider of the chain: its result, or ``CircuitOpenError`` / ``NextProvider`` to move on, or a
        domain error that ends the execution."""
        provider, breaker = route.provider, route.breaker

        def call(timeout: float) -> Awaitable[Completion]:
            return self._call(provider, prompt, timeout)

        governed = await self.governed(route, call, deadline, progress)
        breaker.record_success(governed.permit, seconds=governed.seconds)
        progress.breaker_state = breaker.state
        completion = progress.completion = governed.value

        try:
            return completion, action.parse(completion.text, inputs)
        except ActionOutputInvalid as first:
            problem: Exception = first
        # An answer in the wrong shape: ask the same provider once more (one call, outside the retry policy; the
        # breaker's verdict was already given: the provider answered). A second bad answer moves on.
        try:
            timeout, cut_by_deadline = self.attempt_timeout(deadline)
            if timeout <= 0:
                raise ProviderTimeout("no time left for another provider call")
            progress.attempts += 1
            completion = progress.completion = await self._call(provider, prompt, timeout)
            return completion, action.parse(completion.text, inputs)
        except ActionOutputInvalid as error:
            problem = error
        except ProviderError as error:
            if isinstance(error, ProviderTimeout) and cut_by_deadline:
                raise DeadlineExceeded(
                    reason="PROVIDER_TIMEOUT",
                    message=f"provider {provider.name} did not answer in time",
                    metadata={"provider": provider.name, "action": action.name},
                ) from error
            problem = ActionOutputInvalid(f"{problem}; asked again, it failed: {error}")
        invalid = Unavailable(
            reason="PROVIDER_OUTPUT_INVALID",
            message=f"provider {provider.name} gave no valid answer in two tries: {problem}",
            metadata={"provider": provider.name, "action": action.name},
        )
        raise NextProvider(invalid) from problem

    async def _call(self, provider: Provider, prompt: str, timeout: float) -> Completion:
        return await self.bounded_call(provider, timeout, lambda: provider.complete(prompt, timeout=timeout))

    async def bounded_call(self, provider: Provider, timeout: float, call: Callable[[], Awaitable[T]]) -> T:
        """One provider attempt (a call, or a stream's wait for its first piece): ``call()`` bounded by
        ``timeout`` — a backstop, adapters enforce it themselves but one that does not must not hold the caller —
        and reported to the observer with its duration and error type."""
        begun = self._clock()
        error_type: str | None = None
        try:
            async with asyncio.timeout(timeout):
                return await call()
        except TimeoutError as error:
            error_type = ProviderTimeout.error_type
            raise ProviderTimeout(f"{provider.name} did not answer within {timeout:.3f}s") from error
        except ProviderError as error:
            error_type = error.error_type
            raise
        finally:
            self._observer.attempt_finished(provider.name, provider.model, self._clock() - begun, error_type)


def no_provider_answered(rejected: Sequence[CircuitOpenError], last_error: DomainError | None) -> DomainError:
    """The error when no provider of the chain answered: the last one's failure, or CIRCUIT_OPEN when every
    provider's breaker refused (with the soonest ``retry_after``)."""
    if last_error is not None:
        return last_error
    first = min(rejected, key=lambda refusal: refusal.retry_after)
    names = ",".join(refusal.name for refusal in rejected)
    return Unavailable(
        reason="CIRCUIT_OPEN",
        message=f"every allowed provider is failing ({names}); none was called",
        metadata={"provider": first.name, "providers": names[:512]},
        retry_after_seconds=first.retry_after,
    )


def _failure(gave_up: GaveUp, provider: str) -> DomainError:
    error = gave_up.last_error
    metadata = {"provider": provider, "attempts": str(gave_up.attempts)}
    if isinstance(error, ProviderTimeout):
        return DeadlineExceeded(
            reason="PROVIDER_TIMEOUT", message=f"provider {provider} did not answer in time", metadata=metadata
        )
    why = {
        StopReason.DEADLINE: "not enough time left to retry",
        StopReason.THROTTLED: f"{gave_up.attempts} attempt(s), retries throttled",
        StopReason.NOT_RETRYABLE: "not retryable",
    }.get(gave_up.reason, f"{gave_up.attempts} attempt(s)")
    retry_after = error.retry_after if isinstance(error, ProviderRateLimited) else None
    return Unavailable(
        reason="PROVIDER_UNAVAILABLE",
        message=f"provider {provider} failed ({why}): {error}",
        metadata=metadata,
        retry_after_seconds=retry_after,
    )
