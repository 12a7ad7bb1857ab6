"""Configuration of the executor's resilience policy (circuit breakers, retry budget, breaker audit), as a
settings mixin, and the factories that build the policy from it for the composition root."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings

from techno_core.settings import TECHNO_CONFIG
from techno_executor.application.execute import ProviderRoute
from techno_executor.domain.breaker import CircuitBreaker, StateListener
from techno_executor.domain.provider import Provider
from techno_executor.domain.retry import RetryBudget


class ResilienceSettings(BaseSettings):
    """Mixin of ``ExecutorSettings``: one circuit breaker and one retry budget per provider."""

    model_config = TECHNO_CONFIG

    cb_threshold: int = Field(
        3, ge=1, description="Consecutive failed executions of a provider that open its circuit breaker."
    )
    cb_timeout: float = Field(
        60.0, gt=0, description="Seconds an open circuit rejects calls before it lets probe calls through."
    )
    cb_failure_rate: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Share of failed executions over the sliding window (0 to 1) that opens the circuit.",
    )
    cb_slow_call_rate: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Share of slow calls over the sliding window (0 to 1) that opens the circuit; "
        "1 opens only when every call of the window is slow.",
    )
    cb_slow_call_seconds: float = Field(
        10.0, gt=0, description="A provider call taking this many seconds or more counts as slow."
    )
    cb_window: int = Field(
        20, ge=1, description="Size of the count-based sliding window: the last N executions of a provider."
    )
    cb_min_calls: int = Field(
        10, ge=1, description="Executions the window must hold before its failure and slow-call rates count."
    )
    cb_half_open_calls: int = Field(
        1,
        ge=1,
        description="Probe calls a half-open circuit lets through; all must succeed to close it, one failure "
        "reopens it.",
    )
    executor_retry_budget_tokens: float = Field(
        10.0,
        gt=0,
        description="Retry throttling per provider (as in gRPC): the token bucket's size; retries are allowed "
        "only while more than half of it is left, and each retryable failure costs one token.",
    )
    executor_retry_budget_ratio: float = Field(
        0.1, gt=0, description="Tokens a successful provider call gives back to its retry budget."
    )
    executor_audit_breaker_transitions: bool = Field(
        True, description="Write circuit-breaker transitions to memory's audit trail (fire-and-forget)."
    )
    executor_audit_timeout_seconds: float = Field(
        5.0, gt=0, description="Ceiling of one audit write of breaker transitions to the memory service."
    )

    @model_validator(mode="after")
    def _window_holds_min_calls(self) -> ResilienceSettings:
        if self.cb_min_calls > self.cb_window:
            raise ValueError("cb_min_calls must not exceed cb_window")
        return self


def circuit_breaker(
    settings: ResilienceSettings,
    name: str,
    *,
    clock: Callable[[], float] = time.monotonic,
    on_state_change: StateListener | None = None,
) -> CircuitBreaker:
    return CircuitBreaker(
        name,
        failure_threshold=settings.cb_threshold,
        open_seconds=settings.cb_timeout,
        half_open_max_calls=settings.cb_half_open_calls,
        failure_rate_threshold=settings.cb_failure_rate,
        slow_call_rate_threshold=settings.cb_slow_call_rate,
        slow_call_seconds=settings.cb_slow_call_seconds,
        window_size=settings.cb_window,
        minimum_calls=settings.cb_min_calls,
        clock=clock,
        on_state_change=on_state_change,
    )


def retry_budget(settings: ResilienceSettings) -> RetryBudget:
    return RetryBudget(settings.executor_retry_budget_tokens, settings.executor_retry_budget_ratio)


def provider_routes(
    settings: ResilienceSettings,
    providers: Iterable[Provider],
    *,
    clock: Callable[[], float] = time.monotonic,
    on_state_change: StateListener | None = None,
) -> list[ProviderRoute]:
    """One route per provider, in the given (configuration) order: the executor's default fallback chain."""
    return [
        ProviderRoute(
            provider,
            circuit_breaker(settings, provider.name, clock=clock, on_state_change=on_state_change),
            retry_budget(settings),
        )
        for provider in providers
    ]
