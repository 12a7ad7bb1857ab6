"""Action names in the executor's catalogue are matched whole: a trailing newline is refused."""

from __future__ import annotations

from techno_executor.domain.actions import _matches_name


def test_an_action_name_with_a_trailing_newline_is_refused() -> None:
    assert _matches_name("summarize")
    assert not _matches_name("summarize\n")
    assert not _matches_name("summarize\r\n")
