"""The OpenAPI document of the gate's routes, built offline: valid, described from the proto comments, with an
example that fits its own schema, the scope and the error responses on every operation, and the error schema
matching the bodies the edge renders."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, message_factory
from openapi_spec_validator import validate

from techno.gate.v1 import admin_pb2, gate_pb2
from techno_core.contract import API_KEY_SCOPES, METHOD_SCOPES
from techno_edge.adapters import openapi_openai
from techno_edge.adapters.bindings import Binding, load_bindings
from techno_edge.adapters.openapi import build_openapi
from techno_edge.adapters.openapi_errors import RESPONSES
from techno_edge.adapters.openapi_examples import Examples
from techno_edge.adapters.proto_docs import PACKAGED, ProtoDocs
from techno_edge.domain import errors
from techno_edge.domain.openai_chat import (
    ChunkWriter,
    Completion,
    Usage,
    completion_body,
    error_body,
    model_body,
    model_not_found,
    models_body,
    parse_chat_request,
)
from techno_edge.domain.templates import parse_template
from techno_edge.settings import GATE_SERVICES
from tests.openapi_support import escape, event_failures, failures, parse_events

_METHODS = ("get", "put", "post", "delete", "patch")
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture(scope="module")
def bindings() -> list[Binding]:
    return load_bindings(GATE_SERVICES)


@pytest.fixture(scope="module")
def document(bindings: list[Binding]) -> dict[str, Any]:
    return build_openapi(bindings)


def _operations(document: dict[str, Any], *, openai: bool = False) -> dict[str, tuple[str, dict[str, Any]]]:
    """operationId → (JSON pointer of the operation, the operation): the gRPC bindings' operations, or with
    ``openai`` the hand-described OpenAI-compatible ones."""
    return {
        operation["operationId"]: (f"/paths/{escape(path)}/{method}", operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in _METHODS and (openapi_openai.TAG in operation["tags"]) is openai
    }


def _assert_fits(document: dict[str, Any], pointer: str, value: Any) -> None:
    found = failures(document, pointer, value)
    assert not found, found


def _assert_stream_example_fits(document: dict[str, Any], pointer: str, example: str) -> None:
    events = parse_events(example)
    assert [event["event"] for event in events][-1] == "done"
    found = event_failures(document, pointer, events)
    assert not found, found


def _streaming_binding() -> Binding:
    """StreamProcess bound as its annotation says, whether or not this edge's bindings serve streams yet."""
    method = gate_pb2.DESCRIPTOR.services_by_name["GateService"].methods_by_name["StreamProcess"]
    return Binding(
        service="techno.gate.v1.GateService",
        method=method,
        http_method="POST",
        template=parse_template("/v1/process:stream"),
        body="request",
        response_body="",
        path_fields={},
        request_class=message_factory.GetMessageClass(method.input_type),
        response_class=message_factory.GetMessageClass(method.output_type),
    )


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    validate(document)
    assert document["openapi"] == "3.1.0"
    assert document["servers"] == [{"url": "/", "description": document["servers"][0]["description"]}]


def test_every_gate_method_has_one_scope_in_the_table() -> None:
    services = [
        gate_pb2.DESCRIPTOR.services_by_name["GateService"],
        admin_pb2.DESCRIPTOR.services_by_name["GateAdminService"],
    ]
    methods = {method.full_name for service in services for method in service.methods}
    assert set(METHOD_SCOPES) == methods
    assert set(METHOD_SCOPES.values()) <= {"", *API_KEY_SCOPES}


def test_every_operation_is_described_scoped_and_lists_the_errors(
    document: dict[str, Any], bindings: list[Binding]
) -> None:
    methods = {binding.operation_id: binding.method for binding in bindings}
    docs = ProtoDocs.packaged()
    for operation_id, (_, operation) in _operations(document).items():
        method = methods[operation_id]
        comment = docs.of(method.full_name)
        assert comment, f"{method.full_name} has no proto comment"
        assert operation["description"].startswith(comment)
        assert operation["summary"] in " ".join(comment.split())
        assert not operation["summary"].endswith(".")
        scope = METHOD_SCOPES[method.full_name]
        scopes = [scope] if scope else []
        assert operation["x-required-scopes"] == scopes, operation_id
        assert operation["security"] == [{"ApiKeyAuth": scopes}, {"BearerAuth": scopes}]
        assert (f"`{scope}`" if scope else "none") in operation["description"]
        assert {k: v["$ref"] for k, v in operation["responses"].items() if k != "200"} == {
            status: f"#/components/responses/{name}" for status, (name, _) in RESPONSES.items()
        }


def test_every_operation_has_examples_that_fit_their_schemas(document: dict[str, Any]) -> None:
    operations = _operations(document)
    assert set(Examples.packaged().operations) >= set(operations)  # SetProviderFaults … included
    for operation_id, (pointer, operation) in operations.items():
        ((media_type, success),) = operation["responses"]["200"]["content"].items()
        (example,) = success["examples"].values()
        media_type_pointer = f"{pointer}/responses/200/content/{escape(media_type)}"
        if media_type == "text/event-stream":
            _assert_stream_example_fits(document, media_type_pointer, example["value"])
        else:
            _assert_fits(document, f"{media_type_pointer}/schema", example["value"])
        body = operation.get("requestBody")
        if body is not None:
            (example,) = body["content"]["application/json"]["examples"].values()
            _assert_fits(document, f"{pointer}/requestBody/content/application~1json/schema", example["value"])
        for index, parameter in enumerate(operation["parameters"]):
            if "$ref" not in parameter:
                assert parameter["in"] == "query" or "example" in parameter, (operation_id, parameter["name"])
                if "example" in parameter:
                    _assert_fits(document, f"{pointer}/parameters/{index}/schema", parameter["example"])


def test_every_error_response_has_an_example_of_the_error_schema(document: dict[str, Any]) -> None:
    names = {name for name, _ in RESPONSES.values()}
    for name, response in document["components"]["responses"].items():
        (example,) = response["content"]["application/json"]["examples"].values()
        schema = "/components/schemas/Error" if name in names else "/components/schemas/OpenAI.Error"
        _assert_fits(document, schema, example["value"])
    assert set(document["components"]["responses"]) == {*names, "OpenAI.Error"}


def test_an_example_that_breaks_its_schema_is_caught(document: dict[str, Any]) -> None:
    pointer, _ = _operations(document)["GateService_Process"]
    schema = f"{pointer}/requestBody/content/application~1json/schema"
    assert failures(document, schema, {"action": "summarize", "payload": {}})  # no contextId
    assert failures(document, "/components/schemas/Error", {"error": {"code": 400}})


@pytest.mark.parametrize(
    "error",
    [
        errors.invalid_argument("bad", errors.Violation("payload.text", "required")),
        errors.not_found(),
        errors.HttpError(
            429,
            "RESOURCE_EXHAUSTED",
            "rate limit",
            ("RATE_LIMITED",),
            retry_after_seconds=2,
            quota_violations=(errors.Violation("key", "60 per minute"),),
        ),
        errors.HttpError(503, "UNAVAILABLE", "down", details=({"@type": errors.RETRY_INFO, "retryDelay": "1.500s"},)),
    ],
)
def test_the_error_bodies_the_edge_renders_fit_the_error_schema(
    document: dict[str, Any], error: errors.HttpError
) -> None:
    _assert_fits(document, "/components/schemas/Error", error.body(TRACE_ID))


def test_proto_comments_describe_tags_schemas_fields_and_enum_values(document: dict[str, Any]) -> None:
    tags = {tag["name"]: tag.get("description", "") for tag in document["tags"]}
    assert tags["GateService"].startswith("GateService is the governed, public entry point")
    assert tags["GateAdminService"].startswith("GateAdminService manages API keys")
    schemas = document["components"]["schemas"]
    request = schemas["techno.gate.v1.ProcessRequest"]
    assert request["description"] == "ProcessRequest asks for one action to be run."
    assert "PROVIDER_NOT_ALLOWED" in request["properties"]["provider"]["description"]
    reasons = schemas["techno.gate.v1.ReasonCode"]
    assert "- `REASON_CODE_SCOPE_MISSING`: The credentials lack the scope this method needs." in reasons["description"]
    assert len(reasons["x-enum-descriptions"]) == len(reasons["enum"])
    reason = schemas["google.rpc.ErrorInfo"]["properties"]["reason"]["description"]
    assert "- `SCOPE_MISSING`: The credentials lack the scope this method needs." in reason
    assert "`ALLOWED`" not in reason  # an audit-trail reason, never an error's


def test_a_field_keeps_its_contract_description_after_its_comment(document: dict[str, Any]) -> None:
    parameters = _operations(document)["GateAdminService_ListAuditEvents"][1]["parameters"]
    page_size = next(p for p in parameters if p.get("name") == "pageSize")
    assert page_size["description"].startswith("At most this many events per page")
    assert "1000 at most" in page_size["schema"]["description"]


@pytest.mark.parametrize(
    ("operation_id", "required"),
    [
        ("GateService_Process", True),  # action, contextId and payload are required
        ("GateAdminService_CreateApiKey", True),
        ("GateService_CreateSession", False),  # nothing to send
        ("GateService_UpdatePreferences", False),  # no body is empty preferences, which the server accepts
        ("GateAdminService_DryRun", False),  # the dry run explains an empty request, with 200
    ],
)
def test_a_body_is_required_when_its_absence_is_refused(
    document: dict[str, Any], operation_id: str, required: bool
) -> None:
    assert _operations(document)[operation_id][1]["requestBody"]["required"] is required


def test_a_server_stream_is_documented_as_server_sent_events(bindings: list[Binding]) -> None:
    others = [b for b in bindings if b.method.name != "StreamProcess"]
    document = build_openapi([*others, _streaming_binding()])
    validate(document)
    operation = document["paths"]["/v1/process:stream"]["post"]
    assert operation["x-required-scopes"] == ["process"]
    body = operation["requestBody"]
    assert body["required"] is True
    assert body["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/techno.gate.v1.ProcessRequest"
    stream = operation["responses"]["200"]["content"]["text/event-stream"]
    events = [a["properties"]["event"]["const"] for a in stream["schema"]["oneOf"] if a.get("type") == "object"]
    assert events == ["chunk", "done", "error"]
    assert stream["schema"]["oneOf"][-1]["type"] == "string"  # the whole stream, as a generated client reads it
    for event in events:
        assert f"`{event}`" in stream["schema"]["description"]
    (example,) = stream["examples"].values()
    assert example["value"].startswith("event: chunk\ndata: {")
    _assert_stream_example_fits(
        document, "/paths/~1v1~1process:stream/post/responses/200/content/text~1event-stream", example["value"]
    )
    wrong = [{"event": "chunk", "data": '{"done": {"traceId": 5}}'}, {"event": "progress", "data": "{}"}]
    assert (
        len(
            event_failures(document, "/paths/~1v1~1process:stream/post/responses/200/content/text~1event-stream", wrong)
        )
        >= 2
    )
    assert "techno.gate.v1.StreamProcessResponse" in document["components"]["schemas"]


def test_without_source_info_the_document_is_still_valid_only_less_helpful(bindings: list[Binding]) -> None:
    files = descriptor_pb2.FileDescriptorSet()
    gate_pb2.DESCRIPTOR.CopyToProto(files.file.add())  # a _pb2 module's descriptor has no comments
    docs = ProtoDocs.from_descriptor_set(files.SerializeToString())
    assert len(docs) == 0
    document = build_openapi(bindings, docs=docs, examples=Examples())
    validate(document)
    operation = _operations(document)["GateService_Process"][1]
    assert operation["summary"] == "techno.gate.v1.GateService.Process"
    assert "examples" not in operation["requestBody"]["content"]["application/json"]


def test_the_packaged_descriptor_set_carries_the_comments() -> None:
    docs = ProtoDocs.packaged()
    assert PACKAGED == ("techno", "descriptors.binpb")
    assert docs.of("techno.gate.v1.GateService.ListModels").startswith("ListModels lists the providers")
    assert docs.of("techno.gate.v1.ReasonCode.REASON_CODE_ALLOWED") == "The request passed every check."
    assert docs.of("techno.executor.v1.FaultProfile")  # every proto of the repository, not only the gate's
    assert docs.of("techno.gate.v1.NoSuchMessage") == ""


# The OpenAI-compatible operations, described by hand (techno_edge.adapters.openapi_openai).

_OPENAI = {
    "OpenAI_CreateChatCompletion": ("/v1/chat/completions", "post", "techno.gate.v1.GateService.Process"),
    "OpenAI_ListModels": ("/v1/models", "get", "techno.gate.v1.GateService.ListModels"),
    "OpenAI_RetrieveModel": ("/v1/models/{model}", "get", "techno.gate.v1.GateService.ListModels"),
}
_CHAT_REQUEST = "/components/schemas/OpenAI.ChatCompletionRequest"


def test_the_openai_routes_are_documented_with_the_scope_of_the_gate_method_they_call(
    document: dict[str, Any],
) -> None:
    operations = _operations(document, openai=True)
    assert set(operations) == set(_OPENAI)
    assert {"name": openapi_openai.TAG, "description": openapi_openai.TAG_DESCRIPTION} in document["tags"]
    for operation_id, (path, method, grpc_method) in _OPENAI.items():
        pointer, operation = operations[operation_id]
        assert pointer == f"/paths/{escape(path)}/{method}"
        assert operation["tags"] == [openapi_openai.TAG]
        assert operation["summary"]
        assert not operation["summary"].endswith(".")
        scope = METHOD_SCOPES[grpc_method]
        scopes = [scope] if scope else []
        assert operation["x-required-scopes"] == scopes, operation_id
        assert operation["security"] == [{"ApiKeyAuth": scopes}, {"BearerAuth": scopes}]
        assert (f"`{scope}`" if scope else "none") in operation["description"]
        errors_ = {k: v["$ref"] for k, v in operation["responses"].items() if k != "200"}
        assert set(errors_.values()) == {"#/components/responses/OpenAI.Error"}  # OpenAI's shape, not AIP-193
        assert {"400", "401", "403", "404", "429", "5XX"} <= set(errors_)


def test_the_openai_examples_fit_their_schemas(document: dict[str, Any]) -> None:
    for pointer, operation in _operations(document, openai=True).values():
        for media_type, content in operation["responses"]["200"]["content"].items():
            (example,) = content["examples"].values()
            media_pointer = f"{pointer}/responses/200/content/{escape(media_type)}"
            if media_type == "text/event-stream":
                _assert_openai_stream_fits(document, media_pointer, example["value"])
            else:
                _assert_fits(document, f"{media_pointer}/schema", example["value"])
        body = operation.get("requestBody")
        if body is not None:
            (example,) = body["content"]["application/json"]["examples"].values()
            _assert_fits(document, _CHAT_REQUEST, example["value"])
            assert parse_chat_request(example["value"]).model == "fake"  # and the edge accepts it
        for index, parameter in enumerate(operation["parameters"]):
            if "$ref" not in parameter:
                _assert_fits(document, f"{pointer}/parameters/{index}/schema", parameter["example"])


def _assert_openai_stream_fits(document: dict[str, Any], media_pointer: str, text: str) -> None:
    """Every event fits the stream's event schema, every data but ``[DONE]`` (the last) is a chunk or an error."""
    events = parse_events(text)
    assert [event["data"] for event in events][-1] == "[DONE]"
    for event in events:
        _assert_fits(document, f"{media_pointer}/schema", event)
    for event in events[:-1]:
        data = json.loads(event["data"])
        _assert_fits(document, "/components/schemas/OpenAI.ChatCompletionChunk", data)


def test_the_bodies_the_openai_routes_render_fit_the_schemas(document: dict[str, Any]) -> None:
    usage = Usage(3, 2, 5)
    completion = Completion(TRACE_ID, "Hello", "fake", usage)
    _assert_fits(
        document,
        "/components/schemas/OpenAI.ChatCompletion",
        completion_body(completion, created=1, model="fake"),
    )
    writer = ChunkWriter(TRACE_ID, 1, "fake", include_usage=True)
    for chunk in (writer.role(), writer.text("Hel"), writer.finish(), writer.usage(usage)):
        _assert_fits(document, "/components/schemas/OpenAI.ChatCompletionChunk", chunk)
    _assert_fits(document, "/components/schemas/OpenAI.ModelList", models_body(["fake", "openai"]))
    _assert_fits(document, "/components/schemas/OpenAI.Model", model_body("fake"))
    refusals = [
        model_not_found("openai"),
        errors.invalid_argument("bad", errors.Violation("messages", "required")),
        errors.HttpError(429, "RESOURCE_EXHAUSTED", "slow down", ("RATE_LIMITED",), retry_after_seconds=1),
    ]
    for error in refusals:
        _assert_fits(document, "/components/schemas/OpenAI.Error", error_body(error, TRACE_ID))
    assert failures(document, "/components/schemas/OpenAI.Error", errors.not_found().body(TRACE_ID))  # not AIP-193


@pytest.mark.parametrize(
    "body",
    [
        {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]},
        {"model": "fake", "messages": [{"role": "tool", "content": "42"}]},
        {"model": "fake", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
        {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "n": 2},
        {"model": "fake", "messages": []},
        {"model": "", "messages": [{"role": "user", "content": "hi"}]},
        {"messages": [{"role": "user", "content": "hi"}]},
        {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "stream_options": {}},
        {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "stream_options": {}, "stream": False},
    ],
)
def test_what_the_chat_schema_refuses_the_edge_refuses(document: dict[str, Any], body: dict[str, Any]) -> None:
    assert failures(document, _CHAT_REQUEST, body)
    with pytest.raises(errors.HttpError):
        parse_chat_request(body)


@pytest.mark.parametrize(
    "body",
    [
        {"model": "fake", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
        {
            "model": "fake",
            "messages": [
                {"role": "developer", "content": "Be brief.", "name": "ops"},
                {"role": "assistant", "content": "ok", "refusal": None, "tool_calls": []},
                {"role": "user", "content": "hi"},
            ],
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": 0.2,
            "max_tokens": 100,
            "n": 1,
            "metadata": {"ticket": "42"},
            "user": None,
        },
    ],
)
def test_what_the_chat_schema_accepts_the_edge_accepts(document: dict[str, Any], body: dict[str, Any]) -> None:
    _assert_fits(document, _CHAT_REQUEST, body)
    parse_chat_request(body)
