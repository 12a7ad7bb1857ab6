"""The OpenAPI document against the real stack (memory, executor, gate and edge on loopback, in this process).

A Python client is generated from the document the edge serves (``openapi-python-client``, offline, into the
test's directory) and used as a client author would: it lists the actions, runs one, and reads a refusal as the
``Error`` model with its typed details. The scopes the document states (``techno_core.contract.METHOD_SCOPES``)
are checked against what the gate enforces, operation by operation, with the document's own examples as the
requests. A missing generator fails these tests; they never skip.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider

from techno_core.contract import API_KEY_SCOPES
from techno_edge.bootstrap import EdgeServer
from tests.integration.keys import store_key
from tests.integration.services import InProcess, migrated_sqlite
from tests.openapi_support import event_failures, parse_events
from tests.rest_errors import reasons_of, trace_id_of
from tests.waiting import eventually

POLICY = Path(__file__).resolve().parents[1] / "e2e" / "policy.yaml"
GENERATOR = Path(sys.executable).with_name("openapi-python-client")
_METHODS = ("get", "put", "post", "delete", "patch")
# Operations the scope check leaves out of its "allowed" half: their examples change the stack for the requests
# after them (a provider that fails one call in ten).
_DISTURBING = {"GateAdminService_SetProviderFaults"}


@dataclass
class Stack:
    edge: EdgeServer
    keys: dict[str, str]  # scope → the secret of a key with only that scope

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.edge.port}"


async def _known(url: str, secret: str) -> None:
    """Until the gate's key cache (refreshed every 0.5 s) knows the key: ListActions needs no scope."""
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:

        async def known() -> bool:
            return (await client.get("/v1/actions", headers={"X-API-Key": secret})).status_code != 401

        await eventually(known)


@pytest.fixture
async def stack(tmp_path: Path, tracer_provider: TracerProvider) -> AsyncIterator[Stack]:
    async with InProcess(tracer_provider) as start:
        memory = await start.memory(await migrated_sqlite(tmp_path / "memory.db"))
        executor = await start.executor(memory, executor_id="ex")
        gate = await start.gate(memory, executor, policy_file=POLICY)
        edge = await start.edge(gate)
        keys = {scope: (await store_key(memory.address, name=scope, scopes=[scope])).secret for scope in API_KEY_SCOPES}
        url = f"http://127.0.0.1:{edge.port}"
        for secret in keys.values():
            await _known(url, secret)
        yield Stack(edge, keys)


async def _served_document(stack: Stack) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=stack.url, timeout=5) as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def _generate(document: dict[str, Any], directory: Path) -> str:
    """Generates a client package from ``document`` under ``directory``; returns its (unique) package name."""
    assert GENERATOR.is_file(), f"{GENERATOR} is missing: `make setup` installs openapi-python-client"
    package = f"techno_client_{uuid.uuid4().hex[:8]}"  # unique: a second generation is a new module
    (directory / "openapi.json").write_text(json.dumps(document))
    (directory / "generator.yaml").write_text("post_hooks: []\n")  # no formatters to look for on PATH
    arguments = ["--path", str(directory / "openapi.json"), "--output-path", str(directory / package)]
    arguments += ["--meta", "none", "--config", str(directory / "generator.yaml")]
    result = subprocess.run(
        [str(GENERATOR), "generate", *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # A warning means a piece of the document was skipped: the client would silently lack it.
    assert "Warning" not in result.stdout + result.stderr, result.stdout + result.stderr
    return package


@pytest.fixture
def importable(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path`` on ``sys.path`` for the test, and the modules generated there forgotten after it (only those:
    what the stack imported meanwhile stays)."""
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


def _module(package: str, name: str) -> ModuleType:
    return importlib.import_module(f"{package}.{name}")


async def test_a_generated_client_lists_runs_and_reads_refusals(stack: Stack, importable: Path) -> None:
    package = _generate(await _served_document(stack), importable)
    client_module = _module(package, "client")
    list_actions = _module(package, "api.gate_service.gate_service_list_actions")
    process = _module(package, "api.gate_service.gate_service_process")
    request_model = _module(package, "models.techno_gate_v1_process_request").TechnoGateV1ProcessRequest
    error_model = _module(package, "models.error").Error

    client = client_module.AuthenticatedClient(
        base_url=stack.url, token=stack.keys["process"], prefix="", auth_header_name="X-API-Key"
    )
    async with client:
        listed = await list_actions.asyncio_detailed(client=client)
        assert listed.status_code == 200, listed.content
        assert {action.name for action in listed.parsed.actions} >= {"summarize", "chat"}

        summarize = {"action": "summarize", "contextId": "public-1", "payload": {"text": "governed by the gate"}}
        done = await process.asyncio_detailed(client=client, body=request_model.from_dict(summarize))
        assert done.status_code == 200, done.content
        assert done.parsed.status.value == "EXECUTION_STATUS_SUCCEEDED"
        assert done.parsed.trace_id == done.headers["x-trace-id"]
        assert done.parsed.usage.total_tokens > 0

        empty = {**summarize, "payload": {}}  # the action's input needs a text
        refused = await process.asyncio_detailed(client=client, body=request_model.from_dict(empty))
    assert refused.status_code == 400, refused.content
    error = refused.parsed
    assert isinstance(error, error_model)
    assert (error.error.code, error.error.status) == (400, "INVALID_ARGUMENT")
    info, bad_request = error.error.details
    assert type(info).__name__ == "GoogleRpcErrorInfo"
    assert info.reason == "PAYLOAD_INVALID"
    assert info.metadata.additional_properties["traceId"] == refused.headers["x-trace-id"]
    assert type(bad_request).__name__ == "GoogleRpcBadRequest"
    assert [v.field for v in bad_request.field_violations] == ["payload.text"]


async def test_a_generated_client_reads_an_unauthenticated_refusal(stack: Stack, importable: Path) -> None:
    package = _generate(await _served_document(stack), importable)
    client = _module(package, "client").AuthenticatedClient(
        base_url=stack.url, token="tk_00000000_unknown", prefix="", auth_header_name="X-API-Key"
    )
    list_actions = _module(package, "api.gate_service.gate_service_list_actions")
    async with client:
        refused = await list_actions.asyncio_detailed(client=client)
    assert refused.status_code == 401
    assert refused.parsed.error.status == "UNAUTHENTICATED"
    assert refused.parsed.error.details[0].reason == "API_KEY_INVALID"


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in _METHODS:
                yield method, path, operation


def _example_request(method: str, path: str, operation: dict[str, Any]) -> dict[str, Any]:
    """The operation's request as its examples spell it: path, query and body."""
    query: dict[str, Any] = {}
    for parameter in operation["parameters"]:
        if "example" in parameter and parameter["in"] == "path":
            path = path.replace("{" + parameter["name"] + "}", str(parameter["example"]))
        elif "example" in parameter and parameter["in"] == "query":
            query[parameter["name"]] = parameter["example"]
    request: dict[str, Any] = {"method": method.upper(), "url": path, "params": query}
    body = operation.get("requestBody")
    if body is not None:
        (example,) = body["content"]["application/json"]["examples"].values()
        request["json"] = example["value"]
    return request


def _reasons_and_trace_id(response: httpx.Response) -> tuple[list[str], str]:
    """An error's reasons and trace id: from the AIP-193 body, or from the OpenAI-compatible operations' OpenAI
    error object (``reason_codes``, ``trace_id``), as the document says."""
    if response.status_code < 400 or not response.headers["content-type"].startswith("application/json"):
        return [], ""
    error = response.json()["error"]
    if "details" not in error:
        return list(error["reason_codes"]), str(error["trace_id"])
    return reasons_of(error), trace_id_of(error)


async def test_the_documented_scope_of_every_operation_is_the_one_the_gate_enforces(stack: Stack) -> None:
    """With a key of each single scope, an operation is refused SCOPE_MISSING exactly when the key lacks the scope
    the document states (none: never refused for its scope)."""
    document = await _served_document(stack)
    mismatches: list[str] = []
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
        for method, path, operation in _operations(document):
            (wanted,) = operation["x-required-scopes"] or [""]
            for scope, secret in stack.keys.items():
                should_refuse = bool(wanted) and scope != wanted
                if not should_refuse and operation["operationId"] in _DISTURBING:
                    continue
                request = _example_request(method, path, operation)
                response = await client.request(**request, headers={"X-API-Key": secret})
                reasons, trace_id = _reasons_and_trace_id(response)
                refused = response.status_code == 403 and "SCOPE_MISSING" in reasons
                if refused != should_refuse:
                    mismatches.append(f"{operation['operationId']} with a {scope!r} key: {response.status_code}")
                if response.status_code >= 400 and response.headers["content-type"].startswith("application/json"):
                    assert trace_id == response.headers["x-trace-id"]
    assert not mismatches, mismatches


async def test_a_stream_sends_the_events_the_document_describes(stack: Stack) -> None:
    document = await _served_document(stack)
    operation = document["paths"]["/v1/process:stream"]["post"]
    request = _example_request("post", "/v1/process:stream", operation)
    headers = {"X-API-Key": stack.keys["process"], "Accept": "text/event-stream"}
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
        response = await client.request(**request, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_events(response.text)
    names = [event.get("event") for event in events]
    assert names[-1] == "done"
    assert names.count("chunk") >= 1, names
    stream = "/paths/~1v1~1process:stream/post/responses/200/content/text~1event-stream"
    found = event_failures(document, stream, events)
    assert not found, found
