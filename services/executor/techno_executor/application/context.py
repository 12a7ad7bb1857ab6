"""What a prompt knows about its caller besides the payload: the session's history and the caller's preferences.

``ConversationContext`` is the port (memory, over gRPC, in production; a fake in unit tests). ``ContextLoader``
is the policy the use case applies to it:

- Preferences (tone, format, language) apply to every action of a caller with a ``principal_id``. They are a
  nicety: when memory cannot give them the action runs without them (logged, counted as ``preferences``).
- History applies to a conversational action (``conversation:`` in the catalogue) called with a ``session_id``.
  It is required: an unknown, expired or foreign session fails with ``NotFound`` SESSION_NOT_FOUND, as memory
  answered; memory unreachable fails with ``Unavailable`` MEMORY_UNAVAILABLE (counted as ``history``). Without a
  ``session_id`` the action is stateless: no history is read, nothing is remembered.
- After a successful conversational execution with a session, the user's message and the reply are remembered.
  A failed write does not fail the execution (the caller already has a good answer and the provider was paid
  for): it is logged and counted as ``remember``.

Every call is bounded by what is left of the request's deadline (the adapter also applies its own ceiling).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from techno_core.errors import DeadlineExceeded, DomainError, FieldViolation, InvalidArgument, Unavailable
from techno_executor.domain.prompt import NO_PREFERENCES, Preferences, Turn

__all__ = [
    "NO_PREFERENCES",
    "ContextLoader",
    "ConversationContext",
    "Preferences",
    "PromptContext",
    "Remaining",
    "Turn",
]

log = logging.getLogger(__name__)

# Seconds left of the request's deadline when called (None: no deadline).
Remaining = Callable[[], float | None]


class ConversationContext(Protocol):
    """Sessions and preferences, kept by memory. ``timeout`` (seconds, None: the adapter's own ceiling) bounds
    each call. Errors are ``techno_core.errors``: ``NotFound`` SESSION_NOT_FOUND for a session that does not
    exist, has expired or belongs to someone else; ``Unavailable`` MEMORY_UNAVAILABLE when memory cannot answer."""

    async def history(self, principal_id: str, session_id: str, *, timeout: float | None = None) -> list[Turn]:
        """The session's recent messages, oldest first, as (role, content)."""
        ...

    async def remember(
        self,
        principal_id: str,
        session_id: str,
        user_message: str,
        assistant_reply: str,
        *,
        timeout: float | None = None,
    ) -> None:
        """Append one exchange (the user's message, then the reply) to the session."""
        ...

    async def preferences(self, principal_id: str, *, timeout: float | None = None) -> Preferences:
        """The principal's explicit preferences (empty fields when none were set)."""
        ...


@dataclass(frozen=True)
class PromptContext:
    history: tuple[Turn, ...] = ()
    preferences: Preferences = NO_PREFERENCES


EMPTY = PromptContext()


def _no_report(what: str) -> None:
    pass


class ContextLoader:
    """Applies the rules above to a ``ConversationContext`` (None: no memory, every action is stateless and
    without preferences). ``on_failure(what)`` counts failures (what: history | preferences | remember)."""

    def __init__(self, context: ConversationContext | None, *, on_failure: Callable[[str], None] = _no_report) -> None:
        self._context = context
        self._on_failure = on_failure

    async def load(
        self, *, principal_id: str, session_id: str, conversational: bool, remaining: Remaining
    ) -> PromptContext:
        """The history (when a conversational action has a session) and preferences, read concurrently."""
        with_session = conversational and bool(session_id)
        if with_session and not principal_id:
            raise InvalidArgument(
                reason="PRINCIPAL_REQUIRED",
                message="a session can only be used on behalf of a principal",
                violations=[FieldViolation("principal_id", "is required with a session_id")],
            )
        context = self._context
        if context is None:
            if with_session:
                raise Unavailable(reason="MEMORY_UNAVAILABLE", message="this executor keeps no sessions")
            return EMPTY
        if not principal_id:
            return EMPTY
        if not with_session:  # nothing to read beside them: no task (the usual call, their cache answers at once)
            return PromptContext((), await self._preferences(context, principal_id, remaining))
        preferences = asyncio.ensure_future(self._preferences(context, principal_id, remaining))
        try:
            history = await self._history(context, principal_id, session_id, remaining)
        except BaseException:
            preferences.cancel()
            raise
        return PromptContext(tuple(history), await preferences)

    async def remember(
        self, *, principal_id: str, session_id: str, turn: tuple[str, str] | None, remaining: Remaining
    ) -> None:
        """Remember ``turn`` (user message, reply) in the session; never raises (but for cancellation)."""
        if self._context is None or turn is None or not session_id or not principal_id:
            return
        try:
            await self._context.remember(principal_id, session_id, *turn, timeout=_left(remaining))
        except Exception as error:
            # The reply is still returned: the caller has a good answer; only the session misses this exchange.
            self._failed("remember", error)

    async def _history(
        self, context: ConversationContext, principal_id: str, session_id: str, remaining: Remaining
    ) -> list[Turn]:
        timeout = _left(remaining)
        try:
            return await context.history(principal_id, session_id, timeout=timeout)
        except (Unavailable, DeadlineExceeded) as error:  # memory's trouble, not the caller's
            self._failed("history", error)
            raise
        except DomainError:  # SESSION_NOT_FOUND, or memory refusing the request: the caller's to fix
            raise
        except Exception as error:
            self._failed("history", error)
            raise Unavailable(reason="MEMORY_UNAVAILABLE", message="the session's history could not be read") from error

    async def _preferences(self, context: ConversationContext, principal_id: str, remaining: Remaining) -> Preferences:
        try:
            return await context.preferences(principal_id, timeout=_left(remaining))
        except Exception as error:
            # A nicety: the action runs without them rather than failing.
            self._failed("preferences", error)
            return NO_PREFERENCES

    def _failed(self, what: str, error: Exception) -> None:
        why = error.reason if isinstance(error, DomainError) else type(error).__name__
        log.warning("conversation context: %s failed (%s)", what, why, extra={"event": "context_failed", "what": what})
        self._on_failure(what)


def _left(remaining: Remaining) -> float | None:
    left = remaining()
    if left is not None and left <= 0:
        raise DeadlineExceeded(reason="DEADLINE_EXCEEDED", message="the deadline passed before memory was asked")
    return left
