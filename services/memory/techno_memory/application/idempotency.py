"""Idempotency records: the store behind ``Idempotency-Key``, shared by every gate replica.

A record is kept per (principal_id, idempotency_key) with the hash of the request it was first used for, its
response once there is one, and three times by this service's clock: ``created_at`` (its claim), ``expires_at``
(``created_at`` + the retention, ``TECHNO_MEMORY_IDEMPOTENCY_RETENTION_SECONDS``) and ``lease_expires_at``
(``created_at`` + the lease the claimant asked for).

**Claim** (principal, key, request_hash, lease, trace_id), in one transaction:

1. ``INSERT … ON CONFLICT DO NOTHING``. A row inserted: **CLAIMED**, the caller executes the request.
2. Otherwise the stored record is read and judged (``techno_memory.domain.idempotency.judge``):

   - unfinished with an expired lease (its holder crashed or overran, *abandoned*): the holder's request may
     have run, and its response is lost. The audit trail of the holder's trace id (kept with its claim) decides,
     in the same transaction: an ``ALLOW`` decision that no ``FAILED`` outcome names means it may have run, and
     the record is **not** taken over (that would run the request twice): **OUTCOME_UNKNOWN**, with the holder's
     trace id, for a repeat (**MISMATCH** for another request) until the record expires. Without such a decision
     (the holder stopped before anything ran; or the claim has no trace id) it is taken over as below;
   - expired (``expires_at <= now``), or abandoned and cannot have run: it is taken over by a compare-and-set
     UPDATE (new hash and trace id, no response, fresh times) whose WHERE requires the times and the absence of
     a response read in step 2 to be unchanged. One row updated: **CLAIMED**. None: another claim, completion,
     release or sweep changed it first, and the claim starts again from step 1 (at most three times, then
     **IN_PROGRESS**: ask again);
   - a live record of another request_hash: **MISMATCH** (the key was used for a different request);
   - a live record with a response: **COMPLETED**, with exactly the stored bytes;
   - otherwise: **IN_PROGRESS** (its execution has not finished: ask again later).

Of any number of concurrent claims of one key, from any number of memory replicas, exactly one gets CLAIMED: the
database's primary key admits one INSERT, and an UPDATE changes a row only if it is still the version read (on
PostgreSQL the second UPDATE waits for the first and re-checks its WHERE on the new version; on SQLite the
INSERT takes the database's write lock, so claims run one after another). No Python lock is involved.

**Complete** (principal, key, response): ``UPDATE … SET response WHERE`` the key matches, the record has no
response and has not expired. Repeating a completion with the same bytes succeeds (a retried call whose first
attempt was applied). Otherwise ``FAILED_PRECONDITION``:

- ``IDEMPOTENCY_KEY_NOT_CLAIMED``: no unfinished record of the key (never claimed, released, expired and swept
  or taken over after expiry);
- ``IDEMPOTENCY_KEY_ALREADY_COMPLETED``: the record holds a different response.

**Release** (principal, key): ``DELETE WHERE`` the key matches and the record has no response, so the next claim
inserts afresh. Releasing a key that is not claimed (or twice) does nothing and succeeds; a completed record is
never released.

The proto carries no claim token, so completion and release are not fenced: a holder that overran its lease and
was taken over could still complete or release the new claim. Claimants must therefore lease for longer than
their execution can last (the gate leases the request's deadline plus a margin).

**Retention**: a record is answered until ``expires_at``; after it a claim takes it over, and the sweeper
(``application.sweeper``) deletes it in bounded batches. The retention is at least the longest lease
(``MAX_LEASE``), so a record never expires while its claim is held.

Time is the injected clock, so tests move it instead of sleeping.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from techno_core.errors import FailedPrecondition
from techno_memory.application.ports import IdempotencyStore
from techno_memory.domain.idempotency import Claim, ClaimRequest
from techno_memory.domain.idempotency_validation import validate_claim, validate_completion, validate_key_ref
from techno_memory.domain.records import utc_now

IDEMPOTENCY_KEY_NOT_CLAIMED = "IDEMPOTENCY_KEY_NOT_CLAIMED"
IDEMPOTENCY_KEY_ALREADY_COMPLETED = "IDEMPOTENCY_KEY_ALREADY_COMPLETED"


class IdempotencyKeys:
    def __init__(
        self, store: IdempotencyStore, *, retention: timedelta, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self._store = store
        self._retention = retention
        self._clock = clock

    async def claim(
        self, principal_id: str, key: str, request_hash: str, lease: timedelta, trace_id: str = ""
    ) -> Claim:
        validate_claim(principal_id, key, request_hash, lease, trace_id)
        now = self._clock()
        request = ClaimRequest(
            principal_id=principal_id,
            key=key,
            request_hash=request_hash,
            now=now,
            lease_expires_at=now + lease,
            expires_at=now + self._retention,
            trace_id=trace_id,
        )
        return await self._store.claim(request)

    async def complete(self, principal_id: str, key: str, response: bytes) -> None:
        validate_completion(principal_id, key, response)
        now = self._clock()
        if await self._store.complete(principal_id, key, response, now=now):
            return
        stored = await self._store.stored_response(principal_id, key, now=now)
        if stored == response:
            return  # a repeat of the completion that stored it
        if stored is None:
            raise FailedPrecondition(
                reason=IDEMPOTENCY_KEY_NOT_CLAIMED,
                message="no unfinished claim of this idempotency key (never claimed, released or expired)",
            )
        raise FailedPrecondition(
            reason=IDEMPOTENCY_KEY_ALREADY_COMPLETED,
            message="this idempotency key is already completed with another response",
        )

    async def release(self, principal_id: str, key: str) -> None:
        validate_key_ref(principal_id, key)
        await self._store.release(principal_id, key)
