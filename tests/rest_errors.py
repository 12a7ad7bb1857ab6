"""Reading the REST error body (AIP-193: ``{"error": {"code", "message", "status", "details": [...]}}``) in tests:
the reason, trace id and violations are found in the ``@type``'d details, wherever they are in the list."""

from __future__ import annotations

from typing import Any

_TYPE = "type.googleapis.com/google.rpc."


def details_of(error: dict[str, Any], type_name: str) -> list[dict[str, Any]]:
    """The details of ``error`` (the body's ``error`` object) of one google.rpc type, e.g. "BadRequest"."""
    return [detail for detail in error["details"] if detail["@type"] == _TYPE + type_name]


def reasons_of(error: dict[str, Any]) -> list[str]:
    return [info["reason"] for info in details_of(error, "ErrorInfo")]


def trace_id_of(error: dict[str, Any]) -> str:
    """The trace id the edge puts in the (first) ErrorInfo's metadata."""
    trace_id: str = details_of(error, "ErrorInfo")[0]["metadata"]["traceId"]
    return trace_id


def field_violations_of(error: dict[str, Any]) -> list[dict[str, str]]:
    return [violation for detail in details_of(error, "BadRequest") for violation in detail["fieldViolations"]]


def quota_violations_of(error: dict[str, Any]) -> list[dict[str, str]]:
    return [violation for detail in details_of(error, "QuotaFailure") for violation in detail["violations"]]
