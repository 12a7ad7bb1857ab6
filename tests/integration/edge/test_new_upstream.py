"""A service the edge has never heard of, compiled from a test-only proto at test time, is served over REST and
documented in /openapi.json from its annotations alone: no edge code names it."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from techno_edge.bootstrap import bootstrap
from tests.rest_errors import field_violations_of

from .conftest import ECHO_MODULE, ECHO_SERVICE, GrpcUpstream, Seen, edge_settings, start_upstream


def _echo_servicer(echo_pb2: ModuleType, seen: Seen) -> Any:
    echo_grpc = importlib.import_module(ECHO_MODULE.replace("_pb2", "_pb2_grpc"))

    class Echo(echo_grpc.EchoServiceServicer):  # type: ignore[name-defined,misc]
        async def GetThing(self, request: Any, context: Any) -> Any:
            seen.requests.append(request)
            return echo_pb2.Thing(name=request.name, size=2**40, color=echo_pb2.COLOR_RED)

        async def DeleteThing(self, request: Any, context: Any) -> Any:
            seen.requests.append(request)
            return echo_pb2.Thing(name=request.name)

        async def CreateThing(self, request: Any, context: Any) -> Any:
            seen.requests.append(request)
            return request.thing

        async def UpdateThing(self, request: Any, context: Any) -> Any:
            seen.requests.append(request)
            return request.thing

        async def ListThings(self, request: Any, context: Any) -> Any:
            seen.requests.append(request)
            return echo_pb2.ListThingsResponse(echo=request.shelf)

        async def ReplaceThing(self, request: Any, context: Any) -> Any:
            seen.requests.append(request)
            return request

    return echo_grpc, Echo()


@pytest.fixture
async def echo(echo_pb2: ModuleType, tracer_provider: TracerProvider) -> AsyncIterator[GrpcUpstream]:
    def register(server: Any, seen: Seen) -> None:
        echo_grpc, servicer = _echo_servicer(echo_pb2, seen)
        echo_grpc.add_EchoServiceServicer_to_server(servicer, server)

    upstream = await start_upstream(tracer_provider, register)
    yield upstream
    await upstream.server.stop(None)


@pytest.fixture
async def echo_client(echo: GrpcUpstream, tracer_provider: TracerProvider) -> AsyncIterator[httpx.AsyncClient]:
    settings = edge_settings(
        echo.target, edge_upstreams=f"{ECHO_SERVICE}={echo.target}", edge_proto_modules=ECHO_MODULE
    )
    server = await bootstrap(settings, tracer_provider=tracer_provider, registry=CollectorRegistry())
    await server.start()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        yield http
    await server.stop()


async def test_get_with_patterned_path_variable(echo_client: httpx.AsyncClient, echo: GrpcUpstream) -> None:
    response = await echo_client.get("/v1/things/lamp%20one")
    assert response.status_code == 200
    assert response.json()["name"] == "things/lamp one"
    assert response.json()["size"] == str(2**40)  # int64 as a string
    assert response.json()["color"] == "COLOR_RED"
    assert (await echo_client.get("/v1/shelves/lamp")).status_code == 404  # "things/*" is part of the template


async def test_post_with_body_field_and_query(echo_client: httpx.AsyncClient, echo: GrpcUpstream) -> None:
    thing = {"name": "n", "size": "7", "created": "2024-05-01T12:00:00Z", "labels": {"a": [1, "b"]}, "tags": ["x"]}
    response = await echo_client.post("/v1/things", params={"requestId": "r-1"}, json=thing)
    assert response.status_code == 200
    assert response.json()["created"] == "2024-05-01T12:00:00Z"
    assert response.json()["labels"] == {"a": [1, "b"]}
    request = echo.seen.requests[-1]
    assert request.request_id == "r-1"
    assert request.thing.size == 7


async def test_patch_with_nested_path_variable_overriding_the_body(
    echo_client: httpx.AsyncClient, echo: GrpcUpstream
) -> None:
    response = await echo_client.patch(
        "/v1/things/t1", params={"validate_only": "true"}, json={"name": "ignored", "size": 3}
    )
    assert response.status_code == 200
    request = echo.seen.requests[-1]
    assert (request.thing.name, request.thing.size, request.validate_only) == ("things/t1", 3, True)


async def test_delete_and_put_body_star(echo_client: httpx.AsyncClient, echo: GrpcUpstream) -> None:
    assert (await echo_client.delete("/v1/things/t2")).json()["name"] == "things/t2"
    replaced = await echo_client.put("/v1/replace/r9", json={"name": "other", "tags": ["a", "b"], "counts": {"k": 2}})
    assert replaced.status_code == 200
    assert replaced.json()["name"] == "r9"
    assert replaced.json()["counts"] == {"k": 2}


async def test_query_parameters_fill_the_remaining_fields(echo_client: httpx.AsyncClient, echo: GrpcUpstream) -> None:
    query: list[tuple[str, str | int | float | bool | None]] = [
        ("page_size", "5"),
        ("tags", "a"),
        ("tags", "b"),
        ("deleted", "true"),
        ("filter.prefix", "p"),
    ]
    query.append(("filter.color", "COLOR_RED"))
    response = await echo_client.get("/v1/shelves/s1/things", params=query)
    assert response.status_code == 200
    assert response.json()["echo"] == "s1"
    request = echo.seen.requests[-1]
    assert (request.page_size, list(request.tags), request.deleted) == (5, ["a", "b"], True)
    assert (request.filter.prefix, request.filter.color) == ("p", 1)
    assert (await echo_client.get("/v1/things", params={"pageSize": "2"})).status_code == 200  # additional binding


@pytest.mark.parametrize(
    "query",
    [{"page_size": "many"}, {"nope": "1"}, {"deleted": "yes"}, {"shelf": "x"}, {"page_size": ["1", "2"]}],
)
async def test_bad_query_parameters_are_400(echo_client: httpx.AsyncClient, query: dict[str, Any]) -> None:
    response = await echo_client.get("/v1/shelves/s1/things", params=query)
    assert response.status_code == 400
    assert field_violations_of(response.json()["error"])


async def test_unknown_body_field_is_400(echo_client: httpx.AsyncClient) -> None:
    response = await echo_client.post("/v1/things", json={"name": "n", "colour": "red"})
    assert response.status_code == 400


async def test_openapi_documents_the_new_service(echo_client: httpx.AsyncClient) -> None:
    document = (await echo_client.get("/openapi.json")).json()
    validate(document)
    paths = document["paths"]
    assert {"get", "delete", "patch"} <= set(paths["/v1/{name}"]) | set(paths["/v1/{thing.name}"])
    get_thing = paths["/v1/{name}"]["get"]
    assert get_thing["parameters"][0]["schema"]["pattern"] == "^things/[^/]+$"
    listed = {p["name"] for p in paths["/v1/shelves/{shelf}/things"]["get"]["parameters"] if p.get("in") == "query"}
    assert listed == {"pageSize", "tags", "deleted", "filter.prefix", "filter.color"}
    assert "/v1/process" in paths
    thing = document["components"]["schemas"]["techno.testing.v1.Thing"]["properties"]
    # Optional fields admit null (proto3 JSON reads it as the default); unknown properties are refused.
    assert document["components"]["schemas"]["techno.testing.v1.Thing"]["additionalProperties"] is False
    assert thing["size"] == {"type": ["string", "null"], "format": "int64"}
    assert thing["created"] == {"type": ["string", "null"], "format": "date-time"}
    assert thing["labels"]["type"] == ["object", "null"]
    assert thing["tags"] == {"type": ["array", "null"], "items": {"type": "string"}}
    assert thing["counts"]["additionalProperties"]["type"] == "integer"
    assert thing["child"] == {"anyOf": [{"$ref": "#/components/schemas/techno.testing.v1.Thing"}, {"type": "null"}]}
    assert thing["color"] == {"anyOf": [{"$ref": "#/components/schemas/techno.testing.v1.Color"}, {"type": "null"}]}
    create_body = paths["/v1/things"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    # One field as the body: null (or no body) is that field's default.
    assert create_body == {"anyOf": [{"$ref": "#/components/schemas/techno.testing.v1.Thing"}, {"type": "null"}]}
