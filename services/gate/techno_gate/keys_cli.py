"""``techno-keys``: create, list and revoke API keys.

The key is generated here, printed once (and optionally written to a file readable only by its owner), and only
its SHA-256 hash is sent to the memory service.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc

from techno.memory.v1 import memory_pb2, memory_pb2_grpc
from techno_core.settings import MemoryClientSettings
from techno_gate.adapters.memory import key_record
from techno_gate.domain.keys import generate_key, hash_key

_TIMEOUT_SECONDS = 10.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="techno-keys", description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--memory", help="memory service address (default: $TECHNO_MEMORY_TARGET or 127.0.0.1:50053)")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="create a key and print it once")
    create.add_argument("--name", required=True, help="who or what the key is for")
    create.add_argument("--profile", default="default", help="governance profile (default: default)")
    create.add_argument("--output", type=Path, help="also write the key to this file (mode 0600)")
    commands.add_parser("list", help="list keys (prefix, id, name, profile, state)")
    revoke = commands.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id")
    check = commands.add_parser("check", help="exit 0 if the key in FILE is stored and not revoked")
    check.add_argument("file", type=Path)
    return parser


async def _create(stub: memory_pb2_grpc.MemoryServiceStub, args: argparse.Namespace) -> int:
    key = generate_key()
    request = memory_pb2.CreateApiKeyRequest(
        key_id=key.key_id, prefix=key.prefix, key_hash=key.key_hash, name=args.name, profile=args.profile
    )
    await stub.CreateApiKey(request, timeout=_TIMEOUT_SECONDS)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(key.secret + "\n")
    print(f"created {key.key_id} ({key.prefix}…) profile={args.profile}", file=sys.stderr)
    print(key.secret)
    return 0


async def _list(stub: memory_pb2_grpc.MemoryServiceStub) -> int:
    response = await stub.ListApiKeys(memory_pb2.ListApiKeysRequest(), timeout=_TIMEOUT_SECONDS)
    for key in map(key_record, response.api_keys):
        state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
        print(f"{key.prefix}…\t{key.key_id}\t{key.name}\t{key.profile}\t{state}")
    return 0


async def _revoke(stub: memory_pb2_grpc.MemoryServiceStub, key_id: str) -> int:
    await stub.RevokeApiKey(memory_pb2.RevokeApiKeyRequest(key_id=key_id), timeout=_TIMEOUT_SECONDS)
    print(f"revoked {key_id}")
    return 0


async def _check(stub: memory_pb2_grpc.MemoryServiceStub, secret: str) -> int:
    response = await stub.ListApiKeys(memory_pb2.ListApiKeysRequest(), timeout=_TIMEOUT_SECONDS)
    wanted = hash_key(secret)
    return 0 if any(k.key_hash == wanted and not k.HasField("revoked_at") for k in response.api_keys) else 1


async def _run(args: argparse.Namespace) -> int:
    target = args.memory or MemoryClientSettings().memory_target
    async with grpc.aio.insecure_channel(target) as channel:
        stub = memory_pb2_grpc.MemoryServiceStub(channel)
        if args.command == "create":
            return await _create(stub, args)
        if args.command == "list":
            return await _list(stub)
        if args.command == "check":
            return await _check(stub, args.secret)
        return await _revoke(stub, args.key_id)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        try:  # read before the event loop starts: the CLI does no blocking I/O inside it
            args.secret = args.file.read_text().strip()
        except OSError:
            return 1
    try:
        return asyncio.run(_run(args))
    except grpc.aio.AioRpcError as error:
        print(f"techno-keys: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1


def cli() -> None:
    sys.exit(main())


if __name__ == "__main__":
    cli()
