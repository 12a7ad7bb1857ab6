"""Hand-written examples for the OpenAPI document, kept as data in ``openapi_examples.json``.

They are written, not derived: a value made up from a schema (``"string"``, ``0``) teaches a reader nothing,
while these read like the gateway's real traffic. A unit test keeps them honest: every gate operation has a
request (when it takes a body) and a response example, and each one validates against the schema it illustrates.

The file holds ``operations`` (by operationId: ``request``, ``response`` and ``parameters`` by parameter name) and
``errors`` (one error body per error response: ``400``, ``401``, ``403``, ``429``, ``4XX``, ``5XX``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

_FILE = "openapi_examples.json"


@dataclass(frozen=True)
class OperationExamples:
    request: Any = None
    response: Any = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Examples:
    operations: dict[str, OperationExamples] = field(default_factory=dict)
    errors: dict[str, Any] = field(default_factory=dict)

    def of(self, operation_id: str) -> OperationExamples:
        return self.operations.get(operation_id) or OperationExamples()

    @classmethod
    def packaged(cls) -> Examples:
        document = json.loads(resources.files(__package__).joinpath(_FILE).read_text(encoding="utf-8"))
        operations = {
            operation_id: OperationExamples(
                request=examples.get("request"),
                response=examples.get("response"),
                parameters=examples.get("parameters", {}),
            )
            for operation_id, examples in document["operations"].items()
        }
        return cls(operations, document["errors"])
