"""Every anti-forgetting strategy by name (the registry the engine asks), and
:func:`get_strategy`. The hooks they implement are in :mod:`hpc_forget.run.hooks`; their
names, parameters and defaults in :mod:`hpc_forget.study.strategies`; docs/strategies.md
describes each.
"""

from __future__ import annotations

from hpc_forget.errors import ConfigError
from hpc_forget.run.hooks import NoStrategy, StepContext, Strategy
from hpc_forget.run.merging import Merge
from hpc_forget.run.penalties import Align, Ewc, L2sp
from hpc_forget.run.replay import Replay
from hpc_forget.run.weights import Freeze, Revert
from hpc_forget.study.strategies import STRATEGY_INFO, parse_canonical

__all__ = ["STRATEGIES", "NoStrategy", "StepContext", "Strategy", "get_strategy"]

STRATEGIES: dict[str, type[Strategy]] = {
    "none": NoStrategy,
    "freeze": Freeze,
    "l2sp": L2sp,
    "ewc": Ewc,
    "revert": Revert,
    "merge": Merge,
    "replay": Replay,
    "align": Align,
}
"""Every strategy by the name a run key stores (``RunKey.strategy``)."""


def get_strategy(text: str) -> Strategy:
    """A fresh strategy object for one task, from a run key's canonical ``strategy`` text
    (study/strategies.py); an unknown or unimplemented one is a one-line ConfigError."""
    if text in STRATEGIES and text not in STRATEGY_INFO:  # registered without parameters
        return STRATEGIES[text]()
    spec = parse_canonical(text)
    if spec.name not in STRATEGIES:
        raise ConfigError(
            f"strategy: {spec.name!r} is not implemented here; implemented:"
            f" {', '.join(sorted(STRATEGIES))}"
        )
    return STRATEGIES[spec.name](**spec.kwargs())
