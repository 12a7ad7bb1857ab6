"""Names in the executor's catalogue (actions, and the fields its output spec names) are matched whole: a trailing
newline is refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from techno_executor.domain.actions import OutputSpec, _matches_name


def test_an_action_name_with_a_trailing_newline_is_refused() -> None:
    assert _matches_name("summarize")
    assert not _matches_name("summarize\n")
    assert not _matches_name("summarize\r\n")


def test_a_name_in_the_output_spec_is_matched_whole() -> None:
    assert OutputSpec(text="summary").text == "summary"
    for bad in ("Not A Name!", "summary\n", "x-y"):
        with pytest.raises(ValidationError):
            OutputSpec(text=bad)
