"""The executor's prompt convention: a few ``KEY: value`` header lines, each on one line.

    TASK: chat
    INSTRUCTIONS: Reply helpfully and concisely to INPUT.message.
    Answer in language: pt-BR
    Tone: formal
    Format: bullet_points
    OUTPUT: text
    HISTORY: [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]
    INPUT: {"message": "..."}

Language models read it as plain instructions. It is also machine-readable, which lets the fake provider answer
in kind, and keeps caller text from posing as instructions: INPUT is JSON, so a newline inside the caller's
text is escaped and cannot start a header line of its own.

The caller's stored preferences become instruction lines (only those that are set), for every action. Their
values come from closed sets (tone, format) or must look like a BCP 47 tag (language); anything else is dropped,
so a stored value can never smuggle in an instruction. A JSON answer's format is fixed by OUTPUT: the format
preference applies to text answers only. The conversation so far (oldest first) travels like INPUT, as JSON on
one HISTORY line, bounded to the most recent ``MAX_HISTORY_TURNS`` messages and ``MAX_HISTORY_CHARS``
characters of content.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_TASK, _INSTRUCTIONS, _OUTPUT, _INPUT = "TASK: ", "INSTRUCTIONS: ", "OUTPUT: ", "INPUT: "
_HISTORY = "HISTORY: "
_LANGUAGE, _TONE, _FORMAT = "Answer in language: ", "Tone: ", "Format: "
_HEADERS = (_TASK, _INSTRUCTIONS, _OUTPUT, _INPUT, _HISTORY, _LANGUAGE, _TONE, _FORMAT)
_JSON = "json "

MAX_HISTORY_TURNS = 20  # messages (a user message and the reply are two)
MAX_HISTORY_CHARS = 20_000  # content characters of the kept messages, most recent first
ROLES = frozenset({"user", "assistant"})
TONES = frozenset({"neutral", "friendly", "formal", "concise"})
FORMATS = frozenset({"text", "markdown", "bullet_points"})
_LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8}){0,5}")

Turn = tuple[str, str]  # (role, content): one message of a conversation


@dataclass(frozen=True)
class Preferences:
    """A caller's explicit choices; empty means "no preference"."""

    tone: str = ""
    format: str = ""
    language: str = ""

    def cleaned(self) -> Preferences:
        """The preferences with every value outside its allowed set dropped."""
        return Preferences(
            tone=self.tone if self.tone in TONES else "",
            format=self.format if self.format in FORMATS else "",
            language=self.language if len(self.language) <= 35 and _LANGUAGE_TAG.fullmatch(self.language) else "",
        )


NO_PREFERENCES = Preferences()


def recent_history(turns: Iterable[Turn]) -> tuple[Turn, ...]:
    """The most recent messages (user/assistant roles only, oldest first) within the bounds: at most
    ``MAX_HISTORY_TURNS`` messages and ``MAX_HISTORY_CHARS`` characters of content."""
    kept: list[Turn] = []
    chars = 0
    for role, content in reversed([turn for turn in turns if turn[0] in ROLES]):
        if len(kept) >= MAX_HISTORY_TURNS or chars + len(content) > MAX_HISTORY_CHARS:
            break
        kept.append((role, content))
        chars += len(content)
    return tuple(reversed(kept))


@dataclass(frozen=True)
class Prompt:
    task: str
    instructions: str
    inputs: Mapping[str, Any]
    # Keys of the JSON object expected back, each with a description; None when the answer is plain text.
    json_schema: Mapping[str, str] | None = field(default=None)
    # The conversation so far, oldest first (bounded when rendered).
    history: Sequence[Turn] = ()
    preferences: Preferences = NO_PREFERENCES

    def render(self) -> str:
        output = "text" if self.json_schema is None else _JSON + json.dumps(dict(self.json_schema))
        instructions = " ".join(self.instructions.split())  # one line, whatever the source formatting
        lines = [_TASK + self.task, _INSTRUCTIONS + instructions, *self._preference_lines(), _OUTPUT + output]
        history = recent_history(self.history)
        if history:
            turns = [{"role": role, "content": content} for role, content in history]
            lines.append(_HISTORY + json.dumps(turns, ensure_ascii=False))
        lines.append(_INPUT + json.dumps(dict(self.inputs), ensure_ascii=False))
        return "\n".join(lines)

    def _preference_lines(self) -> list[str]:
        chosen = self.preferences.cleaned()
        lines = [_LANGUAGE + chosen.language] if chosen.language else []
        if chosen.tone:
            lines.append(_TONE + chosen.tone)
        if chosen.format and self.json_schema is None:  # a JSON answer's format is the OUTPUT line's
            lines.append(_FORMAT + chosen.format)
        return lines


def parse_prompt(text: str) -> Prompt | None:
    """The prompt back from its rendering, or None when ``text`` does not follow the convention."""
    headers: dict[str, str] = {}
    for line in text.split("\n"):  # not splitlines(): it would also split on characters JSON leaves unescaped
        for key in _HEADERS:
            if line.startswith(key) and key not in headers:
                headers[key] = line[len(key) :]
    if _TASK not in headers or _INPUT not in headers:
        return None
    try:
        inputs = json.loads(headers[_INPUT])
        output = headers.get(_OUTPUT, "text")
        schema = json.loads(output[len(_JSON) :]) if output.startswith(_JSON) else None
        history = json.loads(headers.get(_HISTORY, "[]"))
    except json.JSONDecodeError:
        return None
    if not isinstance(inputs, dict) or not (schema is None or isinstance(schema, dict)):
        return None
    if not isinstance(history, list) or not all(_is_turn(turn) for turn in history):
        return None
    preferences = Preferences(
        tone=headers.get(_TONE, ""), format=headers.get(_FORMAT, ""), language=headers.get(_LANGUAGE, "")
    )
    turns = tuple((turn["role"], turn["content"]) for turn in history)
    return Prompt(headers[_TASK], headers.get(_INSTRUCTIONS, ""), inputs, schema, turns, preferences)


def _is_turn(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("role"), str) and isinstance(value.get("content"), str)
