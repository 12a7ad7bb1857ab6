"""Idempotent requests: a request sent with an ``Idempotency-Key`` runs at most once per caller and key.

The record of each key lives in the memory service, shared by every gate replica, and the database's primary
key decides which of several concurrent duplicates runs (its *claim*); the others wait for its response and
answer with exactly that response (the same bytes: same result, same trace id). Only a successful response is
kept: when the execution fails, or is denied, the claim is released, so a retry with the same key runs again
(nothing succeeded, so there is nothing to repeat). A key reused for a different request is refused.

A claim is leased for the request's deadline plus a margin, and names the request's trace id. A duplicate that
finds an expired lease without a response (the holder's gate stopped) cannot know from the record whether the
request ran, so memory reads the holder's audit trail: if the request was allowed (the decision is committed
before anything runs) and did not fail, it may have run and its response is lost. It is then never run again:
the duplicate is refused with 409 ``IDEMPOTENCY_OUTCOME_UNKNOWN`` naming the earlier trace, and the client learns
what happened from the audit trail. Only a holder that stopped before its request was allowed is taken over.

A streamed request (``StreamProcess``) uses the same claim through ``begin``/``finish``/``abandon``: its final
result (the ``ProcessResponse`` of its ``done`` message) is stored before that message is sent, so there is no
moment when the client has its answer and a repeat could run again; a repeat gets that result as a single
``done`` message. The fingerprint is the ``ProcessRequest``'s, so a key sent with the same request to ``Process``
and to ``StreamProcess`` is one request: whichever came second gets the first one's result.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from techno_core import errors
from techno_gate.domain.reasons import Reason

log = logging.getLogger(__name__)

MAX_KEY_LENGTH = 255
# How long past the request's own deadline a claim is kept: covers the gate's bookkeeping after the executor.
LEASE_MARGIN_SECONDS = 5.0


class ClaimState(StrEnum):
    CLAIMED = "CLAIMED"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    MISMATCH = "MISMATCH"
    OUTCOME_UNKNOWN = "OUTCOME_UNKNOWN"


@dataclass(frozen=True)
class Claim:
    state: ClaimState
    response: bytes = b""
    # When OUTCOME_UNKNOWN: the trace id of the earlier request that may have run ("" if unknown).
    trace_id: str = ""


class IdempotencyStore(Protocol):
    async def claim(
        self, principal_id: str, key: str, request_hash: str, *, lease_seconds: float, trace_id: str
    ) -> Claim: ...

    async def complete(self, principal_id: str, key: str, response: bytes) -> None: ...

    async def release(self, principal_id: str, key: str) -> None: ...


class ReplayObserver(Protocol):
    def idempotent(self, outcome: str) -> None:
        """One of: executed, replayed, conflict, mismatch, unknown."""
        ...


def validate_key(key: str) -> None:
    if 0 < len(key) <= MAX_KEY_LENGTH and all(0x20 < ord(char) < 0x7F for char in key):
        return
    raise errors.InvalidArgument(
        reason=Reason.IDEMPOTENCY_KEY_INVALID,
        message="Idempotency-Key must be 1 to 255 printable ASCII characters without spaces",
        violations=[errors.FieldViolation("Idempotency-Key", "1 to 255 printable ASCII characters, no spaces")],
    )


def outcome_unknown(trace_id: str) -> errors.Aborted:
    """The refusal of a repeat whose earlier request may have run and lost its response: it is not run again."""
    where = f"check the audit trail (trace id {trace_id})" if trace_id else "check the audit trail"
    return errors.Aborted(
        reason=Reason.IDEMPOTENCY_OUTCOME_UNKNOWN,
        message=(
            "an earlier request with this Idempotency-Key may have run and its result was lost; it is not run "
            f"again: {where} or send it with a new key"
        ),
        metadata={"earlierTraceId": trace_id} if trace_id else {},  # beside the edge's own traceId
    )


def request_hash(serialized_request: bytes) -> str:
    """The request's fingerprint: a key may only be repeated with the very same request."""
    return hashlib.sha256(serialized_request).hexdigest()


@dataclass
class Idempotency:
    store: IdempotencyStore
    observer: ReplayObserver
    first_poll_seconds: float = 0.02
    max_poll_seconds: float = 0.25
    clock: Callable[[], float] = time.monotonic

    async def run(
        self,
        principal_id: str,
        key: str,
        fingerprint: str,
        work: Callable[[], Awaitable[bytes]],
        *,
        timeout: float,
        trace_id: str = "",
    ) -> bytes:
        """The response of the key's one execution: ``work``'s, if this call wins the claim, else the winner's.
        ``trace_id`` is this request's, kept with its claim."""
        stored = await self.begin(principal_id, key, fingerprint, timeout=timeout, trace_id=trace_id)
        if stored is not None:
            return stored
        try:
            response = await work()
        except BaseException:
            await self.abandon(principal_id, key)
            raise
        await self.finish(principal_id, key, response)
        return response

    async def begin(
        self, principal_id: str, key: str, fingerprint: str, *, timeout: float, trace_id: str = ""
    ) -> bytes | None:
        """The stored response of the key's execution to answer with, or None when this call won the claim: it
        then runs the request and ends with ``finish`` (its response) or ``abandon`` (it failed)."""
        deadline = self.clock() + timeout
        delay = self.first_poll_seconds
        lease = timeout + LEASE_MARGIN_SECONDS
        while True:
            claim = await self.store.claim(principal_id, key, fingerprint, lease_seconds=lease, trace_id=trace_id)
            if claim.state is ClaimState.CLAIMED:
                self.observer.idempotent("executed")
                return None
            if claim.state is ClaimState.COMPLETED:
                self.observer.idempotent("replayed")
                return claim.response
            if claim.state is ClaimState.MISMATCH:
                self.observer.idempotent("mismatch")
                raise errors.InvalidArgument(
                    reason=Reason.IDEMPOTENCY_KEY_REUSED,
                    message="this Idempotency-Key was already used for a different request",
                )
            if claim.state is ClaimState.OUTCOME_UNKNOWN:
                self.observer.idempotent("unknown")
                raise outcome_unknown(claim.trace_id)
            if self.clock() + delay >= deadline:  # IN_PROGRESS, and no time left to wait for it
                self.observer.idempotent("conflict")
                raise errors.Aborted(
                    reason=Reason.IDEMPOTENCY_KEY_IN_PROGRESS,
                    message="a request with this Idempotency-Key is still running; retry to get its response",
                    retry_after_seconds=1.0,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_poll_seconds)

    async def finish(self, principal_id: str, key: str, response: bytes) -> None:
        """Keep the claimed execution's response for the key's repeats."""
        try:
            await self.store.complete(principal_id, key, response)
        except errors.DomainError as failure:
            # The work is done and is answered; a duplicate arriving after the lease learns that it may have run
            # (IDEMPOTENCY_OUTCOME_UNKNOWN) and does not run it again.
            log.error("idempotent response not stored", extra={"error": failure.reason})

    async def abandon(self, principal_id: str, key: str) -> None:
        """The claimed execution failed (or was cancelled): nothing succeeded, so let a retry run. If the release
        itself fails the lease still frees the key."""
        with contextlib.suppress(Exception):
            await asyncio.shield(self.store.release(principal_id, key))
