"""REST bindings read from the ``google.api.http`` annotations of services in the protobuf descriptor pool.

This is what makes the edge route-free: every annotated unary or server-streaming method of a configured service
becomes one route per binding (its rule plus ``additional_bindings``), checked once at start-up so a bad
annotation refuses to start instead of failing requests. A server-streaming method is served as Server-Sent
Events (``techno_edge.entrypoints.event_stream``); a client-streaming one has no REST form and is left out.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message

from techno_edge.domain.routing import Route
from techno_edge.domain.templates import PathTemplate, TemplateError, parse_template

log = logging.getLogger(__name__)

_METHOD_KINDS = ("get", "put", "post", "delete", "patch")


class BindingError(ValueError):
    """An upstream's annotations cannot be served (unknown service, bad template, unknown field …)."""


@dataclass(frozen=True)
class Binding:
    """One HTTP method + path template bound to one gRPC method."""

    service: str
    method: MethodDescriptor
    http_method: str
    template: PathTemplate
    body: str  # "" (no body), "*" (the whole request) or a top-level request field name
    response_body: str  # "" (the whole response) or a top-level response field name
    path_fields: dict[str, tuple[FieldDescriptor, ...]]  # variable name → field chain from the request
    request_class: type[Message]
    response_class: type[Message]
    index: int = 0  # 0 for the rule itself, n for its n-th additional binding
    server_streaming: bool = False  # answered as Server-Sent Events, one event per response message

    @property
    def grpc_path(self) -> str:
        return f"/{self.service}/{self.method.name}"

    @property
    def operation_id(self) -> str:
        # Additional bindings are operations of their own; OpenAPI wants each operationId unique.
        suffix = f"_{self.index}" if self.index else ""
        return f"{self.method.containing_service.name}_{self.method.name}{suffix}"


def import_proto_modules(modules: Iterable[str]) -> None:
    """Importing a generated ``*_pb2`` module registers its file, and so its services, in the default pool."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise BindingError(f"proto module {module!r} cannot be imported: {error}") from error


def resolve_field_path(message: Descriptor, path: Sequence[str]) -> tuple[FieldDescriptor, ...] | None:
    """The fields named by ``path`` (proto or JSON names), every step but the last a singular message."""
    chain: list[FieldDescriptor] = []
    current: Descriptor | None = message
    for name in path:
        if current is None:
            return None
        field = current.fields_by_name.get(name) or current.fields_by_camelcase_name.get(name)
        if field is None:
            return None
        chain.append(field)
        singular_message = field.message_type is not None and not field.is_repeated
        current = field.message_type if singular_message else None
    return tuple(chain)


def _path_fields(request: Descriptor, template: PathTemplate, where: str) -> dict[str, tuple[FieldDescriptor, ...]]:
    fields: dict[str, tuple[FieldDescriptor, ...]] = {}
    for variable in template.variables:
        chain = resolve_field_path(request, variable.field_path)
        if chain is None:
            raise BindingError(f"{where}: path variable {variable.name!r} is not a field of {request.full_name}")
        leaf = chain[-1]
        if leaf.message_type is not None or leaf.is_repeated:
            raise BindingError(f"{where}: path variable {variable.name!r} must be a singular scalar or enum field")
        fields[variable.name] = chain
    return fields


def _pattern(rule: http_pb2.HttpRule, where: str) -> tuple[str, str]:
    kind = rule.WhichOneof("pattern")
    if kind in _METHOD_KINDS:
        return kind.upper(), str(getattr(rule, kind))
    if kind == "custom":
        return rule.custom.kind.upper(), rule.custom.path
    raise BindingError(f"{where}: HttpRule has no pattern")


def _binding(service: str, method: MethodDescriptor, rule: http_pb2.HttpRule, index: int = 0) -> Binding:
    where = f"{service}.{method.name}"
    http_method, path = _pattern(rule, where)
    try:
        template = parse_template(path)
    except TemplateError as error:
        raise BindingError(f"{where}: {error}") from error
    request, response = method.input_type, method.output_type
    if rule.body not in ("", "*") and rule.body not in request.fields_by_name:
        raise BindingError(f"{where}: body {rule.body!r} is not a field of {request.full_name}")
    if rule.response_body and rule.response_body not in response.fields_by_name:
        raise BindingError(f"{where}: response_body {rule.response_body!r} is not a field of {response.full_name}")
    return Binding(
        service=service,
        method=method,
        http_method=http_method,
        template=template,
        body=rule.body,
        response_body=rule.response_body,
        path_fields=_path_fields(request, template, where),
        request_class=message_factory.GetMessageClass(request),
        response_class=message_factory.GetMessageClass(response),
        index=index,
        server_streaming=method.server_streaming,
    )


def load_bindings(services: Iterable[str], pool: descriptor_pool.DescriptorPool | None = None) -> list[Binding]:
    """Every REST binding of ``services`` (full names), in declaration order."""
    pool = pool or descriptor_pool.Default()
    bindings: list[Binding] = []
    for service in services:
        try:
            descriptor = pool.FindServiceByName(service)
        except KeyError as error:
            raise BindingError(
                f"service {service!r} is not in the descriptor pool; list its *_pb2 module in edge_proto_modules"
            ) from error
        for method in descriptor.methods:
            options = method.GetOptions()
            if not options.HasExtension(annotations_pb2.http):
                continue
            if method.client_streaming:
                log.warning("client-streaming method %s.%s has an HTTP rule; not served", service, method.name)
                continue
            rule = options.Extensions[annotations_pb2.http]
            bindings.append(_binding(service, method, rule))
            bindings.extend(
                _binding(service, method, extra, index) for index, extra in enumerate(rule.additional_bindings, start=1)
            )
    return bindings


def routes_of(bindings: Iterable[Binding]) -> list[Route[Binding]]:
    return [Route(b.http_method, b.template, b) for b in bindings]
