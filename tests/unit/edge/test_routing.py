"""Route table: literal lookups, patterned routes in order, 404 versus 405."""

from __future__ import annotations

import pytest

from techno_edge.domain.routing import Matched, MethodNotAllowed, Route, Router
from techno_edge.domain.templates import parse_template


def _router(*routes: tuple[str, str]) -> Router[str]:
    return Router(Route(method, parse_template(path), f"{method} {path}") for method, path in routes)


def test_literal_and_patterned_routes() -> None:
    router = _router(("POST", "/v1/process"), ("GET", "/v1/things/{name}"), ("GET", "/v1/things"))
    found = router.match("POST", "/v1/process")
    assert isinstance(found, Matched)
    assert found.route.target == "POST /v1/process"
    found = router.match("GET", "/v1/things/x")
    assert isinstance(found, Matched)
    assert found.values == {"name": "x"}
    found = router.match("GET", "/v1/things")
    assert isinstance(found, Matched)
    assert found.route.target == "GET /v1/things"


def test_unknown_path_is_none() -> None:
    assert _router(("GET", "/v1/things")).match("GET", "/v2/things") is None


def test_known_path_with_other_method_lists_allowed_methods() -> None:
    router = _router(("GET", "/v1/things/{name}"), ("DELETE", "/v1/things/{name}"), ("POST", "/v1/things"))
    found = router.match("PUT", "/v1/things/x")
    assert found == MethodNotAllowed("/v1/things/{name}", ("GET", "DELETE"))
    assert router.match("GET", "/v1/things") == MethodNotAllowed("/v1/things", ("POST",))


def test_first_declared_patterned_route_wins() -> None:
    router = _router(("GET", "/v1/{name=things/*}"), ("GET", "/v1/{parent=*}/{id}"))
    found = router.match("GET", "/v1/things/x")
    assert isinstance(found, Matched)
    assert found.values == {"name": "things/x"}


def test_duplicate_literal_route_is_refused() -> None:
    with pytest.raises(ValueError, match="two routes"):
        _router(("GET", "/v1/x"), ("GET", "/v1/x"))
