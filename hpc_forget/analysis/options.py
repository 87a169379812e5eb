"""The analysis options, defined once: :class:`AnalysisOptions` holds their values (validated
when it is made), :data:`OPTIONS` their flags and help; `hpc-forget analyze` (Click) and the
analysis/ scripts (argparse) are both built from :data:`OPTIONS`, and
:func:`hpc_forget.analysis.entry.analyze` and ``compute_metrics`` take one ``AnalysisOptions``.

Plain data and two small builders; imports nothing heavy (the CLI imports it at start-up).
docs/metrics.md explains each reading.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from hpc_forget.errors import AnalysisError
from hpc_forget.study import languages as L

CONVENTIONS: tuple[str, ...] = ("paper", "paper-literal", "gem", "avalanche", "mhamdi")
P_SETS: tuple[str, ...] = ("common", "seen")
P_SET_DEFAULT = "common"
"""Eq. 9 (P_avg) and Fig. 3: P_t and P_{t+1} over the same languages, those learned up to t."""
HOP_P_SET_DEFAULT = "seen"
"""Eq. 13-14 (MFT/MBT): the paper's own words, P_i = average over the tasks seen up to step i."""


@dataclass(frozen=True)
class AnalysisOptions:
    """How a store is reduced into metrics (one field per entry of :data:`OPTIONS`).

    convention: Table 2's transfer convention (metrics.json holds all). vitality: None (High
    4-5, Mid 3, Low 0-2), a mapping or ``"High=4-5,Mid=3,Low=0-2"``. bootstrap/seed: the CIs'
    resamples and seed. p_set (eq. 9, Fig. 3) and hop_p_set (eq. 13-14): ``"common"`` or
    ``"seen"`` (docs/metrics.md). Bad values raise :class:`AnalysisError` naming the option.
    """

    convention: str = "paper"
    vitality: Mapping[str, Iterable[int]] | str | None = None
    bootstrap: int = 1000
    seed: int = 0
    p_set: str = P_SET_DEFAULT
    hop_p_set: str = HOP_P_SET_DEFAULT
    vitality_groups: dict[str, tuple[int, ...]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )
    """The vitality grouping, resolved and checked (derived from ``vitality``)."""

    def __post_init__(self) -> None:
        for flag, value, allowed in (
            ("--convention", self.convention, CONVENTIONS),
            ("--p-set", self.p_set, P_SETS),
            ("--hop-p-set", self.hop_p_set, P_SETS),
        ):
            if value not in allowed:
                raise AnalysisError(f"{flag} {value!r}: use one of {', '.join(allowed)}")
        if not isinstance(self.bootstrap, int) or self.bootstrap < 0:
            raise AnalysisError(f"--bootstrap {self.bootstrap}: use 0 (no CI) or a positive count")
        if not isinstance(self.seed, int):
            raise AnalysisError(f"--seed {self.seed!r}: use an integer")
        object.__setattr__(self, "vitality_groups", _vitality_groups(self.vitality))

    @classmethod
    def from_args(cls, obj: Any) -> AnalysisOptions:
        """The options from parsed arguments (an argparse Namespace, or a mapping such as
        Click's parameters); absent ones keep their defaults."""
        get = obj.get if isinstance(obj, Mapping) else lambda k: getattr(obj, k)
        return cls(**{o.dest: get(o.dest) for o in OPTIONS})


def _vitality_groups(
    vitality: Mapping[str, Iterable[int]] | str | None,
) -> dict[str, tuple[int, ...]]:
    if vitality is None:
        return dict(L.DEFAULT_VITALITY)
    try:
        if isinstance(vitality, str):
            return L.parse_vitality(vitality)
        return L.check_vitality(vitality)
    except L.LanguageError as exc:
        raise AnalysisError(f"--vitality: {exc}") from None


DEFAULTS = AnalysisOptions()


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
        DEFAULTS.convention,
        "backward/forward transfer convention of Table 2 (metrics.json holds all)",
        choices=CONVENTIONS,
    ),
    Option(
        "--vitality",
        "vitality",
        DEFAULTS.vitality,
        "vitality groups by Joshi class, e.g. 'High=4-5,Mid=3,Low=0-2' (the default)",
    ),
    Option(
        "--bootstrap",
        "bootstrap",
        DEFAULTS.bootstrap,
        "bootstrap resamples (0: no CI)",
        type=int,
        minimum=0,
    ),
    Option("--seed", "seed", DEFAULTS.seed, "bootstrap seed", type=int),
    Option(
        "--p-set",
        "p_set",
        DEFAULTS.p_set,
        "languages P_t averages over in eq. 9 (P_avg) and Fig. 3 (docs/metrics.md)",
        choices=P_SETS,
    ),
    Option(
        "--hop-p-set",
        "hop_p_set",
        DEFAULTS.hop_p_set,
        "languages P_i averages over in eq. 13-14 (MFT/MBT, Fig. 5-6); the paper: seen",
        choices=P_SETS,
    ),
)


def option_fields() -> tuple[str, ...]:
    """The fields of :class:`AnalysisOptions` that are options (all but derived ones)."""
    return tuple(f.name for f in fields(AnalysisOptions) if f.init)


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
