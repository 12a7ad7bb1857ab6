"""The edge serves HTTPS when given a certificate (uvicorn's TLS from files); without one it is plain HTTP."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider

from techno_core.identity import Identity
from techno_edge.bootstrap import EdgeServer, bootstrap
from techno_edge.settings import EdgeSettings
from tests.tls import as_identity, certificate_files, pki


@pytest.fixture
async def https_edge(tracer_provider: TracerProvider) -> AsyncIterator[EdgeServer]:
    # The gate is never called here: /healthz answers without it, and the channel to it is lazy.
    files = certificate_files(Identity.EDGE)
    settings = EdgeSettings(
        **as_identity(Identity.EDGE),
        edge_port=0,
        gate_target="127.0.0.1:9",
        edge_tls_cert_file=str(files.certificate),
        edge_tls_key_file=str(files.key),
    )
    server = await bootstrap(settings, tracer_provider=tracer_provider)
    await server.start()
    yield server
    await server.stop()


async def test_edge_answers_over_https_with_its_certificate(https_edge: EdgeServer) -> None:
    assert https_edge.url.startswith("https://")
    trusted = ssl.create_default_context(cafile=str(pki() / "ca.crt"))
    async with httpx.AsyncClient(verify=trusted) as client:
        response = await client.get(f"{https_edge.url}/healthz")
    assert response.status_code == 200
    assert response.extensions["network_stream"].get_extra_info("ssl_object").version().startswith("TLSv1.")


async def test_plain_http_to_the_https_edge_gets_no_answer(https_edge: EdgeServer) -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.HTTPError):
            await client.get(https_edge.url.replace("https://", "http://") + "/healthz")
