"""Real servers on loopback port 0: a scripted gRPC gate (the real one is not needed to test translation), a
test-only proto compiled at test time, and the real edge in front of them."""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import grpc_tools
import httpx
import pytest
from google.api import annotations_pb2
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_status import rpc_status
from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from techno.gate.v1 import gate_pb2, gate_pb2_grpc
from techno_core.health import LIVENESS
from techno_core.identity import Identity
from techno_edge.bootstrap import EdgeServer, bootstrap
from techno_edge.settings import EdgeSettings
from tests.tls import add_port, as_identity

ECHO_MODULE = "edge_echo_testing.echo_pb2"
ECHO_SERVICE = "techno.testing.v1.EchoService"
ECHO_PROTO = """
syntax = "proto3";
package techno.testing.v1;

import "google/api/annotations.proto";
import "google/protobuf/struct.proto";
import "google/protobuf/timestamp.proto";

service EchoService {
  rpc GetThing(GetThingRequest) returns (Thing) {
    option (google.api.http) = {get: "/v1/{name=things/*}"};
  }
  rpc CreateThing(CreateThingRequest) returns (Thing) {
    option (google.api.http) = {post: "/v1/things" body: "thing"};
  }
  rpc UpdateThing(UpdateThingRequest) returns (Thing) {
    option (google.api.http) = {patch: "/v1/{thing.name=things/*}" body: "thing"};
  }
  rpc DeleteThing(GetThingRequest) returns (Thing) {
    option (google.api.http) = {delete: "/v1/{name=things/*}"};
  }
  rpc ListThings(ListThingsRequest) returns (ListThingsResponse) {
    option (google.api.http) = {get: "/v1/shelves/{shelf}/things" additional_bindings {get: "/v1/things"}};
  }
  rpc ReplaceThing(Thing) returns (Thing) {
    option (google.api.http) = {put: "/v1/replace/{name}" body: "*"};
  }
}

enum Color { COLOR_UNSPECIFIED = 0; COLOR_RED = 1; }

message Thing {
  string name = 1;
  int64 size = 2;
  Color color = 3;
  google.protobuf.Timestamp created = 4;
  google.protobuf.Struct labels = 5;
  repeated string tags = 6;
  map<string, int32> counts = 7;
  Thing child = 8;
}
message GetThingRequest { string name = 1; }
message CreateThingRequest { Thing thing = 1; string request_id = 2; }
message UpdateThingRequest { Thing thing = 1; bool validate_only = 2; }
message Filter { string prefix = 1; Color color = 2; }
message ListThingsRequest {
  string shelf = 1;
  int32 page_size = 2;
  repeated string tags = 3;
  bool deleted = 4;
  Filter filter = 5;
}
message ListThingsResponse { repeated Thing things = 1; string echo = 2; }
"""


@pytest.fixture(scope="session")
def echo_pb2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """Compiled once per session: its descriptors join the process-wide pool, which cannot take them twice."""
    from grpc_tools import protoc

    root = tmp_path_factory.mktemp("protos")
    source = root / "edge_echo_testing" / "echo.proto"
    source.parent.mkdir()
    source.write_text(ECHO_PROTO)
    googleapis = Path(annotations_pb2.__file__).parents[2]  # site-packages, holding google/api/*.proto
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = ["protoc", f"-I{root}", f"-I{googleapis}", f"-I{well_known}", f"--python_out={root}"]
    args += [f"--grpc_python_out={root}", str(source.relative_to(root))]
    assert protoc.main(args) == 0
    sys.path.insert(0, str(root))
    yield importlib.import_module(ECHO_MODULE)
    sys.path.remove(str(root))


@dataclass
class Seen:
    """What the scripted gate received, for assertions."""

    metadata: list[dict[str, str]] = field(default_factory=list)
    time_remaining: list[float | None] = field(default_factory=list)
    requests: list[Any] = field(default_factory=list)
    # Streams: the test lets a held stream go on, and sees a stream the client left end cancelled.
    release: asyncio.Event = field(default_factory=asyncio.Event)
    stream_cancelled: asyncio.Event = field(default_factory=asyncio.Event)


def _status(code: grpc.StatusCode, *, reason: str = "TEST_REASON", violations: bool = False) -> status_pb2.Status:
    from google.protobuf import any_pb2

    def pack(message: Any) -> any_pb2.Any:
        packed = any_pb2.Any()
        packed.Pack(message)
        return packed

    details = [pack(error_details_pb2.ErrorInfo(reason=reason, domain="techno.dev"))]
    if violations:
        violation = error_details_pb2.BadRequest.FieldViolation(field="payload.text", description="is required")
        details.append(pack(error_details_pb2.BadRequest(field_violations=[violation])))
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        details.append(
            pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=1, nanos=500_000_000)))
        )
    return status_pb2.Status(code=code.value[0], message=f"scripted {code.name}", details=details)


class ScriptedGate(gate_pb2_grpc.GateServiceServicer):
    """``action`` scripts the answer: "ok", "error:<CODE>", "hang" (until cancelled by the deadline)."""

    def __init__(self, seen: Seen) -> None:
        self.seen = seen

    def _record(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self.seen.requests.append(request)
        self.seen.metadata.append({k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)})
        self.seen.time_remaining.append(context.time_remaining())

    async def Process(self, request: gate_pb2.ProcessRequest, context: Any) -> gate_pb2.ProcessResponse:
        self._record(request, context)
        if request.action.startswith("error:"):
            code = grpc.StatusCode[request.action.removeprefix("error:")]
            status = _status(code, violations=code == grpc.StatusCode.INVALID_ARGUMENT)
            await context.abort_with_status(rpc_status.to_status(status))
        if request.action == "hang":
            await asyncio.Event().wait()
        result: dict[str, Any] = {"echo": dict(request.payload), "context": request.context_id}
        response = gate_pb2.ProcessResponse(
            trace_id="from-gate",
            status=gate_pb2.EXECUTION_STATUS_SUCCEEDED,
            provider="fake",
            usage=gate_pb2.TokenUsage(input_tokens=3, output_tokens=4, total_tokens=7),
            execution_time_ms=12,
        )
        response.result.update(result)
        return response

    async def StreamProcess(self, request: gate_pb2.StreamProcessRequest, context: Any) -> AsyncIterator[Any]:
        """``request.action`` scripts the stream: "error:<CODE>" (refused before any chunk), "chunks:<n>" (n chunks,
        then held until ``seen.release``, then done), "flood:<n>" (the same with chunks of 64 KiB), "fail:<CODE>"
        (a chunk, then that error), "hold" (a chunk, then nothing until cancelled or released)."""
        self._record(request, context)
        action = request.request.action
        kind, _, argument = action.partition(":")
        if kind == "error":
            await context.abort_with_status(rpc_status.to_status(_status(grpc.StatusCode[argument])))
        try:
            for n in range(int(argument) if kind in ("chunks", "flood") else 1):
                text = "x" * 65536 if kind == "flood" else f"part {n} "
                yield gate_pb2.StreamProcessResponse(trace_id="from-gate", chunk=gate_pb2.TextChunk(text=text))
            if kind == "fail":
                await context.abort_with_status(rpc_status.to_status(_status(grpc.StatusCode[argument])))
            await self.seen.release.wait()
        except asyncio.CancelledError:
            self.seen.stream_cancelled.set()
            raise
        done = gate_pb2.ProcessResponse(trace_id="from-gate", status=gate_pb2.EXECUTION_STATUS_SUCCEEDED)
        done.result.update({"text": "whole answer"})
        yield gate_pb2.StreamProcessResponse(trace_id="from-gate", done=done)

    async def ListActions(self, request: gate_pb2.ListActionsRequest, context: Any) -> gate_pb2.ListActionsResponse:
        self._record(request, context)
        return gate_pb2.ListActionsResponse(
            actions=[gate_pb2.Action(name="summarize", description="Summarize text")], policy_version="v1"
        )


@dataclass
class GrpcUpstream:
    target: str
    health: HealthServicer
    seen: Seen
    server: grpc.aio.Server


async def start_upstream(tracer_provider: TracerProvider, register: Any = None) -> GrpcUpstream:
    seen = Seen()
    # Health is not traced, as in the services (techno_core.interceptors): the instrumentation breaks Health/Watch,
    # which the edge's channel calls for client-side health checking.
    tracing = aio_server_interceptor(tracer_provider=tracer_provider, filter_=filters.negate(filters.health_check()))  # type: ignore[no-untyped-call]
    server = grpc.aio.server(interceptors=[tracing])
    gate_pb2_grpc.add_GateServiceServicer_to_server(ScriptedGate(seen), server)
    if register is not None:
        register(server, seen)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    await health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)  # the edge's channel balances on it
    # With the gate's certificate: the edge checks that its gate is the gate (an extra upstream, by address).
    port = add_port(server, Identity.GATE)
    await server.start()
    return GrpcUpstream(f"127.0.0.1:{port}", health, seen, server)


@pytest.fixture
async def gate(tracer_provider: TracerProvider) -> AsyncIterator[GrpcUpstream]:
    upstream = await start_upstream(tracer_provider)
    yield upstream
    await upstream.server.stop(None)


def edge_settings(gate_target: str, **overrides: Any) -> EdgeSettings:
    values: dict[str, Any] = {
        **as_identity(Identity.EDGE),
        "gate_target": gate_target,
        "edge_port": 0,
        "edge_request_timeout_seconds": 5.0,
        "edge_max_body_bytes": 1024,
        "shutdown_grace_seconds": 1.0,
        **overrides,
    }
    return EdgeSettings(**values)


@pytest.fixture
async def edge(gate: GrpcUpstream, tracer_provider: TracerProvider) -> AsyncIterator[EdgeServer]:
    server = await bootstrap(edge_settings(gate.target), tracer_provider=tracer_provider, registry=CollectorRegistry())
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client(edge: EdgeServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=edge.url, timeout=10) as http:
        yield http
