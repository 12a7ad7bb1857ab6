"""Checking values against the schemas of an OpenAPI document in tests: by JSON pointer into the document, so its
``#/components/…`` references resolve, and Server-Sent Events against the event schemas of a stream."""

from __future__ import annotations

import json
from typing import Any

from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

_URI = "urn:techno:openapi"


def escape(token: str) -> str:
    """A JSON pointer reference token (RFC 6901)."""
    return token.replace("~", "~0").replace("/", "~1")


def failures(document: dict[str, Any], pointer: str, value: Any) -> list[str]:
    """Why ``value`` does not fit the schema at ``pointer`` in ``document`` (empty: it fits)."""
    registry: Registry[Any] = Registry().with_resource(
        _URI, Resource.from_contents(document, default_specification=DRAFT202012)
    )
    validator = Draft202012Validator({"$ref": f"{_URI}#{pointer}"}, registry=registry)
    return [f"{pointer} {'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(value)]


def parse_events(text: str) -> list[dict[str, str]]:
    """The events of an event stream as field → value, comment lines (keep-alives) left out."""
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        if fields:
            events.append(fields)
    return events


def event_failures(document: dict[str, Any], media_type_pointer: str, events: list[dict[str, str]]) -> list[str]:
    """Why ``events`` do not fit the event schema of the ``text/event-stream`` media type at the pointer: each event
    must match one of its alternatives, and its ``data`` that alternative's ``contentSchema`` (which a JSON Schema
    validator only annotates, so it is checked here)."""
    schema_pointer = f"{media_type_pointer}/schema"
    alternatives = _resolve(document, schema_pointer)["oneOf"]
    found: list[str] = []
    for event in events:
        found += failures(document, schema_pointer, event)
        name = event.get("event", "message")
        index = next(
            (i for i, a in enumerate(alternatives) if a.get("properties", {}).get("event", {}).get("const") == name),
            None,
        )
        if index is None:
            found.append(f"no alternative for event {name!r}")
            continue
        content = f"{schema_pointer}/oneOf/{index}/properties/data/contentSchema"
        found += failures(document, content, json.loads(event["data"]))
    return found


def _resolve(document: dict[str, Any], pointer: str) -> Any:
    value: Any = document
    for token in pointer.lstrip("/").split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        value = value[int(token)] if isinstance(value, list) else value[token]
    return value
