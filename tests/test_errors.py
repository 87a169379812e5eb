"""The one home of one-line messages: escaping, shortening, the first line of an exception."""

from __future__ import annotations

from hpc_forget.errors import first_line, one_line, shorten


def test_one_line_escapes_control_characters():
    assert one_line("a\nb\x1b[2J") == "a\\nb\\x1b[2J"
    assert one_line("plain") == "plain"


def test_shorten_joins_lines_and_cuts_with_dots():
    assert shorten("a\n  b\tc") == "a b c"
    assert shorten("x" * 20, 10) == "xxxxxxx..."


def test_first_line_of_an_exception():
    assert first_line(ValueError("bad thing\nTraceback ...")) == "bad thing"
    assert first_line(ValueError()) == "ValueError"
    assert first_line(OSError("y" * 200), 20) == "y" * 17 + "..."
    assert first_line(OSError("y" * 200), None) == "y" * 200
    assert first_line("") == ""
