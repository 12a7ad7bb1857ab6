"""Strict JSON for request bodies: RFC 8259 with the edge's bounds, every refusal a 400 in the client's terms.

Python's ``json`` accepts more than JSON and fails in its own terms; here a body is refused when it
- is not UTF-8 or not JSON (the message keeps the decoder's line and column),
- repeats a key in one object (the last value would silently win, and other parsers pick the first),
- has ``NaN``, ``Infinity`` or a number too large for a double (they have no JSON form to answer with),
- has an integer longer than the interpreter converts (its error names ``sys.set_int_max_str_digits``),
- nests objects and arrays deeper than ``MAX_DEPTH``: protobuf parses a ``google.protobuf.Struct`` three
  message levels per JSON level and refuses past 100, so a deeper payload would fail upstream, or exhaust the
  recursion of the converters here.
"""

from __future__ import annotations

import json
import math
from typing import Any

from techno_edge.domain.errors import HttpError, Violation, invalid_argument

MAX_DEPTH = 32
_BODY = "body"


def _refused(message: str, description: str) -> HttpError:
    return invalid_argument(f"request body {message}", Violation(_BODY, description))


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _refused(f"repeats the key {key!r} in one object", "has a repeated key")
            seen.add(key)
    return value


def _float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise _refused("has a number too large to represent", "has a number out of range")
    return number


def _constant(name: str) -> Any:
    raise _refused(f"has {name}, which is not JSON", "has a value that is not JSON")


# Integers are left to the C scanner (no Python call per number): the only way one fails is more digits than the
# interpreter converts, a plain ValueError caught in ``loads``.
_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_float=_float, parse_constant=_constant)


def _too_deep() -> HttpError:
    return _refused(f"is nested more than {MAX_DEPTH} levels deep", f"is nested more than {MAX_DEPTH} levels deep")


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether objects and arrays nest more than ``limit`` levels (the outermost is level 1); iterative, so no
    input can exhaust the stack."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def loads(body: bytes) -> Any:
    """The parsed body; raises ``HttpError`` (400) when it is not strict JSON within the bounds above."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _refused(f"is not valid JSON: not UTF-8 at byte {error.start}", "is not UTF-8") from None
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as error:  # its message is in JSON's terms, with the line and column
        raise _refused(f"is not valid JSON: {error}", "is not valid JSON") from None
    except ValueError:  # an integer with more digits than the interpreter converts (sys.set_int_max_str_digits)
        raise _refused("has a number with too many digits", "has a number out of range") from None
    except RecursionError:  # nested so deep the decoder itself gave up
        raise _too_deep() from None
    # No object or array can nest deeper than the brackets opened; most bodies are skipped by this count.
    many_brackets = body.count(b"{") + body.count(b"[") > MAX_DEPTH
    if many_brackets and isinstance(value, dict | list) and _deeper_than(value, MAX_DEPTH):
        raise _too_deep()
    return value
