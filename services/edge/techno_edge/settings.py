"""Configuration of the edge (``TECHNO_*`` environment variables)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from techno_core.settings import TechnoSettings

# The gate's public services, served by default at gate_target: the API and its admin side.
GATE_SERVICE = "techno.gate.v1.GateService"
GATE_SERVICES = (GATE_SERVICE, "techno.gate.v1.GateAdminService")
GATE_PROTO_MODULES = ("techno.gate.v1.gate_pb2", "techno.gate.v1.admin_pb2")


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


class EdgeSettings(TechnoSettings):
    edge_host: str = Field("127.0.0.1", description="Interface the HTTP server binds to.")
    edge_port: int = Field(8080, ge=0, le=65535, description="HTTP port of the edge (0 picks a free one).")
    gate_target: str = Field(
        "127.0.0.1:50051", description="gRPC address (host:port) of the gate; also probed by `/readyz`."
    )
    # NoDecode: the env value may be the plain comma-separated form, which pydantic-settings would otherwise try
    # (and fail) to decode as JSON before the validator below sees it.
    edge_upstreams: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description=(
            "Extra upstream gRPC services exposed over REST, as `<full service name>=<host:port>` pairs separated "
            "by commas (or a JSON object). The gate's `techno.gate.v1.GateService` and `GateAdminService` are "
            "always served, at `gate_target` unless listed here."
        ),
    )
    edge_proto_modules: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Python modules (comma-separated) to import so the extra upstreams' descriptors, with their "
            "`google.api.http` annotations, are in the protobuf descriptor pool."
        ),
    )
    edge_request_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="Deadline of every unary upstream gRPC call (streams: `TECHNO_EDGE_STREAM_TIMEOUT_SECONDS`). A "
        "client may lower it with `X-Request-Timeout: <seconds>`.",
    )
    edge_stream_timeout_seconds: float = Field(
        300.0,
        gt=0,
        description="Deadline of a streamed answer (Server-Sent Events, e.g. `POST /v1/process:stream`), its whole "
        "stream included: one still running then ends with an `error` event (DEADLINE_EXCEEDED). A client may lower "
        "it with `X-Request-Timeout`.",
    )
    edge_stream_keepalive_seconds: float = Field(
        15.0,
        gt=0,
        description="While a streamed answer waits for its next event, a comment line (`: keep-alive`) is sent this "
        "often, so proxies and clients do not close the quiet connection as idle.",
    )
    edge_max_body_bytes: int = Field(
        1_048_576, gt=0, description="Largest accepted request body; a larger one is answered 413."
    )
    edge_tls_cert_file: str = Field(
        "",
        description="PEM certificate (chain) the edge serves HTTPS with; with `TECHNO_EDGE_TLS_KEY_FILE`. Unset: "
        "plain HTTP (behind an ingress that terminates TLS, or on loopback).",
    )
    edge_tls_key_file: str = Field("", description="PEM private key of `TECHNO_EDGE_TLS_CERT_FILE`.")
    # Slow and abusive clients (techno_edge.entrypoints.slow_clients; docs/operations.md).
    edge_health_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Second HTTP listener serving only `/healthz`, `/readyz` and `/metrics`, with its own small "
        "connection budget, so probes and scrapes are answered while the main port is full of slow clients. "
        "Default: the HTTP port + 10 (8090), or a free port when the HTTP port is 0.",
    )
    edge_header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="Time a client has to send a request's line and headers, from the connection or the request's "
        "first byte; then it is answered 408 (nothing, if it sent nothing) and closed.",
    )
    edge_body_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="Time a client has to send a whole request body once its headers are in; then it is answered "
        "408 and closed (a body shorter than its Content-Length no longer hangs).",
    )
    edge_keep_alive_timeout_seconds: float = Field(
        5.0,
        gt=0,
        description="An idle keep-alive connection is closed after this long. Behind a load balancer, set it above "
        "the balancer's idle timeout.",
    )
    edge_max_connections: int = Field(
        1000,
        gt=0,
        description="Open client connections on the HTTP port; more are refused at once (503, closed). Must fit "
        "under the file descriptor limit with a reserve: the edge raises its soft limit if it can, else refuses "
        "to start.",
    )
    edge_max_header_bytes: int = Field(
        32_768,
        gt=0,
        description="Largest request target plus header names and values (4 bytes of framing each); over it, 431.",
    )
    edge_max_headers: int = Field(100, gt=0, description="Most header fields in one request; over it, 431.")
    edge_cors_allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Origins (comma-separated, e.g. `https://app.example.com`; `*` for any) whose browser pages may call "
            "the API: their CORS preflights are answered and responses to them carry "
            "`Access-Control-Allow-Origin`. Empty: CORS is off and `OPTIONS` is a 405."
        ),
    )

    edge_openai_context_id: str = Field(
        "openai",
        min_length=1,
        description="Context the policy is evaluated in for the OpenAI-compatible routes (`/v1/chat/completions`) "
        "when the request has no `X-Techno-Context` header.",
    )

    @field_validator("edge_upstreams", mode="before")
    @classmethod
    def _parse_upstreams(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value.lstrip().startswith("{"):
                return json.loads(value)
            value = _split(value)
        if isinstance(value, list | tuple):
            pairs: dict[str, str] = {}
            for item in value:
                service, separator, target = str(item).partition("=")
                if not separator or not service.strip() or not target.strip():
                    raise ValueError(f"upstream {item!r} is not of the form <full service name>=<host:port>")
                pairs[service.strip()] = target.strip()
            return pairs
        return value

    @field_validator("edge_proto_modules", "edge_cors_allowed_origins", mode="before")
    @classmethod
    def _parse_modules(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.lstrip().startswith("[") else _split(value)
        return value

    def upstreams(self) -> dict[str, str]:
        """Every served service and its target: the gate by default, then the configured extras."""
        return {**dict.fromkeys(GATE_SERVICES, self.gate_target), **self.edge_upstreams}

    def proto_modules(self) -> list[str]:
        return [*GATE_PROTO_MODULES, *(m for m in self.edge_proto_modules if m not in GATE_PROTO_MODULES)]

    @property
    def health_port(self) -> int:
        if self.edge_health_port is not None:
            return self.edge_health_port
        return self.edge_port + 10 if self.edge_port else 0
