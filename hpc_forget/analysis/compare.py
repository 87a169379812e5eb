"""Each anti-forgetting strategy against ``none`` (pure: a function of the metrics dict).

:func:`compare_strategies` pairs every group whose strategy is not ``none`` with the ``none``
group of the same method, model, rank, data scale and settings, and for each of
:data:`COMPARED` (final average F1, CBT, CFT, MBT_0) gives the strategy's value, none's value
and the difference strategy - none, each with a bootstrap CI. The per-run values are the ones
:func:`hpc_forget.analysis.reduce.compute_metrics` already computed (the analysis's
convention and P sets), so the comparison never recomputes a metric another way.

Pairing (docs/analysis.md, "Strategies against none"):

* sequential groups: a strategy run is paired with the none run of the same order and seed
  that trained the same sequence; the bootstrap unit is the **order** (the seeds of a drawn
  order resampled within it), as for every other CI of the analysis;
* per-language methods merged post hoc (a ``joint`` run, steps ``("merged",)``) against the
  per-language none run (MONO, NON-SHARED LoRA) of the same seed: only final F1, paired per
  language (the merged model's score on a language against that language's own model); the
  bootstrap unit is the **language** (its seeds resampled within it). CBT, CFT and MBT_0 are
  ``n/a`` there.

Within a row, the strategy's value, none's value and the difference are computed over the
same pairs (those where both sides have a value), so the difference is exactly the
strategy's value minus none's. A row that cannot be paired says why in ``status``; nothing
is read as 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from hpc_forget.analysis import metrics as M

COMPARED: tuple[tuple[str, str], ...] = (
    ("f1", "final average F1"),
    ("cbt", "CBT"),
    ("cft", "CFT"),
    ("mbt_0", "MBT_0"),
)
"""(name, display name) of each metric compared, in table and figure order."""

NO_NONE_GROUP = "no none run of the same method, model, rank, data scale and settings"
NO_SAME_ORDERS = "no none run on the same orders"
NO_SAME_SEEDS = "no none run with the same seeds"
NO_VALUES = "no pair where both runs have a value"
NOT_SEQUENTIAL = "n/a: final F1 only (the merged model has no training sequence)"
OTHER_KIND = "n/a: the none run is of another kind"

_CELL = ("method", "model", "rank", "data_scale", "settings")


def _num(x: Any) -> float:
    return float("nan") if x is None else float(x)


def _value(run: Mapping[str, Any], name: str, hop0: int | None) -> float:
    """A run's value of a compared metric (NaN when it has none)."""
    m = run["metrics"]
    if name == "mbt_0":
        h = m.get("mbt_h")
        return _num(h[hop0]) if h is not None and hop0 is not None and hop0 < len(h) else math.nan
    return _num(m.get(name))


def _paired_summaries(
    pairs: Sequence[tuple[float, float, Any]], resamples: int, seed: int
) -> dict[str, Any]:
    """Strategy, none and difference summaries over the pairs where both values exist."""
    ok = [(s, n, c) for s, n, c in pairs if not (math.isnan(s) or math.isnan(n))]
    if not ok:
        return {"strategy": None, "none": None, "difference": None, "pairs": 0, "status": NO_VALUES}
    cl = [c for _, _, c in ok]
    kw = {"resamples": resamples, "seed": seed}
    return {
        "strategy": M.summarize([s for s, _, _ in ok], cl, **kw),
        "none": M.summarize([n for _, n, _ in ok], cl, **kw),
        "difference": M.summarize([s - n for s, n, _ in ok], cl, **kw),
        "pairs": len(ok),
        "status": None,
    }


def _alone(
    values: Sequence[float], clusters: Sequence[Any], status: str, resamples: int, seed: int
) -> dict[str, Any]:
    """The strategy's own value (no pair): none and the difference are absent, with why."""
    return {
        "strategy": M.summarize(list(values), list(clusters), resamples=resamples, seed=seed),
        "none": None,
        "difference": None,
        "pairs": 0,
        "status": status,
    }


def _na(status: str) -> dict[str, Any]:
    return {"strategy": None, "none": None, "difference": None, "pairs": 0, "status": status}


def _order_name(run: Mapping[str, Any]) -> str:
    return str(run["key"].get("order", ""))


def _seed(run: Mapping[str, Any]) -> int:
    return int(run["key"].get("seed", 0) or 0)


def _sequential(
    entry: dict[str, Any],
    s_runs: Sequence[Mapping[str, Any]],
    n_runs: Sequence[Mapping[str, Any]] | None,
    hop0: int | None,
    resamples: int,
    seed: int,
) -> None:
    entry["unit"] = "order"
    by_cell = {(_order_name(r), _seed(r)): r for r in (n_runs or [])}
    pairs: list[tuple[Mapping[str, Any], Mapping[str, Any]]] = []
    unpaired: list[str] = []
    other_sequence = False
    for r in s_runs:
        o, sd = _order_name(r), _seed(r)
        n = by_cell.get((o, sd))
        if n is None:
            unpaired.append(f"order {o} seed {sd}: no none run")
        elif list(n["steps"]) != list(r["steps"]) or list(n["languages"]) != list(r["languages"]):
            unpaired.append(f"order {o} seed {sd}: the none run trained another sequence")
            other_sequence = True
        else:
            pairs.append((r, n))
    entry["paired"] = [[_order_name(r), _seed(r)] for r, _ in pairs]
    entry["unpaired"] = unpaired if n_runs is not None else []
    status = None
    if n_runs is None:
        status = NO_NONE_GROUP
    elif not pairs:
        same_orders = {_order_name(r) for r in s_runs} & {_order_name(r) for r in n_runs}
        status = NO_SAME_SEEDS if same_orders and not other_sequence else NO_SAME_ORDERS
    entry["status"] = status
    out: dict[str, Any] = {}
    for name, _ in COMPARED:
        if name == "mbt_0" and hop0 is None:
            out[name] = _na("n/a: hop 0 was not computed")
        elif status is not None:
            out[name] = _alone(
                [_value(r, name, hop0) for r in s_runs],
                [_order_name(r) for r in s_runs],
                status,
                resamples,
                seed,
            )
        else:
            out[name] = _paired_summaries(
                [(_value(r, name, hop0), _value(n, name, hop0), _order_name(r)) for r, n in pairs],
                resamples,
                seed,
            )
    entry["metrics"] = out


def _per_language(
    entry: dict[str, Any],
    s_runs: Sequence[Mapping[str, Any]],
    n_runs: Sequence[Mapping[str, Any]] | None,
    resamples: int,
    seed: int,
) -> None:
    entry["unit"] = "language"
    by_seed = {_seed(r): r for r in (n_runs or [])}
    pairs: list[tuple[float, float, str]] = []
    alone: list[tuple[float, str]] = []
    paired, unpaired = [], []
    for r in s_runs:
        s_scores = r["metrics"].get("per_language") or {}
        alone.extend((_num(v), lang) for lang, v in s_scores.items())
        n = by_seed.get(_seed(r))
        if n is None:
            unpaired.append(f"seed {_seed(r)}: no none run")
            continue
        n_scores = n["metrics"].get("per_language") or {}
        paired.append(_seed(r))
        for lang, v in s_scores.items():
            if lang in n_scores:
                pairs.append((_num(v), _num(n_scores[lang]), lang))
            else:
                unpaired.append(f"seed {_seed(r)} {lang}: the none run has no such language")
    entry["paired"] = paired
    entry["unpaired"] = unpaired if n_runs is not None else []
    status = NO_NONE_GROUP if n_runs is None else (NO_SAME_SEEDS if not paired else None)
    entry["status"] = status
    if status is not None:
        f1 = _alone([v for v, _ in alone], [c for _, c in alone], status, resamples, seed)
    else:
        f1 = _paired_summaries(pairs, resamples, seed)
    entry["metrics"] = {name: f1 if name == "f1" else _na(NOT_SEQUENTIAL) for name, _ in COMPARED}


def compare_strategies(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One entry per group whose strategy is not ``none``, in the groups' order.

    ``metrics`` is :func:`~hpc_forget.analysis.reduce.compute_metrics`'s dict (or a
    metrics.json read back); the bootstrap's resamples and seed are its
    ``settings["bootstrap"]`` (the analysis options'), so a call is deterministic. Each entry:
    ``group`` / ``label`` / ``key`` / ``kind`` of the strategy's group, ``none_group`` /
    ``none_label`` (None without a counterpart), ``unit`` (``order`` or ``language``),
    ``paired`` (the (order, seed) pairs, or the seeds), ``unpaired`` (why each strategy run
    was left out), ``status`` (None, or why nothing could be paired) and ``metrics``:
    ``{name: {"strategy", "none", "difference": summaries (mean, std, ci_low, ci_high, n,
    ci_units) or None, "pairs": int, "status": None or why not}}`` for each of
    :data:`COMPARED`. Without a pair, ``strategy`` is the strategy's own value over its runs.
    An empty list when every group is ``none``.
    """
    settings = metrics.get("settings", {})
    b = settings.get("bootstrap", {})
    resamples, seed = int(b.get("resamples", 1000)), int(b.get("seed", 0))
    hops = list(settings.get("hops", M.HOPS))
    hop0 = hops.index(0) if 0 in hops else None
    runs_of: dict[str, list[Mapping[str, Any]]] = {}
    for r in metrics.get("runs", []):
        runs_of.setdefault(str(r.get("group")), []).append(r)

    def cell(g: Mapping[str, Any]) -> tuple:
        return tuple(g["key"].get(k) for k in _CELL)

    nones = {cell(g): g for g in metrics.get("groups", []) if g["key"]["strategy"] == "none"}
    out: list[dict[str, Any]] = []
    for g in metrics.get("groups", []):
        if g["key"]["strategy"] == "none":
            continue
        n = nones.get(cell(g))
        entry: dict[str, Any] = {
            "group": g["id"],
            "label": g["label"],
            "key": dict(g["key"]),
            "kind": g["kind"],
            "none_group": n["id"] if n else None,
            "none_label": n["label"] if n else None,
        }
        s_runs = runs_of.get(g["id"], [])
        n_runs = runs_of.get(n["id"], []) if n else None
        s_seq = g["kind"] == "sequential"
        if n is not None and (n["kind"] == "sequential") != s_seq:
            entry.update(unit=None, paired=[], unpaired=[], status=OTHER_KIND)
            entry["metrics"] = {name: _na(OTHER_KIND) for name, _ in COMPARED}
        elif s_seq:
            _sequential(entry, s_runs, n_runs, hop0, resamples, seed)
        else:
            _per_language(entry, s_runs, n_runs, resamples, seed)
        out.append(entry)
    return out


def comparison_entries(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The metrics dict's ``strategy_comparison``; computed by :func:`compare_strategies`
    for a metrics.json written before the comparison existed."""
    if "strategy_comparison" in metrics:
        return list(metrics["strategy_comparison"] or [])
    return compare_strategies(metrics)
