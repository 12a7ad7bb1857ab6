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
        description="Deadline of every upstream gRPC call. A client may lower it with `X-Request-Timeout: <seconds>`.",
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

    @field_validator("edge_proto_modules", mode="before")
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
