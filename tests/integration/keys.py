"""API keys stored in memory as the operator's techno-keys stores them (only the hash crosses the wire), for
tests that need callers: one helper instead of a CreateApiKey block in every fixture."""

from __future__ import annotations

from collections.abc import Sequence

from techno.memory.v1 import memory_pb2, memory_pb2_grpc
from techno_core.identity import Identity
from techno_gate.domain.keys import NewApiKey, generate_key
from tests.tls import connect


async def store_keys(
    memory_address: str, count: int = 1, *, name: str = "it", profile: str = "default", scopes: Sequence[str] = ()
) -> list[NewApiKey]:
    """``count`` new keys of ``profile`` holding ``scopes`` (none: memory's default), stored over one channel."""
    keys = [generate_key() for _ in range(count)]
    async with connect(memory_address, identity=Identity.OPERATOR, server=Identity.MEMORY) as channel:
        memory = memory_pb2_grpc.MemoryServiceStub(channel)
        for key in keys:
            await memory.CreateApiKey(
                memory_pb2.CreateApiKeyRequest(
                    key_id=key.key_id, prefix=key.prefix, key_hash=key.key_hash, name=name, profile=profile,
                    scopes=scopes,
                ),
                timeout=10,
            )  # fmt: skip
    return keys


async def store_key(
    memory_address: str, *, name: str = "it", profile: str = "default", scopes: Sequence[str] = ()
) -> NewApiKey:
    [key] = await store_keys(memory_address, name=name, profile=profile, scopes=scopes)
    return key
