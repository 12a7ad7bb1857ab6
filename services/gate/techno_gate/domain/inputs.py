"""Checks a payload against its action's declared input: required fields, types, sizes; no unknown fields, no
control characters. Every problem is reported (not just the first), each under its field path, and nothing
is ever trimmed or rewritten: a bad value is refused, not mangled.

The payload is read through a small duck-typed view (``keys()`` / ``[]`` for objects; iteration and ``len``
for arrays) so the gate can validate the protobuf Struct it received without converting it first.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from techno_core.errors import FieldViolation
from techno_gate.domain.policy import InputField

DEFAULT_MAX_STRING = 100_000


def _is_object(value: Any) -> bool:
    return hasattr(value, "keys") and hasattr(value, "__getitem__")


def _is_array(value: Any) -> bool:
    return not isinstance(value, str | bytes) and not _is_object(value) and hasattr(value, "__len__")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# Each type's check, run alone (building every check's answer for each value cost more than the check).
_TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "string": lambda value: isinstance(value, str),
    "boolean": lambda value: isinstance(value, bool),
    "number": _is_number,
    "integer": lambda value: _is_number(value) and float(value).is_integer(),
    "array": _is_array,
    "object": _is_object,
}
# The characters of Unicode category Cc (C0, DEL and C1 controls: a fixed set) but tab, newline and carriage
# return: one regular-expression scan instead of a category look-up per character.
_FORBIDDEN_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _type_problem(expected: str, value: Any) -> str | None:
    ok = _TYPE_CHECKS[expected](value)
    return None if ok else f"must be {'an' if expected[0] in 'aeio' else 'a'} {expected}"


def _string_problem(value: str, max_length: int | None) -> str | None:
    limit = max_length or DEFAULT_MAX_STRING
    if len(value) > limit:
        return f"is longer than {limit} characters"
    if _FORBIDDEN_CONTROL.search(value):
        return "contains control characters"
    return None


def _field_violations(path: str, spec: InputField, value: Any) -> Iterable[FieldViolation]:
    problem = _type_problem(spec.type, value)
    if problem is not None:
        yield FieldViolation(path, problem)
        return
    if spec.type == "string":
        problem = _string_problem(value, spec.max_length)
        if problem is None and spec.required and not value.strip():
            problem = "must not be empty"
        if problem is not None:
            yield FieldViolation(path, problem)
    elif spec.type == "array":
        if spec.max_items is not None and len(value) > spec.max_items:
            yield FieldViolation(path, f"has more than {spec.max_items} items")
            return
        if spec.required and len(value) == 0:
            yield FieldViolation(path, "must not be empty")
        for index, item in enumerate(value):
            problem = _type_problem(spec.items, item) if spec.items is not None else None
            if problem is None and isinstance(item, str):
                problem = _string_problem(item, spec.max_length)
            if problem is not None:
                yield FieldViolation(f"{path}[{index}]", problem)


def payload_violations(payload: Any, declared: dict[str, InputField]) -> list[FieldViolation]:
    """Violations of ``payload`` (an object) against ``declared``; empty when it conforms."""
    present = set(payload.keys())
    violations = [
        FieldViolation(f"payload.{name}", "is not an input of this action")
        for name in sorted(present - declared.keys())
    ]
    for name, spec in declared.items():
        if name not in present:
            if spec.required:
                violations.append(FieldViolation(f"payload.{name}", f"is required ({spec.type})"))
            continue
        violations.extend(_field_violations(f"payload.{name}", spec, payload[name]))
    return violations
