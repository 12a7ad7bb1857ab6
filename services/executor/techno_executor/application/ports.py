"""What the executor's use case needs besides providers: somewhere to report what happened."""

from __future__ import annotations

from typing import Protocol

from techno_executor.domain.breaker import CircuitState
from techno_executor.domain.retry import AttemptReport


class ExecutionObserver(Protocol):
    """Metrics, span attributes and logs of executions. Called on the request's own task, so an
    implementation may read the current span."""

    def call_received(self) -> None: ...

    def attempt_finished(self, provider: str, model: str, seconds: float, error_type: str | None) -> None:
        """One provider call ended; ``error_type`` is None on success, else the ``ProviderError.error_type``."""
        ...

    def attempt_reported(self, provider: str, model: str, report: AttemptReport) -> None:
        """One attempt's place in the retry sequence (number, error, wait before the next): for the trace."""
        ...

    def circuit_rejected(self, provider: str) -> None: ...

    def execution_finished(
        self,
        *,
        succeeded: bool,
        provider: str | None,
        model: str | None,
        attempts: int,
        input_tokens: int,
        output_tokens: int,
        breaker_state: CircuitState | None,
    ) -> None: ...

    def breaker_state_changed(self, provider: str, old: CircuitState, new: CircuitState) -> None: ...

    def first_chunk(self, provider: str, model: str, seconds: float) -> None:
        """A streamed execution's first piece of text arrived ``seconds`` after the call was received."""
        ...

    def stream_finished(self, provider: str, model: str, seconds: float, result: str) -> None:
        """A stream that reached a provider ended: ``result`` is completed, failed or cancelled (by the caller);
        ``seconds`` since the call was received."""
        ...


class NullObserver:
    """Reports nothing; for tests that do not look at telemetry."""

    def call_received(self) -> None:
        pass

    def attempt_finished(self, provider: str, model: str, seconds: float, error_type: str | None) -> None:
        pass

    def attempt_reported(self, provider: str, model: str, report: AttemptReport) -> None:
        pass

    def circuit_rejected(self, provider: str) -> None:
        pass

    def execution_finished(
        self,
        *,
        succeeded: bool,
        provider: str | None,
        model: str | None,
        attempts: int,
        input_tokens: int,
        output_tokens: int,
        breaker_state: CircuitState | None,
    ) -> None:
        pass

    def breaker_state_changed(self, provider: str, old: CircuitState, new: CircuitState) -> None:
        pass

    def first_chunk(self, provider: str, model: str, seconds: float) -> None:
        pass

    def stream_finished(self, provider: str, model: str, seconds: float, result: str) -> None:
        pass
