"""The gate's API key cache: what it serves after a load, and its staleness probe (``check_fresh``, which the
gate's health reports) driven by an injected clock."""

from __future__ import annotations

from typing import cast

import pytest
from google.protobuf import timestamp_pb2

from techno.memory.v1 import memory_pb2, memory_pb2_grpc
from techno_gate.adapters.memory import KeyCache
from techno_gate.domain.keys import generate_key

MAX_AGE = 10.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


class FakeMemory:
    """``ListApiKeys`` answering the keys it holds, or failing while ``down``."""

    def __init__(self, *keys: memory_pb2.ApiKey) -> None:
        self.keys = list(keys)
        self.down = False

    async def ListApiKeys(
        self, request: memory_pb2.ListApiKeysRequest, *, timeout: float
    ) -> memory_pb2.ListApiKeysResponse:
        if self.down:
            raise ConnectionError("memory unreachable")
        return memory_pb2.ListApiKeysResponse(api_keys=self.keys, read_at=timestamp_pb2.Timestamp(seconds=1_000))


def cache(memory: FakeMemory, clock: FakeClock) -> KeyCache:
    stub = cast(memory_pb2_grpc.MemoryServiceStub, memory)
    return KeyCache(stub, refresh_seconds=1.0, max_age_seconds=MAX_AGE, clock=clock)


async def stale(keys: KeyCache) -> bool:
    try:
        await keys.check_fresh()
    except RuntimeError:
        return True
    return False


async def test_the_cache_is_stale_until_its_first_load_and_then_serves_the_keys() -> None:
    key = generate_key()
    stored = memory_pb2.ApiKey(key_id=key.key_id, prefix=key.prefix, key_hash=key.key_hash, name="k", profile="p")
    keys = cache(FakeMemory(stored), FakeClock())
    assert not keys.ready
    assert await stale(keys)
    await keys.reload(full=True)
    assert keys.ready
    assert not await stale(keys)
    record = keys.lookup(key.key_hash)
    assert record is not None
    assert (record.key_id, record.profile) == (key.key_id, "p")


async def test_the_cache_turns_stale_past_its_maximum_age_and_fresh_again_on_the_next_load() -> None:
    memory, clock = FakeMemory(), FakeClock()
    keys = cache(memory, clock)
    await keys.reload(full=True)
    clock.now += MAX_AGE
    assert not await stale(keys)  # exactly the maximum age is still fresh
    memory.down = True
    with pytest.raises(ConnectionError):
        await keys.reload()
    clock.now += 0.001
    assert await stale(keys)  # no load has succeeded for longer than the maximum age
    assert keys.ready  # stale is not unready: keys loaded once keep being served
    memory.down = False
    await keys.reload()
    assert not await stale(keys)
