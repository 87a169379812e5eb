"""The anti-forgetting strategies as plain data: names, parameters, defaults, the methods each
composes with, and the canonical text a run key stores. No torch: the implementations are in
:mod:`hpc_forget.run.strategies`, one class per name of :data:`STRATEGY_TABLE`.

A config lists strategies as names or mappings (``ewc`` or ``{name: ewc, lam: 50}``); each
becomes a :class:`StrategySpec` with every parameter filled in. Its canonical text,
``name(k=v,...)`` with the parameters sorted (``none`` alone), is the run key's ``strategy``
field: two runs share a strategy exactly when they share every parameter. docs/strategies.md
describes each one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hpc_forget.errors import ConfigError, one_line
from hpc_forget.study.methods import METHOD_NAMES

SEQUENTIAL = ("vanilla", "shared_lora")
PER_LANGUAGE = ("mono", "nonshared_lora")
LAYER_PARTS = ("all", "embeddings", "bottom", "top", "listed")


@dataclass(frozen=True)
class Param:
    """One parameter of a strategy: its kind (int, float, choice, names), default and range."""

    name: str
    default: Any
    kind: str  # "int" | "float" | "choice" | "names" (a list of parameter-name prefixes)
    help: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class StrategyInfo:
    name: str
    summary: str
    methods: tuple[str, ...]  # the methods it composes with
    params: tuple[Param, ...] = ()


_PART = Param(
    "part",
    "embeddings",
    "choice",
    "which weights: embeddings, the bottom or top k encoder layers, or a listed set",
    choices=LAYER_PARTS[1:],
)
_K = Param("k", 2, "int", "how many encoder layers (part bottom or top)", lo=0, hi=1000)
_LISTED = Param(
    "listed", (), "names", "parameter-name prefixes (part listed), e.g. encoder.layer.0"
)
_ANCHOR = Param(
    "anchor",
    "previous",
    "choice",
    "the weights pulled toward: before the step (previous) or before the first (initial)",
    choices=("previous", "initial"),
)

STRATEGY_TABLE: tuple[StrategyInfo, ...] = (
    StrategyInfo("none", "the paper's methods as published", METHOD_NAMES),
    StrategyInfo("freeze", "hard layer freezing", SEQUENTIAL, (_PART, _K, _LISTED)),
    StrategyInfo(
        "l2sp",
        "L2-SP: an L2 penalty toward anchor weights",
        SEQUENTIAL,
        (Param("lam", 0.01, "float", "penalty strength", lo=0.0, hi=1e12), _ANCHOR),
    ),
    StrategyInfo(
        "ewc",
        "elastic weight consolidation with a diagonal Fisher of the earlier languages",
        SEQUENTIAL,
        (
            Param("lam", 100.0, "float", "penalty strength", lo=0.0, hi=1e12),
            Param(
                "fisher_examples",
                200,
                "int",
                "training examples per language the Fisher is estimated on",
                lo=1,
                hi=10**7,
            ),
            Param(
                "variant",
                "online",
                "choice",
                "separate (one penalty per earlier language) or online (one running estimate)",
                choices=("separate", "online"),
            ),
            Param("gamma", 1.0, "float", "online: decay of the running Fisher", lo=0.0, hi=1.0),
        ),
    ),
    StrategyInfo(
        "revert",
        "post-hoc weight reversion after each step",
        SEQUENTIAL,
        (
            Param("alpha", 0.5, "float", "fraction moved back toward the anchor", lo=0.0, hi=1.0),
            _ANCHOR,
            Param("part", "all", "choice", "which weights (as freeze's part)", choices=LAYER_PARTS),
            _K,
            _LISTED,
        ),
    ),
    StrategyInfo(
        "merge",
        "model merging: per-language models into one, or each step with the model before it",
        SEQUENTIAL + PER_LANGUAGE,
        (
            Param(
                "how",
                "linear",
                "choice",
                "linear averaging, task arithmetic or TIES",
                choices=("linear", "task_arithmetic", "ties"),
            ),
            Param(
                "weight",
                0.5,
                "float",
                "sequential: the new model's weight (linear)",
                lo=0.0,
                hi=1.0,
            ),
            Param(
                "scale",
                1.0,
                "float",
                "task arithmetic / TIES: scale of the summed task vectors",
                lo=0.0,
                hi=100.0,
            ),
            Param(
                "density", 0.2, "float", "TIES: fraction of each task vector kept", lo=0.0, hi=1.0
            ),
        ),
    ),
    StrategyInfo(
        "replay",
        "experience replay: k examples of each earlier language mixed into each step",
        SEQUENTIAL,
        (Param("k", 20, "int", "examples per earlier language", lo=1, hi=10**7),),
    ),
    StrategyInfo(
        "align",
        "cross-lingual alignment of parallel utterances (same MASSIVE id)",
        SEQUENTIAL,
        (
            Param("beta", 0.1, "float", "weight of the alignment loss", lo=0.0, hi=1e6),
            Param("pairs", 16, "int", "parallel pairs per training batch", lo=1, hi=4096),
        ),
    ),
)

STRATEGY_INFO: Mapping[str, StrategyInfo] = {s.name: s for s in STRATEGY_TABLE}
STRATEGY_NAMES: tuple[str, ...] = tuple(STRATEGY_INFO)


@dataclass(frozen=True)
class StrategySpec:
    """A strategy with every parameter set (sorted by name)."""

    name: str = "none"
    params: tuple[tuple[str, Any], ...] = ()

    @property
    def canonical(self) -> str:
        """``name(k=v,...)``: the run key's ``strategy`` (``none`` alone)."""
        if not self.params:
            return self.name
        return f"{self.name}({','.join(f'{k}={_text(v)}' for k, v in self.params)})"

    def get(self, name: str) -> Any:
        return dict(self.params)[name]

    def kwargs(self) -> dict[str, Any]:
        return dict(self.params)

    def composes_with(self, method: str) -> bool:
        return method in STRATEGY_INFO[self.name].methods


NONE = StrategySpec()


def _text(v: Any) -> str:
    if isinstance(v, tuple):
        return "+".join(v)
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _value(p: Param, v: Any, where: str) -> Any:
    """``v`` checked and typed as parameter ``p``; a one-line ConfigError otherwise."""
    if p.kind == "names":
        if isinstance(v, str):
            v = [x for x in v.split("+") if x]
        if not isinstance(v, list | tuple) or not all(isinstance(x, str) and x for x in v):
            raise ConfigError(one_line(f"{where}: must be a list of parameter-name prefixes"))
        return tuple(v)
    if p.kind == "choice":
        if v not in p.choices:
            raise ConfigError(
                one_line(f"{where}: must be one of {', '.join(p.choices)}, got {v!r}")
            )
        return v
    if isinstance(v, bool):
        raise ConfigError(one_line(f"{where}: must be a number, got {v!r}"))
    try:
        num = int(v) if p.kind == "int" else float(v)
    except (TypeError, ValueError):
        raise ConfigError(
            one_line(
                f"{where}: must be {'an integer' if p.kind == 'int' else 'a number'}, got {v!r}"
            )
        ) from None
    if p.kind == "int" and isinstance(v, float) and not v.is_integer():
        raise ConfigError(one_line(f"{where}: must be an integer, got {v!r}"))
    if num != num or (p.lo is not None and num < p.lo) or (p.hi is not None and num > p.hi):
        raise ConfigError(one_line(f"{where}: must be in [{p.lo:g}, {p.hi:g}], got {v!r}"))
    return num


def strategy_spec(raw: Any, where: str = "strategies[0]") -> StrategySpec:
    """A config entry (``"ewc"`` or ``{name: ewc, lam: 50}``) as a full StrategySpec."""
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, Mapping) or "name" not in raw:
        raise ConfigError(
            one_line(f"{where}: must be a strategy name or a mapping with 'name', got {raw!r}")
        )
    name = raw["name"]
    if name not in STRATEGY_INFO:
        raise ConfigError(
            one_line(
                f"{where}.name: unknown strategy {name!r}; choose from {', '.join(STRATEGY_NAMES)}"
            )
        )
    info = STRATEGY_INFO[name]
    known = {p.name: p for p in info.params}
    extra = sorted(set(raw) - set(known) - {"name"})
    if extra:
        allowed = ", ".join(known) or "none"
        raise ConfigError(
            one_line(
                f"{where}.{extra[0]}: {name} has no parameter {extra[0]!r} (allowed: {allowed})"
            )
        )
    params = tuple(
        (p.name, _value(p, raw.get(p.name, p.default), f"{where}.{p.name}"))
        for p in sorted(info.params, key=lambda p: p.name)
    )
    return StrategySpec(name, params)


def parse_canonical(text: str) -> StrategySpec:
    """The StrategySpec a run key's ``strategy`` text stands for (its inverse is
    :attr:`StrategySpec.canonical`)."""
    name, _, rest = text.partition("(")
    raw: dict[str, Any] = {"name": name}
    if rest:
        if not rest.endswith(")"):
            raise ConfigError(one_line(f"strategy {text!r}: not a canonical strategy text"))
        for item in filter(None, rest[:-1].split(",")):
            k, _, v = item.partition("=")
            raw[k] = v
    spec = strategy_spec(raw, f"strategy {text!r}")
    if spec.canonical != text:
        raise ConfigError(
            one_line(f"strategy {text!r}: not canonical (expected {spec.canonical!r})")
        )
    return spec
