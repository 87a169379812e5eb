"""The analysis options, defined once: AnalysisOptions (values, checked when made) and OPTIONS
(the flags both Click and argparse are built from)."""

from __future__ import annotations

import argparse

import click
import pytest
from click.testing import CliRunner

from hpc_forget.analysis import options as O
from hpc_forget.errors import AnalysisError


def test_every_option_is_one_field_with_the_same_default():
    assert O.option_fields() == tuple(o.dest for o in O.OPTIONS)
    for o in O.OPTIONS:
        assert getattr(O.DEFAULTS, o.dest) == o.default, o.flag


def test_defaults_resolve_the_papers_vitality_groups():
    assert O.DEFAULTS.vitality_groups == {"High": (4, 5), "Mid": (3,), "Low": (0, 1, 2)}
    custom = O.AnalysisOptions(vitality="Top=5,Rest=0-4")
    assert custom.vitality_groups == {"Top": (5,), "Rest": (0, 1, 2, 3, 4)}


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"convention": "best"}, "--convention 'best': use one of paper, paper-literal"),
        ({"p_set": "all"}, "--p-set 'all': use one of common, seen"),
        ({"hop_p_set": "x"}, "--hop-p-set 'x': use one of common, seen"),
        ({"bootstrap": -1}, "--bootstrap -1: use 0 (no CI) or a positive count"),
        ({"seed": "1"}, "--seed '1': use an integer"),
        ({"vitality": "High=4-5"}, "--vitality: Joshi class(es) 0, 1, 2, 3"),
        ({"vitality": "High"}, "--vitality: cannot read vitality spec"),
    ],
)
def test_bad_values_raise_one_line_naming_the_flag(kw, needle):
    with pytest.raises(AnalysisError) as err:
        O.AnalysisOptions(**kw)
    assert str(err.value).startswith(needle), str(err.value)
    assert "\n" not in str(err.value)


def test_argparse_and_click_give_the_same_options():
    ap = argparse.ArgumentParser()
    O.add_argparse(ap)
    argv = ["--convention", "gem", "--bootstrap", "7", "--seed", "3", "--p-set", "seen"]
    from_argparse = O.AnalysisOptions.from_args(ap.parse_args(argv))

    seen = {}

    @click.command()
    @O.click_options
    def cmd(**kw):
        seen["options"] = O.AnalysisOptions.from_args(kw)

    result = CliRunner().invoke(cmd, argv)
    assert result.exit_code == 0, result.output
    assert seen["options"] == from_argparse
    assert from_argparse == O.AnalysisOptions(convention="gem", bootstrap=7, seed=3, p_set="seen")
    assert O.AnalysisOptions.from_args(ap.parse_args([])) == O.DEFAULTS


def test_click_choices_come_from_the_one_list():
    @click.command()
    @O.click_options
    def cmd(**kw):
        pass

    result = CliRunner().invoke(cmd, ["--convention", "nope"])
    assert result.exit_code == 2
    for c in O.CONVENTIONS:
        assert c in result.output
