"""The executor's prompt convention: a few ``KEY: value`` header lines, each on one line.

    TASK: classify
    INSTRUCTIONS: Put INPUT.text into exactly one of INPUT.labels.
    OUTPUT: json {"label": "one of INPUT.labels", "confidence": "number from 0 to 1"}
    INPUT: {"text": "...", "labels": ["a", "b"]}

Language models read it as plain instructions. It is also machine-readable, which lets the fake provider answer
in kind, and keeps caller text from posing as instructions: INPUT is JSON, so a newline inside the caller's
text is escaped and cannot start a header line of its own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_TASK, _INSTRUCTIONS, _OUTPUT, _INPUT = "TASK: ", "INSTRUCTIONS: ", "OUTPUT: ", "INPUT: "
_JSON = "json "


@dataclass(frozen=True)
class Prompt:
    task: str
    instructions: str
    inputs: Mapping[str, Any]
    # Keys of the JSON object expected back, each with a description; None when the answer is plain text.
    json_schema: Mapping[str, str] | None = field(default=None)

    def render(self) -> str:
        output = "text" if self.json_schema is None else _JSON + json.dumps(dict(self.json_schema))
        instructions = " ".join(self.instructions.split())  # one line, whatever the source formatting
        return "\n".join(
            (
                _TASK + self.task,
                _INSTRUCTIONS + instructions,
                _OUTPUT + output,
                _INPUT + json.dumps(dict(self.inputs), ensure_ascii=False),
            )
        )


def parse_prompt(text: str) -> Prompt | None:
    """The prompt back from its rendering, or None when ``text`` does not follow the convention."""
    headers: dict[str, str] = {}
    for line in text.split("\n"):  # not splitlines(): it would also split on characters JSON leaves unescaped
        for key in (_TASK, _INSTRUCTIONS, _OUTPUT, _INPUT):
            if line.startswith(key) and key not in headers:
                headers[key] = line[len(key) :]
    if _TASK not in headers or _INPUT not in headers:
        return None
    try:
        inputs = json.loads(headers[_INPUT])
        output = headers.get(_OUTPUT, "text")
        schema = json.loads(output[len(_JSON) :]) if output.startswith(_JSON) else None
    except json.JSONDecodeError:
        return None
    if not isinstance(inputs, dict) or not (schema is None or isinstance(schema, dict)):
        return None
    return Prompt(headers[_TASK], headers.get(_INSTRUCTIONS, ""), inputs, schema)
