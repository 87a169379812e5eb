"""The analysis options, defined once: `hpc-forget analyze` (Click) and the analysis/ scripts
(argparse) are both built from :data:`OPTIONS`, and :func:`hpc_forget.analysis.entry.analyze` takes
the same names as keyword arguments.

Plain data and two small builders; imports nothing heavy (the CLI imports it at start-up).
docs/metrics.md explains each reading.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

CONVENTIONS: tuple[str, ...] = ("paper", "paper-literal", "gem", "avalanche", "mhamdi")
P_SETS: tuple[str, ...] = ("common", "seen")
P_SET_DEFAULT = "common"
"""Eq. 9 (P_avg) and Fig. 3: P_t and P_{t+1} over the same languages, those learned up to t."""
HOP_P_SET_DEFAULT = "seen"
"""Eq. 13-14 (MFT/MBT): the paper's own words, P_i = average over the tasks seen up to step i."""


@dataclass(frozen=True)
class Option:
    """One analysis option: ``--flag`` on the command line, ``dest`` as a keyword argument."""

    flag: str
    dest: str
    default: Any
    help: str
    type: type = str
    choices: tuple[str, ...] | None = None
    minimum: int | None = None  # integers: the smallest allowed value


WORKERS = Option(
    "--workers", "workers", None, "processes drawing figures (default 2)", int, None, 1
)
"""Only for the commands that draw figures (`analyze`, analysis/figures.py, report.py)."""


OPTIONS: tuple[Option, ...] = (
    Option(
        "--convention",
        "convention",
        "paper",
        "backward/forward transfer convention of Table 2 (metrics.json holds all)",
        choices=CONVENTIONS,
    ),
    Option(
        "--vitality",
        "vitality",
        None,
        "vitality groups by Joshi class, e.g. 'High=4-5,Mid=3,Low=0-2' (the default)",
    ),
    Option("--bootstrap", "bootstrap", 1000, "bootstrap resamples (0: no CI)", type=int, minimum=0),
    Option("--seed", "seed", 0, "bootstrap seed", type=int),
    Option(
        "--p-set",
        "p_set",
        P_SET_DEFAULT,
        "languages P_t averages over in eq. 9 (P_avg) and Fig. 3 (docs/metrics.md)",
        choices=P_SETS,
    ),
    Option(
        "--hop-p-set",
        "hop_p_set",
        HOP_P_SET_DEFAULT,
        "languages P_i averages over in eq. 13-14 (MFT/MBT, Fig. 5-6); the paper: seen",
        choices=P_SETS,
    ),
)


def option_values(obj: Any) -> dict[str, Any]:
    """The options' keyword arguments from parsed arguments (an argparse Namespace, or a
    mapping such as Click's parameters)."""
    get = obj.get if isinstance(obj, dict) else lambda k: getattr(obj, k)
    return {o.dest: get(o.dest) for o in OPTIONS}


def _at_least(o: Option) -> Callable[[str], int]:
    """An argparse type: an integer >= ``o.minimum``, else a one-line usage error."""
    import argparse

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if o.minimum is not None and value < o.minimum:
            raise argparse.ArgumentTypeError(f"{value} is below the minimum {o.minimum}")
        return value

    return parse


def add_argparse(ap: Any, options: tuple[Option, ...] = OPTIONS) -> None:
    """Add ``options`` (default: every analysis option) to an ``argparse.ArgumentParser``."""
    for o in options:
        kind = _at_least(o) if o.minimum is not None else o.type
        kw: dict[str, Any] = {"dest": o.dest, "default": o.default, "type": kind}
        if o.choices:
            kw["choices"] = o.choices
        suffix = "" if o.default is None else f" (default {o.default})"
        ap.add_argument(o.flag, help=o.help + suffix, **kw)


def click_options(f: Callable, options: tuple[Option, ...] = OPTIONS) -> Callable:
    """Decorate a Click command with ``options`` (default: every analysis option, in order)."""
    import click

    for o in reversed(options):
        if o.choices:
            kind: Any = click.Choice(o.choices)
        elif o.minimum is not None:
            kind = click.IntRange(min=o.minimum)
        else:
            kind = o.type
        f = click.option(
            o.flag,
            o.dest,
            default=o.default,
            show_default=o.default is not None,
            type=kind,
            help=o.help[0].upper() + o.help[1:] + ".",
        )(f)
    return f
