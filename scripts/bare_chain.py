"""The bare chain ``make bench-compare`` measures the stack against: the same shape with no logic at all.

``http`` (uvicorn, raw ASGI) → ``a`` (grpc.aio) → ``b`` then ``c`` (grpc.aio), one small JSON body in and out,
like edge → gate → memory (append the decision), then executor. It is built from the same libraries and
transport as the shipped services, so the difference between the two is what Techno's own code costs:

- the gRPC hops are mutual TLS with the development PKI (``techno_stack.certs``), the servers' credentials and
  the clients' built by ``techno_core.tls`` exactly as the services build theirs, each process presenting the
  certificate of the service it stands in for (http: edge, a: gate, b: memory, c: executor);
- every process runs on uvloop, as every service does (``techno_core.runner``); the HTTP process runs uvicorn
  with the edge's settings: httptools, no lifespan, no access log, no proxy headers, no server header.

The messages are bytes (no protobuf): a handler receives the body and answers a fixed small JSON document.
Each role is one process: ``python scripts/bare_chain.py <role> --port P ...``; it prints ``READY`` on stdout
once it serves and stops on SIGTERM. ``--latency-ms`` makes ``c`` wait before answering, as the fake provider
does.

The *floor* is the same chain in the governed path's own shape, still with no logic: ``a --governed`` calls
``b``, then ``c``, then ``b`` again (the decision committed, the action, the outcome committed), and
``b --durable URL`` commits each body it receives to PostgreSQL before answering, one INSERT in autocommit (so
one WAL flush per call, as the server's synchronous_commit has it). No implementation of the governed path on
these libraries can be faster than it at one request at a time: it is what the P3 target is measured against.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import uvicorn
import uvloop

from techno_core.identity import Identity
from techno_core.server import PENDING_CALL_BOUNDS
from techno_core.tls import CertificateFiles, channel_credentials, server_credentials

METHOD = "/bare.v1.Chain/Call"
REPLY = b'{"result": {"summary": "Techno governs every AI action."}, "status": "SUCCEEDED"}'
CALL_TIMEOUT_SECONDS = 30.0  # the edge's default upstream deadline
# The identity each role presents, and the one the role it calls must present.
IDENTITIES = {"http": Identity.EDGE, "a": Identity.GATE, "b": Identity.MEMORY, "c": Identity.EXECUTOR}
CALLS = {"http": ["a"], "a": ["b", "c"], "b": [], "c": []}
GOVERNED = ["b", "c", "b"]  # what ``a --governed`` calls, in order: decision, action, outcome
# The floor's table in ``--durable``'s database, and its statements.
CREATE_APPENDS = "CREATE TABLE IF NOT EXISTS bare_chain_appends (id bigserial PRIMARY KEY, body bytea NOT NULL)"
INSERT_APPEND = "INSERT INTO bare_chain_appends (body) VALUES (%s)"

Call = Callable[[bytes], Awaitable[bytes]]


def certificate_files(tls_dir: Path, identity: Identity) -> CertificateFiles:
    return CertificateFiles(tls_dir / f"{identity}.crt", tls_dir / f"{identity}.key", tls_dir / "ca.crt")


def identity_channel(tls_dir: Path, address: str, *, server: Identity, as_: Identity) -> grpc.aio.Channel:
    """A mutual TLS channel to the service ``server`` at ``address``, presenting the certificate of ``as_`` from the
    development PKI in ``tls_dir`` (a stack's ``config.tls_dir``), as the services call each other."""
    options = [("grpc.ssl_target_name_override", server.value)]
    credentials = channel_credentials(certificate_files(tls_dir, as_).read())
    return grpc.aio.secure_channel(address, credentials, options=options)


def client(tls_dir: Path, address: str, *, server: Identity, as_: Identity) -> tuple[grpc.aio.Channel, Call]:
    """A mutual TLS channel to ``address`` and a unary call on it that sends and returns raw bytes."""
    channel = identity_channel(tls_dir, address, server=server, as_=as_)
    call = channel.unary_unary(METHOD, None, None)  # no serializers: bytes in, bytes out

    async def invoke(body: bytes) -> bytes:
        reply: bytes = await call(body, timeout=CALL_TIMEOUT_SECONDS)
        return reply

    return channel, invoke


async def serve_grpc(
    role: str, port: int, tls_dir: Path, downstream: list[str], *, latency_ms: int, governed: bool, durable: str
) -> None:
    """Role a (calls its downstream services one after the other: ``CALLS``, or ``GOVERNED``), b (answers at
    once, or after committing the body when ``durable`` names a database) or c (answers at once, or after
    ``latency_ms``)."""
    me = IDENTITIES[role]
    clients = {
        name: client(tls_dir, address, server=IDENTITIES[name], as_=me)
        for name, address in zip(CALLS[role], downstream, strict=True)
    }
    calls = [clients[name][1] for name in (GOVERNED if governed else CALLS[role])]
    async with contextlib.AsyncExitStack() as resources:
        commit = await resources.enter_async_context(committer(durable)) if durable else None

        async def handle(body: bytes, context: Any) -> bytes:
            reply = REPLY
            for call in calls:
                reply = await call(body)
            if commit is not None:
                await commit(body)
            if latency_ms:
                await asyncio.sleep(latency_ms / 1000)
            return reply

        handler = grpc.unary_unary_rpc_method_handler(handle)
        # grpc-core's bounds on calls waiting to be picked up, as the services set them: with the defaults, a
        # c=2,000 burst has calls cancelled by the library itself.
        server = grpc.aio.server(options=PENDING_CALL_BOUNDS)
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("bare.v1.Chain", {"Call": handler})])
        server.add_secure_port(f"127.0.0.1:{port}", server_credentials(certificate_files(tls_dir, me)))
        await server.start()
        await until_terminated()
        await server.stop(0)
    for channel, _ in clients.values():
        await channel.close(None)


@contextlib.asynccontextmanager
async def committer(url: str) -> AsyncIterator[Call]:
    """A call that commits its body to ``url``'s ``bare_chain_appends`` and returns once the commit is durable:
    one prepared INSERT in autocommit on one connection, the least a durable append costs (no chain, no lock)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True, prepare_threshold=0) as connection:
        await connection.execute(CREATE_APPENDS)

        async def commit(body: bytes) -> bytes:
            await connection.execute(INSERT_APPEND, (body,))
            return body

        yield commit


async def until_terminated() -> None:
    """Print READY, then wait for SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print("READY", flush=True)
    await stop.wait()


class Front:
    """The raw ASGI app: the request body to ``a``, its reply back as a 200 JSON response."""

    def __init__(self, call: Call) -> None:
        self.call = call

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        reply = await self.call(body)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(reply)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": reply})


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers, as the edge runs it: SIGTERM is this process's to handle."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_http(port: int, tls_dir: Path, downstream: list[str]) -> None:
    channel, call = client(tls_dir, downstream[0], server=IDENTITIES["a"], as_=IDENTITIES["http"])
    config = uvicorn.Config(
        Front(call),
        http="httptools",
        ws="none",
        lifespan="off",
        loop="none",
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
    )
    server = _Server(config)
    sock = socket.create_server(("127.0.0.1", port))
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    while not server.started:  # uvicorn has no start-up event to await (as in the edge's bootstrap)
        if task.done():
            task.result()
        await asyncio.sleep(0.005)
    await until_terminated()
    server.should_exit = True
    await task
    await channel.close(None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("role", choices=sorted(IDENTITIES))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls-dir", type=Path, required=True, help="the development PKI (techno_stack.certs)")
    parser.add_argument("--call", action="append", default=[], metavar="ADDRESS", help="downstream, in order")
    parser.add_argument("--latency-ms", type=int, default=0, help="wait before answering (role c)")
    parser.add_argument("--governed", action="store_true", help="role a calls b, c, then b again (the floor)")
    parser.add_argument("--durable", default="", metavar="URL", help="role b commits each body to this database")
    args = parser.parse_args()
    if len(args.call) != len(CALLS[args.role]):
        sys.exit(f"bare_chain: {args.role} calls {CALLS[args.role]}: give one --call each")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # the services' loop (techno_core.runner)
        if args.role == "http":
            runner.run(serve_http(args.port, args.tls_dir, args.call))
        else:
            served = serve_grpc(
                args.role, args.port, args.tls_dir, args.call,
                latency_ms=args.latency_ms, governed=args.governed, durable=args.durable,
            )  # fmt: skip
            runner.run(served)


if __name__ == "__main__":
    main()
