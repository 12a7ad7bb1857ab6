"""``google.api.http`` path templates: parsed and compiled once at start-up, matched on every request.

Written by hand because no maintained Python library implements google.api.http transcoding (grpc-gateway and
Envoy's transcoder are Go and C++). The grammar, from google/api/http.proto::

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    FieldPath = IDENT { "." IDENT } ;
    Verb     = ":" LITERAL ;

A template compiles to one anchored regular expression with a capture group per variable, so a match is a single
C-level ``fullmatch``. Matching runs on the *raw* (still percent-encoded) path: decoding first would turn an
encoded ``%2F`` into a segment separator. Captured values are decoded afterwards, following http.proto:
single-segment variables are fully decoded, multi-segment ones keep ``%2F`` encoded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Characters that end a literal: the template's own syntax.
_LITERAL = re.compile(r"[^/{}=:*]+")
_ENCODED_SLASH = re.compile(r"(%2[Ff])")


class TemplateError(ValueError):
    """A path template does not follow the google.api.http grammar."""


@dataclass(frozen=True)
class Variable:
    """``{field.path=segments}``; ``segments`` is ``("*",)`` for the short form ``{field.path}``."""

    field_path: tuple[str, ...]
    segments: tuple[str, ...]

    @property
    def multi_segment(self) -> bool:
        return len(self.segments) > 1 or "**" in self.segments

    @property
    def name(self) -> str:
        return ".".join(self.field_path)


Segment = str | Variable  # a literal, "*", "**" or a variable


@dataclass(frozen=True)
class PathTemplate:
    source: str
    segments: tuple[Segment, ...]
    verb: str | None
    pattern: re.Pattern[str]

    @property
    def variables(self) -> tuple[Variable, ...]:
        return tuple(s for s in self.segments if isinstance(s, Variable))

    @property
    def is_literal(self) -> bool:
        """No wildcard and no variable: matched by dictionary lookup instead of a regex."""
        return not any(isinstance(s, Variable) or s in ("*", "**") for s in self.segments)

    def match(self, raw_path: str) -> dict[str, str] | None:
        """The decoded value of each variable (keyed by dotted field path), or None if ``raw_path`` differs."""
        found = self.pattern.fullmatch(raw_path)
        if found is None:
            return None
        return {
            variable.name: _decode(value, variable.multi_segment)
            for variable, value in zip(self.variables, found.groups(), strict=True)
        }

    def openapi_path(self) -> str:
        """The OpenAPI form: each variable becomes ``{field.path}`` whatever its pattern."""
        parts = [f"{{{s.name}}}" if isinstance(s, Variable) else s for s in self.segments]
        return "/" + "/".join(parts) + (f":{self.verb}" if self.verb else "")


def _decode(value: str, multi_segment: bool) -> str:
    if not multi_segment:
        return unquote(value)
    # Keep %2F (and %2f) encoded so the value's own segments stay distinguishable from an encoded slash.
    return "".join(part if _ENCODED_SLASH.fullmatch(part) else unquote(part) for part in _ENCODED_SLASH.split(value))


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.position = 0

    def fail(self, message: str) -> TemplateError:
        return TemplateError(f"{message} at offset {self.position} of path template {self.source!r}")

    def peek(self) -> str:
        return self.source[self.position : self.position + 1]

    def expect(self, text: str) -> None:
        if not self.source.startswith(text, self.position):
            raise self.fail(f"expected {text!r}")
        self.position += len(text)

    def take(self, pattern: re.Pattern[str], what: str) -> str:
        found = pattern.match(self.source, self.position)
        if found is None:
            raise self.fail(f"expected {what}")
        self.position = found.end()
        return found.group()

    def segments(self, *, in_variable: bool) -> list[Segment]:
        result = [self.segment(in_variable=in_variable)]
        while self.peek() == "/":
            self.position += 1
            result.append(self.segment(in_variable=in_variable))
        return result

    def segment(self, *, in_variable: bool) -> Segment:
        if self.source.startswith("**", self.position):
            self.position += 2
            return "**"
        if self.peek() == "*":
            self.position += 1
            return "*"
        if self.peek() == "{":
            if in_variable:
                raise self.fail("nested variable")
            return self.variable()
        return self.take(_LITERAL, "a literal, '*', '**' or '{'")

    def variable(self) -> Variable:
        self.expect("{")
        path = [self.take(_IDENT, "a field name")]
        while self.peek() == ".":
            self.position += 1
            path.append(self.take(_IDENT, "a field name"))
        segments: list[Segment] = ["*"]
        if self.peek() == "=":
            self.position += 1
            segments = self.segments(in_variable=True)
        self.expect("}")
        return Variable(tuple(path), tuple(str(s) for s in segments))


def _regex(segments: tuple[Segment, ...] | tuple[str, ...]) -> str:
    parts: list[str] = []
    for segment in segments:
        if isinstance(segment, Variable):
            parts.append(f"({_regex(segment.segments)})")
        elif segment == "*":
            parts.append("[^/]+")
        elif segment == "**":
            # One or more segments. (http.proto allows zero, which would only ever match a trailing slash.)
            parts.append("[^/]+(?:/[^/]+)*")
        else:
            parts.append(re.escape(segment))
    return "/".join(parts)


def parse_template(source: str) -> PathTemplate:
    """Parse and compile ``source``; raises ``TemplateError`` on a malformed template or a repeated variable."""
    parser = _Parser(source)
    parser.expect("/")
    segments = tuple(parser.segments(in_variable=False))
    verb = None
    if parser.peek() == ":":
        parser.position += 1
        verb = parser.take(_LITERAL, "a verb")
    if parser.position != len(source):
        raise parser.fail("unexpected character")
    names = [s.name for s in segments if isinstance(s, Variable)]
    if len(names) != len(set(names)):
        raise TemplateError(f"a variable is bound twice in path template {source!r}")
    pattern = "/" + _regex(segments) + (":" + re.escape(verb) if verb else "")
    return PathTemplate(source, segments, verb, re.compile(pattern))
