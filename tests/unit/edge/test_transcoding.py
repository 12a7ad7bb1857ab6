"""JSON ↔ protobuf for the gate's bindings (body "*" and a GET), and the settings' upstream parsing."""

from __future__ import annotations

import json

import pytest

from techno.gate.v1 import gate_pb2
from techno_edge.adapters.bindings import Binding, load_bindings
from techno_edge.adapters.transcoding import build_request, render_response
from techno_edge.domain.errors import HttpError
from techno_edge.settings import GATE_SERVICE, EdgeSettings


@pytest.fixture(scope="module")
def bindings() -> dict[str, Binding]:
    return {b.method.name: b for b in load_bindings([GATE_SERVICE])}


def test_body_star_accepts_proto_and_json_names(bindings: dict[str, Binding]) -> None:
    body = json.dumps({"action": "summarize", "contextId": "c", "session_id": "s", "payload": {"text": "hi"}})
    request = build_request(bindings["Process"], {}, b"", body.encode())
    assert isinstance(request, gate_pb2.ProcessRequest)
    assert (request.action, request.context_id, request.session_id) == ("summarize", "c", "s")
    assert request.payload["text"] == "hi"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"action": "a", "bogus": 1}', "bogus"),
        (b'{"action": 5}', "action"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_bad_bodies_are_400(bindings: dict[str, Binding], body: bytes, fragment: str) -> None:
    with pytest.raises(HttpError) as raised:
        build_request(bindings["Process"], {}, b"", body)
    assert raised.value.status == 400
    assert fragment in raised.value.message
    assert "Available Fields" not in raised.value.message


def test_unknown_query_parameter_is_400(bindings: dict[str, Binding]) -> None:
    with pytest.raises(HttpError) as raised:
        build_request(bindings["ListActions"], {}, b"verbose=1", b"")
    assert raised.value.status == 400
    assert raised.value.violations[0].field == "verbose"


def test_response_prints_defaults_with_json_names(bindings: dict[str, Binding]) -> None:
    response = gate_pb2.ProcessResponse(trace_id="t", status=gate_pb2.EXECUTION_STATUS_SUCCEEDED)
    rendered = json.loads(render_response(bindings["Process"], response))
    assert rendered["traceId"] == "t"
    assert rendered["status"] == "EXECUTION_STATUS_SUCCEEDED"
    assert rendered["executionTimeMs"] == 0
    assert json.loads(render_response(bindings["ListActions"], gate_pb2.ListActionsResponse()))["actions"] == []


def test_settings_accept_pairs_list_and_json() -> None:
    assert EdgeSettings(edge_upstreams="a.B=h:1, c.D=h:2").upstreams() == {
        GATE_SERVICE: "127.0.0.1:50051",
        "techno.gate.v1.GateAdminService": "127.0.0.1:50051",
        "a.B": "h:1",
        "c.D": "h:2",
    }
    assert EdgeSettings(edge_upstreams=["a.B=h:1"]).edge_upstreams == {"a.B": "h:1"}
    assert EdgeSettings(edge_upstreams='{"a.B": "h:1"}').edge_upstreams == {"a.B": "h:1"}
    assert EdgeSettings(edge_proto_modules="x.y_pb2").proto_modules() == [
        "techno.gate.v1.gate_pb2",
        "techno.gate.v1.admin_pb2",
        "x.y_pb2",
    ]
    with pytest.raises(ValueError, match="service name"):
        EdgeSettings(edge_upstreams="nonsense")


def test_every_setting_is_described() -> None:
    assert all(field.description for field in EdgeSettings.model_fields.values())


def test_a_server_streaming_method_is_bound_with_its_body_field(bindings: dict[str, Binding]) -> None:
    stream = bindings["StreamProcess"]
    assert (stream.http_method, stream.template.source, stream.body) == ("POST", "/v1/process:stream", "request")
    assert stream.server_streaming
    assert not bindings["Process"].server_streaming
    body = json.dumps({"action": "chat", "contextId": "c", "payload": {"message": "hi"}, "provider": "p"})
    request = build_request(stream, {}, b"", body.encode())
    assert isinstance(request, gate_pb2.StreamProcessRequest)
    assert (request.request.action, request.request.context_id, request.request.provider) == ("chat", "c", "p")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"action": 5}', "action"),  # not "request.action": the path is the body's
        (b'{"payload": [1]}', "payload"),
        (b'{"bogus": 1}', "bogus"),
        (b"[1]", "body"),
    ],
)
def test_a_body_bound_to_a_field_is_refused_by_its_own_paths(
    bindings: dict[str, Binding], body: bytes, field: str
) -> None:
    with pytest.raises(HttpError) as raised:
        build_request(bindings["StreamProcess"], {}, b"", body)
    assert [v.field for v in raised.value.violations] == [field]
