"""The one home of one-line messages: escaping, shortening, the first line of an exception,
KEY=VALUE pairs."""

from __future__ import annotations

import pytest

import hpc_forget.errors as E
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


@pytest.mark.parametrize(
    ("text", "pair"),
    [("a=1", ("a", "1")), (" a =x=y", ("a", "x=y")), ("a=", ("a", "")), ("a= 1 ", ("a", " 1 "))],
)
def test_split_pair_reads_key_and_value(text, pair):
    assert E.split_pair(text, "--opt") == pair


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("a", "--opt 'a': use KEY=VALUE, e.g. k=v"),
        ("=1", "--opt '=1': the key before '=' is empty; use KEY=VALUE, e.g. k=v"),
        ("  =1", "the key before '=' is empty"),
        ("a\nb", "--opt 'a b': use KEY=VALUE"),
    ],
)
def test_split_pair_errors_are_one_line_of_the_given_class(text, needle):
    with pytest.raises(E.ConfigError) as err:
        E.split_pair(text, "--opt", E.ConfigError, "k=v")
    assert needle in str(err.value), str(err.value)
    assert "\n" not in str(err.value)
