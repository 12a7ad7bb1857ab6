"""``techno-keys``: create, list and revoke API keys.

The key is generated here and printed once, or with ``--output`` only written to a file readable by its owner
alone (never printed: a tool's output often ends up in a log); only its SHA-256 hash is sent to the memory
service. Memory accepts key calls only from the gate and the operator
identity, so the CLI connects with mutual TLS as the operator: ``TECHNO_TLS_CERT_FILE``, ``TECHNO_TLS_KEY_FILE``
and ``TECHNO_TLS_CA_FILE`` name the operator's certificate (`make run` writes one to var/tls/operator.crt).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from opentelemetry.sdk.trace import TracerProvider

from techno.memory.v1 import memory_pb2, memory_pb2_grpc
from techno_core.errors import DomainError
from techno_core.identity import Identity
from techno_core.runner import StartupError
from techno_core.settings import MemoryClientSettings, TechnoSettings
from techno_core.timestamps import from_timestamp
from techno_core.transport import transport_from
from techno_gate.adapters.memory import MemoryKeyStore, key_record
from techno_gate.domain.keys import generate_key, hash_key
from techno_gate.domain.principal import Scope

_TIMEOUT_SECONDS = 10.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="techno-keys", description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--memory", help="memory service address (default: $TECHNO_MEMORY_TARGET or 127.0.0.1:50053)")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="create a key and print it once")
    create.add_argument("--name", required=True, help="who or what the key is for")
    create.add_argument("--profile", default="default", help="governance profile (default: default)")
    create.add_argument(
        "--scope", action="append", choices=[s.value for s in Scope], help="repeatable (default: process)"
    )
    create.add_argument("--expires-in-days", type=float, help="the key stops working after this many days")
    create.add_argument("--output", type=Path, help="write the key to this file (mode 0600) instead of printing it")
    commands.add_parser("list", help="list keys (prefix, id, name, profile, scopes, state)")
    revoke = commands.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id")
    rotate = commands.add_parser("rotate", help="new key with the same attributes; the old one is revoked")
    rotate.add_argument("key_id")
    rotate.add_argument("--output", type=Path, help="write the new key to this file (mode 0600), not print it")
    check = commands.add_parser("check", help="exit 0 if the key in FILE is stored and not revoked")
    check.add_argument("file", type=Path)
    return parser


def _save(path: Path | None, secret: str) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(secret + "\n")


async def _create_key(
    stub: memory_pb2_grpc.MemoryServiceStub,
    *,
    name: str,
    profile: str,
    scopes: list[str],
    expires_at: datetime | None,
    output: Path | None,
) -> str:
    key = generate_key()
    store = MemoryKeyStore(stub, timeout_seconds=_TIMEOUT_SECONDS)
    await store.create(key, name=name, profile=profile, scopes=tuple(scopes), expires_at=expires_at)
    _save(output, key.secret)
    print(f"created {key.key_id} ({key.prefix}…) profile={profile} scopes={','.join(scopes)}", file=sys.stderr)
    if output is None:  # written to the file only: the output of a tool often ends up in a log
        print(key.secret)
    else:
        print(f"the key is in {output}", file=sys.stderr)
    return key.key_id


async def _create(stub: memory_pb2_grpc.MemoryServiceStub, args: argparse.Namespace) -> int:
    expires_at = None
    if args.expires_in_days is not None:
        expires_at = datetime.now(UTC) + timedelta(days=args.expires_in_days)
    scopes = sorted(set(args.scope or [Scope.PROCESS.value]))
    await _create_key(
        stub, name=args.name, profile=args.profile, scopes=scopes, expires_at=expires_at, output=args.output
    )
    return 0


async def _rotate(stub: memory_pb2_grpc.MemoryServiceStub, args: argparse.Namespace) -> int:
    """The new key is stored before the old one is revoked, so its holder is never left without one."""
    response = await stub.ListApiKeys(memory_pb2.ListApiKeysRequest(), timeout=_TIMEOUT_SECONDS)
    old = next((k for k in response.api_keys if k.key_id == args.key_id), None)
    if old is None or old.HasField("revoked_at"):
        print(f"techno-keys: no active key {args.key_id}", file=sys.stderr)
        return 1
    await _create_key(
        stub,
        name=old.name,
        profile=old.profile,
        scopes=list(old.scopes),
        expires_at=from_timestamp(old, "expires_at"),
        output=args.output,
    )
    return await _revoke(stub, args.key_id)


async def _list(stub: memory_pb2_grpc.MemoryServiceStub) -> int:
    response = await stub.ListApiKeys(memory_pb2.ListApiKeysRequest(), timeout=_TIMEOUT_SECONDS)
    for key in map(key_record, response.api_keys):
        state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
        if key.expires_at and not key.revoked_at:
            state += f" until {key.expires_at:%Y-%m-%d %H:%M}"
        scopes = ",".join(sorted(key.scopes))
        print(f"{key.prefix}…\t{key.key_id}\t{key.name}\t{key.profile}\t{scopes}\t{state}")
    return 0


async def _revoke(stub: memory_pb2_grpc.MemoryServiceStub, key_id: str) -> int:
    await stub.RevokeApiKey(memory_pb2.RevokeApiKeyRequest(key_id=key_id), timeout=_TIMEOUT_SECONDS)
    print(f"revoked {key_id}")
    return 0


async def _check(stub: memory_pb2_grpc.MemoryServiceStub, secret: str) -> int:
    response = await stub.ListApiKeys(memory_pb2.ListApiKeysRequest(), timeout=_TIMEOUT_SECONDS)
    wanted = hash_key(secret)
    return 0 if any(k.key_hash == wanted and not k.HasField("revoked_at") for k in response.api_keys) else 1


class KeysCliSettings(TechnoSettings, MemoryClientSettings):
    """The operator's transport settings and the memory address, from the same ``TECHNO_*`` variables."""


async def _run(args: argparse.Namespace) -> int:
    settings = KeysCliSettings()
    target = args.memory or settings.memory_target
    transport = transport_from(settings, targets=[target])
    async with transport.channel(target, TracerProvider(), Identity.MEMORY) as channel:
        stub = memory_pb2_grpc.MemoryServiceStub(channel)
        if args.command == "create":
            return await _create(stub, args)
        if args.command == "list":
            return await _list(stub)
        if args.command == "check":
            return await _check(stub, args.secret)
        if args.command == "rotate":
            return await _rotate(stub, args)
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
    except (DomainError, StartupError) as error:
        print(f"techno-keys: {error}", file=sys.stderr)
        return 1


def cli() -> None:
    sys.exit(main())


if __name__ == "__main__":
    cli()
