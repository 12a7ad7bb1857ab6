"""The comments of the proto files, by full name, for the OpenAPI document.

Generated ``*_pb2`` modules carry no source info, so the comments come from the ``FileDescriptorSet`` that
``scripts/protos.py`` writes beside them with ``--include_source_info`` (``techno/descriptors.binpb``). Names are the
proto full names: ``techno.gate.v1.GateService``, ``techno.gate.v1.GateService.Process``,
``techno.gate.v1.ProcessRequest``, ``techno.gate.v1.ProcessRequest.action``, ``techno.gate.v1.ReasonCode`` and, for
an enum value, the enum's name plus the value's (``techno.gate.v1.ReasonCode.REASON_CODE_ALLOWED``: proto scopes
values beside their enum, which would make two enums' values collide).
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Iterator, Mapping
from importlib import resources

from google.protobuf import descriptor_pb2

log = logging.getLogger(__name__)

PACKAGED = ("techno", "descriptors.binpb")

# Field numbers of the descriptor messages, the steps of a SourceCodeInfo.Location path.
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE = 4, 5, 6
_MESSAGE_FIELD, _MESSAGE_NESTED, _MESSAGE_ENUM = 2, 3, 4
_ENUM_VALUE = 2
_SERVICE_METHOD = 2

Path = tuple[int, ...]


def _clean(comment: str) -> str:
    # protoc keeps the text after "//" on each line, usually with its leading space; Markdown reads the
    # remaining line breaks as spaces and blank lines as paragraphs, which is how the protos are written.
    return textwrap.dedent(comment).strip()


def _enum(enum: descriptor_pb2.EnumDescriptorProto, name: str, path: Path) -> Iterator[tuple[str, Path]]:
    yield name, path
    for index, value in enumerate(enum.value):
        yield f"{name}.{value.name}", (*path, _ENUM_VALUE, index)


def _message(message: descriptor_pb2.DescriptorProto, name: str, path: Path) -> Iterator[tuple[str, Path]]:
    yield name, path
    for index, field in enumerate(message.field):
        yield f"{name}.{field.name}", (*path, _MESSAGE_FIELD, index)
    for index, nested in enumerate(message.nested_type):
        yield from _message(nested, f"{name}.{nested.name}", (*path, _MESSAGE_NESTED, index))
    for index, enum in enumerate(message.enum_type):
        yield from _enum(enum, f"{name}.{enum.name}", (*path, _MESSAGE_ENUM, index))


def _elements(file: descriptor_pb2.FileDescriptorProto) -> Iterator[tuple[str, Path]]:
    """Every documentable element of ``file``: its full name and its source-info path."""
    prefix = f"{file.package}." if file.package else ""
    for index, message in enumerate(file.message_type):
        yield from _message(message, prefix + message.name, (_FILE_MESSAGE, index))
    for index, enum in enumerate(file.enum_type):
        yield from _enum(enum, prefix + enum.name, (_FILE_ENUM, index))
    for index, service in enumerate(file.service):
        yield prefix + service.name, (_FILE_SERVICE, index)
        for position, method in enumerate(service.method):
            yield f"{prefix}{service.name}.{method.name}", (_FILE_SERVICE, index, _SERVICE_METHOD, position)


class ProtoDocs:
    """Comment by full name; ``of`` answers "" for an element without one (or from a file without source info)."""

    def __init__(self, comments: Mapping[str, str] | None = None) -> None:
        self._comments = dict(comments or {})

    def __len__(self) -> int:
        return len(self._comments)

    def of(self, full_name: str) -> str:
        return self._comments.get(full_name, "")

    @classmethod
    def from_descriptor_set(cls, data: bytes) -> ProtoDocs:
        files = descriptor_pb2.FileDescriptorSet.FromString(data)
        comments: dict[str, str] = {}
        for file in files.file:
            locations = {tuple(location.path): location for location in file.source_code_info.location}
            for name, path in _elements(file):
                location = locations.get(path)
                if location is not None:
                    text = _clean(location.leading_comments or location.trailing_comments)
                    if text:
                        comments[name] = text
        return cls(comments)

    @classmethod
    def packaged(cls) -> ProtoDocs:
        """The comments of the protos generated into ``gen/python``; none (and a warning) if the set is missing,
        as in a build that left it out: the document is then only less helpful, never wrong."""
        package, name = PACKAGED
        try:
            data = resources.files(package).joinpath(name).read_bytes()
        except (FileNotFoundError, ModuleNotFoundError):
            log.warning("%s/%s is missing; the OpenAPI document has no proto comments", package, name)
            return cls()
        return cls.from_descriptor_set(data)
