"""Configuration from ``TECHNO_*`` environment variables, one pydantic-settings class per service.

Settings shared by several services are mixins, so every service spells a shared variable the same way.
Every field has a description: ``scripts/settings_doc.py`` renders docs/configuration.md from them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# Every settings class, mixins included, carries this config: pydantic merges the configs of all bases, and a
# mixin left with BaseSettings' default (no prefix) would silently drop the TECHNO_ prefix.
TECHNO_CONFIG = SettingsConfigDict(env_prefix="TECHNO_", extra="ignore", frozen=True)

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
TraceExporter = Literal["none", "otlp", "console"]


class TechnoSettings(BaseSettings):
    """Base of every service's settings: the ``TECHNO_`` prefix and the observability options. Tracing is set by
    the standard ``OTEL_*`` variables, read in ``techno_core.tracing``; the two trace fields here are their
    deprecated spellings, still honoured."""

    model_config = TECHNO_CONFIG

    log_level: LogLevel = Field("INFO", description="Minimum level of the JSON logs written to stderr.")
    trace_exporter: TraceExporter | None = Field(
        None,
        description="Deprecated: set `OTEL_TRACES_EXPORTER` (`otlp`, `console` or `none`; default `none`), which "
        "wins when both are set. Tracing follows the standard `OTEL_*` variables (docs/operations.md).",
    )
    otlp_endpoint: str = Field(
        "",
        description="Deprecated: set `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, which "
        "win when set. Empty: the SDK's default, `http://localhost:4318/v1/traces`.",
    )
    shutdown_grace_seconds: float = Field(
        5.0, gt=0, description="On SIGTERM, how long in-flight calls may take to finish before they are cancelled."
    )
    tls_cert_file: str = Field(
        "",
        description="PEM certificate (chain) of this process's identity (URI SAN `spiffe://techno/<service>`), "
        "presented on every internal gRPC hop, as server and as client. Re-read when it changes.",
    )
    tls_key_file: str = Field("", description="PEM private key of `TECHNO_TLS_CERT_FILE`. Re-read when it changes.")
    tls_ca_file: str = Field(
        "",
        description="PEM bundle of the CAs that issue the deployment's identities; peers must present a "
        "certificate signed by one of them. Re-read when it changes.",
    )
    insecure_plaintext: bool = Field(
        False,
        description="Opt out of mutual TLS on the internal hops (no peer authentication, no authorization "
        "between services). Refused unless every listen address and target is loopback.",
    )


class MemoryClientSettings(BaseSettings):
    """Mixin for services that call the memory service."""

    model_config = TECHNO_CONFIG

    memory_target: str = Field("127.0.0.1:50053", description="gRPC address (host:port) of the memory service.")


class ExecutorClientSettings(BaseSettings):
    """Mixin for services that call the executor service."""

    model_config = TECHNO_CONFIG

    executor_target: str = Field("127.0.0.1:50052", description="gRPC address (host:port) of the executor service.")


class GrpcServerSettings(BaseSettings):
    """Mixin for the listen and metrics addresses of a gRPC service. Subclasses set the defaults."""

    model_config = TECHNO_CONFIG

    host: str = Field("127.0.0.1", description="Interface the gRPC and metrics servers bind to.")
    health_check_interval_seconds: float = Field(
        2.0, gt=0, description="How often the service probes its own dependencies to report gRPC health."
    )
    grpc_reflection: bool = Field(
        False, description="Serve gRPC server reflection (to authenticated peers), e.g. for grpcurl while debugging."
    )
    grpc_max_connection_age_seconds: float = Field(
        30.0,
        gt=0,
        description="Clients are asked to reconnect after this long (GOAWAY), so calls spread over replicas "
        "started since they connected.",
    )
