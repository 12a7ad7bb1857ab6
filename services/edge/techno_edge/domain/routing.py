"""The route table: HTTP method + raw path → the binding it targets and the values of its path variables.

Literal templates (most of them: ``/v1/process``) are found with one dictionary lookup; only templates with
variables are tried as regular expressions, in declaration order. A path that some route matches with another
method is a 405 carrying the allowed methods, not a 404.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from techno_edge.domain.templates import PathTemplate

Target = TypeVar("Target")


@dataclass(frozen=True)
class Route(Generic[Target]):
    method: str  # upper case: GET, POST … or a custom verb's kind
    template: PathTemplate
    target: Target


@dataclass(frozen=True)
class Matched(Generic[Target]):
    route: Route[Target]
    values: dict[str, str]


@dataclass(frozen=True)
class MethodNotAllowed:
    template: str  # the first template the path matched, a bounded metrics label
    allowed: tuple[str, ...]


class Router(Generic[Target]):
    def __init__(self, routes: Iterable[Route[Target]]) -> None:
        self.routes = tuple(routes)
        self._literal: dict[str, dict[str, Route[Target]]] = {}
        self._patterned: list[Route[Target]] = []
        for route in self.routes:
            if route.template.is_literal:
                by_method = self._literal.setdefault(route.template.openapi_path(), {})
                if route.method in by_method:
                    raise ValueError(f"two routes for {route.method} {route.template.source}")
                by_method[route.method] = route
            else:
                self._patterned.append(route)

    def match(self, method: str, raw_path: str) -> Matched[Target] | MethodNotAllowed | None:
        allowed: list[str] = []
        first_template = ""
        by_method = self._literal.get(raw_path)
        if by_method is not None:
            route = by_method.get(method)
            if route is not None:
                return Matched(route, {})
            allowed.extend(by_method)
            first_template = next(iter(by_method.values())).template.source
        for route in self._patterned:
            values = route.template.match(raw_path)
            if values is None:
                continue
            if route.method == method:
                return Matched(route, values)
            allowed.append(route.method)
            first_template = first_template or route.template.source
        if allowed:
            return MethodNotAllowed(first_template, tuple(dict.fromkeys(allowed)))
        return None
