"""Reduce runs to the metrics dict written as metrics.json (pure: no files, no store).

:func:`compute_metrics` — the store's RunRecords -> per-run metrics, per-group mean/std/bootstrap CI,
per-language MFT/MBT, groupings, each strategy against none (:mod:`~hpc_forget.analysis.compare`); :func:`attach_params` fills Table 1's Params column. Also the
small helpers the tables and figures share (grouping, labels, NaN-tolerant means).
See docs/metrics.md (formulas).
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hpc_forget.analysis import metrics as M
from hpc_forget.analysis.compare import compare_strategies
from hpc_forget.analysis.load import StoreData
from hpc_forget.analysis.options import DEFAULTS, AnalysisOptions
from hpc_forget.study import languages as L
from hpc_forget.study.methods import DISPLAY_NAME, METHOD_KIND, METHOD_NAMES

if TYPE_CHECKING:
    from hpc_forget.store.format import RunRecord

SCHEMA_VERSION = 1
GROUP_FIELDS: tuple[str, ...] = ("method", "model", "rank", "strategy", "data_scale", "settings")
"""What a group of averaged runs shares: the grid cell, and the settings digest of the run key
(runs of different settings are never averaged together)."""
ParamsFn = Callable[[Mapping[str, Any], int], "float | None"]


def as_float(x: Any) -> float:
    """None/NaN-tolerant float."""
    return float("nan") if x is None else float(x)


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, numpy -> Python, tuples -> lists, keys -> str."""
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    return obj


def mean_of(values: Iterable[float]) -> float:
    """The mean of ``values`` with None/NaN left out (NaN when none is left)."""
    v = np.asarray([as_float(x) for x in values], dtype=float)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else float("nan")


def slug(text: str) -> str:
    """``text`` as a file-name part: runs of other characters than letters, digits and dots
    become one "-"."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "x"


GROUP_ID_MAX = 96
"""A group id is part of figure file names: a longer one (a strategy's canonical text can be
long, e.g. freeze with many listed prefixes) is cut and ends in a digest of the whole."""


def short_id(text: str, limit: int = GROUP_ID_MAX) -> str:
    """``text`` if at most ``limit`` characters, else its first ones, "-" and 8 hex of its
    sha256 (distinct texts stay distinct)."""
    if len(text) <= limit:
        return text
    import hashlib

    return f"{text[: limit - 9]}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def group_key(key: Mapping[str, Any]) -> tuple:
    """What identifies a group of runs averaged together (over orders and seeds): the fields
    of :data:`GROUP_FIELDS`, the settings digest last."""
    return (
        str(key.get("method", "")),
        str(key.get("model", "")),
        int(key.get("rank", 0) or 0),
        str(key.get("strategy", "none") or "none"),
        float(key.get("data_scale", 1.0) if key.get("data_scale") is not None else 1.0),
        str(key.get("settings", "") or ""),
    )


def method_label(method: str, rank: int, strategy: str = "none", data_scale: float = 1.0) -> str:
    """Display label: ``SHARED LoRA r=32``, ``MULTI``, ``VANILLA [ewc, data x0.5]``."""
    s = DISPLAY_NAME.get(method, method)
    if rank:
        s += f" r={rank}"
    extra = []
    if strategy and strategy != "none":
        extra.append(strategy)
    if data_scale != 1.0:
        extra.append(f"data x{data_scale:g}")
    if extra:
        s += f" [{', '.join(extra)}]"
    return s


def _group_sort_key(gk: tuple, model_rank: Mapping[str, int], settings_label: str) -> tuple:
    method, model, rank, strategy, scale, digest = gk
    m = METHOD_NAMES.index(method) if method in METHOD_NAMES else len(METHOD_NAMES)
    cell = (model_rank.get(model, 0), m, method, strategy != "none", strategy, -scale, rank)
    return (*cell, settings_label, digest)


def settings_groups(runs: Sequence[RunRecord]) -> dict[tuple, dict[str, Any]]:
    """For every group key: its settings dict and a label naming only the settings keys in
    which it differs from the other groups of the same grid cell ("" when the store holds
    one settings for that cell; :func:`hpc_forget.study.identity.settings_labels`)."""
    from hpc_forget.study.identity import settings_labels

    settings: dict[tuple, dict[str, Any]] = {}
    for r in runs:
        settings.setdefault(group_key(r.key), dict(r.settings))
    cells: dict[tuple, list[tuple]] = {}
    for gk in settings:
        cells.setdefault(gk[:-1], []).append(gk)
    out: dict[tuple, dict[str, Any]] = {}
    for gks in cells.values():
        labels = settings_labels([settings[g] for g in gks]) if len(gks) > 1 else [""]
        for g, lab in zip(gks, labels, strict=True):
            out[g] = {"settings": settings[g], "label": lab, "of_cell": len(gks)}
    return out


def settings_note(runs: Sequence[RunRecord]) -> str | None:
    """One line when some grid cell of the store holds runs of more than one settings."""
    from hpc_forget.study.identity import differing_keys

    by_cell: dict[tuple, dict[str, dict[str, Any]]] = {}
    for r in runs:
        gk = group_key(r.key)
        by_cell.setdefault(gk[:-1], {}).setdefault(gk[-1], dict(r.settings))
    split = [c for c in by_cell.values() if len(c) > 1]
    if not split:
        return None
    keys = sorted({k for c in split for k in differing_keys(list(c.values()))})
    n = max(len(c) for c in split)
    return (
        f"note: the store holds runs of {n} settings, differing in "
        f"{', '.join(keys) or 'their settings digest'}; each is analysed as its own group"
    )


def language_scores(run: RunRecord) -> dict[str, float]:
    """Final test F1 per evaluated language: the last row (sequential), else the run's
    expected cells (joint: step 0; per-language: the cells of
    :meth:`~hpc_forget.store.format.RunRecord.expected_cells`, the store's rule). NaN where
    the cell is absent. The one rule for a run's final scores (the summary `hpc-forget run`
    prints uses it too)."""
    m = run.R
    col = {lang: j for j, lang in enumerate(run.languages)}
    out = {lang: float("nan") for lang in run.languages}
    if m.size == 0:
        return out
    if run.kind == "sequential":
        row = m[-1]
        return {lang: float(row[j]) for lang, j in col.items()}
    for i, lang in run.expected_cells():
        if lang in col and i < m.shape[0]:
            out[lang] = float(m[i, col[lang]])
    return out


def _trainable_from_meta(run: RunRecord) -> float | None:
    """Trainable parameters (millions) the engine recorded: ``meta["trainable_params"]``
    (an int, the step model's count) of each step; None when no step has it."""
    vals = [
        float(meta["trainable_params"])
        for meta in run.step_meta.values()
        if isinstance(meta.get("trainable_params"), int)
        and not isinstance(meta["trainable_params"], bool)
    ]
    if not vals:
        return None
    total = sum(vals) if run.kind == "per-language" else max(vals)
    return total / 1e6


def default_params(key: Mapping[str, Any], n_languages: int) -> float | None:
    """Trainable parameters in millions, the paper's convention, for a preset model
    (:data:`hpc_forget.models.params.PRESETS`, by name or hub id, with or without ``@revision``),
    from its shape alone (:func:`hpc_forget.models.params.encoder_counts`); None for any other model.
    Never imports torch and never touches the network. Pass ``params=`` to :func:`analyze` to
    supply your own callable ``(key, n_languages) -> M``."""
    from hpc_forget.models.params import encoder_counts, preset_config, preset_name
    from hpc_forget.study.config import split_revision

    model, _ = split_revision(str(key.get("model", "")))
    preset = preset_name(model)
    if preset is None:
        return None
    rank = int(key.get("rank", 0) or 0)
    counts = encoder_counts(preset_config(preset), [rank] if rank else [], num_labels=111)
    one = counts.lora_paper[rank] if rank else counts.full_paper
    copies = n_languages if METHOD_KIND.get(str(key.get("method", ""))) == "per-language" else 1
    return one * copies / 1e6


def attach_params(
    metrics: dict[str, Any], data: StoreData, params: ParamsFn | None = None
) -> dict[str, Any]:
    """Fill each group's ``params_m`` (Table 1's Params column) and ``params_source`` in
    place and return metrics.

    Source: ``params`` (default :func:`default_params`: arithmetic on the known presets'
    shapes, the paper's convention); if it gives None, the largest ``trainable_params`` the
    engine recorded in the step meta (summed over languages for per-language methods); else
    None ("-" in Table 1). Nothing here imports torch or touches the network.
    """
    fn = params if params is not None else default_params
    by_id = {r.run_id: r for r in data.runs}
    for g in metrics["groups"]:
        try:
            pm = fn(dict(g["key"]), int(g["n_languages"]))
        except Exception:  # a broken params source must not stop the analysis
            pm = None
        if pm is None:
            metas = [
                p
                for p in (_trainable_from_meta(by_id[r]) for r in g["runs"] if r in by_id)
                if p is not None
            ]
            pm = max(metas) if metas else None
            source = "store" if pm is not None else None
        else:
            source = "preset" if params is None else "caller"
        ok = pm is not None and math.isfinite(pm)
        g["params_m"] = float(pm) if ok else None
        g["params_source"] = source if ok else None
    return metrics


@dataclass
class _RunResult:
    record: dict[str, Any]
    scores: dict[str, float]
    order: list[str] | None = None
    R: np.ndarray | None = None
    curve: np.ndarray | None = None
    change: np.ndarray | None = None
    mft: np.ndarray | None = None
    mbt: np.ndarray | None = None


def _run_metrics(
    run: RunRecord,
    *,
    convention: str,
    vit: Mapping[str, tuple[int, ...]],
    p_set: str,
    hop_p_set: str,
    hops: Sequence[int],
    problems: list[str],
) -> _RunResult:
    scores = language_scores(run)
    missing = run.missing()
    present = int(np.count_nonzero(~np.isnan(run.R))) if run.R.size else 0
    done_rows = (
        [i for i in range(run.R.shape[0]) if np.any(~np.isnan(run.R[i]))] if run.R.size else []
    )
    by_vit = L.group_locales(scores, "vitality", vit)
    record: dict[str, Any] = {
        "run_id": run.run_id,
        "key": dict(run.key),
        "group": None,
        "kind": run.kind,
        "languages": list(run.languages),
        "steps": list(run.steps),
        "cells_expected": len(run.expected_cells()),
        "cells_present": present,
        "missing": [[s, lang] for s, lang in missing],
        "complete": not missing,
        "last_step_with_scores": max(done_rows) if done_rows else None,
        "metrics": {
            "f1": mean_of(scores.values()),
            "f1_by_vitality": {g: mean_of(scores[x] for x in by_vit.get(g, [])) for g in vit},
            "per_language": scores,
        },
    }
    res = _RunResult(record=record, scores=scores)
    if run.kind != "sequential":
        return res
    try:
        R = M.order_aligned(run.R, run.languages, run.steps)
    except M.MetricsError as exc:
        problems.append(f"{run.run_id}: no sequential metrics ({exc})")
        return res
    curve = M.avg_f1_learned(R)
    shift = M.performance_shift(R, p_set) if len(R) > 1 else np.array([])
    f, b = M.hop_matrices(R, hops, hop_p_set)
    mt = record["metrics"]
    # Table 1's F1 of a sequential run: the order-aligned final F1 (the languages trained;
    # a language evaluated but never trained stays in per_language only)
    trained = {lang: scores[lang] for lang in run.steps if lang in scores}
    by_vit = L.group_locales(trained, "vitality", vit)
    mt.update(
        {
            "f1": M.final_f1(R),
            "f1_by_vitality": {g: mean_of(trained[x] for x in by_vit.get(g, [])) for g in vit},
            "avg_f1_curve": curve,
            "cbt": M.cbt(R, convention),
            "cft": M.cft(R, convention),
            "p_avg": float(M.nanmean(shift)) if shift.size else float("nan"),
            "shift_curve": shift,
            "transfer": M.transfer_all(R),
            "fwt_k": {k: M.fwt_k(R, k) for k in range(1, min(6, len(R)))},
            "mft_h": M.hop_scalars(f),
            "mbt_h": M.hop_scalars(b),
        }
    )
    res.order, res.R, res.curve = list(run.steps), R, curve
    res.change = M.performance_change(R, p_set)
    res.mft, res.mbt = f, b
    return res


def _model_order(runs: Sequence[RunRecord]) -> dict[str, int]:
    """Models in the order the experiment config lists them (``config["models"]``), then
    the others alphabetically: the store itself lists runs by id."""
    order: list[str] = []
    for r in runs:
        for m in r.config.get("models", []) if isinstance(r.config.get("models"), list) else []:
            if str(m) not in order:
                order.append(str(m))
    for m in sorted({str(r.key.get("model", "")) for r in runs}):
        if m not in order:
            order.append(m)
    return {m: i for i, m in enumerate(order)}


def _stack_curves(curves: Sequence[np.ndarray]) -> np.ndarray:
    n = max(len(c) for c in curves)
    out = np.full((len(curves), n), np.nan)
    for i, c in enumerate(curves):
        out[i, : len(c)] = c
    return out


def _curve_summary(curves: Sequence[np.ndarray]) -> dict[str, Any]:
    X = _stack_curves(curves)
    n = (~np.isnan(X)).sum(axis=0)
    mean = np.asarray(M.nanmean(X, axis=0))
    dev = np.where(np.isnan(X), 0.0, X - mean)
    with np.errstate(invalid="ignore", divide="ignore"):
        std = np.where(n >= 2, np.sqrt((dev**2).sum(axis=0) / np.maximum(n - 1, 1)), np.nan)
    return {"mean": mean, "std": std, "n": n}


def compute_metrics(
    data: StoreData, options: AnalysisOptions = DEFAULTS, *, hops: Sequence[int] = M.HOPS
) -> dict[str, Any]:
    """Every metric of the store as a JSON-ready dict (the content of metrics.json).

    Pure. NaN is written as null. Table 1's params are added by :func:`attach_params`.
    ``strategy_comparison``: :func:`~hpc_forget.analysis.compare.compare_strategies` of the
    result (``[]`` when every group's strategy is none).
    ``options.p_set`` is eq. 9's (P_avg, Fig. 3) reading of P, ``options.hop_p_set`` eq.
    13-14's (MFT, MBT).
    """
    convention, p_set, hop_p_set = options.convention, options.p_set, options.hop_p_set
    bootstrap, seed, vit = options.bootstrap, options.seed, options.vitality_groups
    problems = list(data.problems)

    results = [
        _run_metrics(
            r,
            convention=convention,
            vit=vit,
            p_set=p_set,
            hop_p_set=hop_p_set,
            hops=hops,
            problems=problems,
        )
        for r in data.runs
    ]

    # ---- group runs: GROUP_FIELDS (grid cell + settings); units = orders, then seeds
    model_rank = _model_order(data.runs)
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(data.runs):
        groups.setdefault(group_key(r.key), []).append(i)
    by_settings = settings_groups(data.runs)
    ordered = sorted(
        groups, key=lambda gk: _group_sort_key(gk, model_rank, by_settings[gk]["label"])
    )

    # the sequential orders of each model, used to draw Fig. 2 curves of non-sequential runs
    orders_by_model: dict[str, list[list[str]]] = {}
    for res, run in zip(results, data.runs, strict=True):
        if res.order is not None:
            lst = orders_by_model.setdefault(str(run.key.get("model", "")), [])
            if res.order not in lst:
                lst.append(res.order)

    def summ(values: Iterable[float], of: Sequence[_RunResult]) -> dict[str, Any]:
        """Summary over the runs ``of`` (one value each); the bootstrap resamples their
        orders, then their seeds within an order."""
        orders = [str(x.record["key"].get("order", "")) for x in of]
        return M.summarize(list(values), orders, resamples=bootstrap, seed=seed)

    group_records: list[dict[str, Any]] = []
    used_ids: set[str] = set()
    for gk in ordered:
        idx = groups[gk]
        runs = [data.runs[i] for i in idx]
        res = [results[i] for i in idx]
        method, model, rank, strategy, scale, digest = gk
        sg = by_settings[gk]
        kinds = sorted({r.kind for r in runs})
        gid = slug(f"{method}_{model.rstrip('/').split('/')[-1]}_r{rank}_{strategy}_d{scale:g}")
        if sg["of_cell"] > 1:
            gid += f"_s{digest or 'none'}"
        gid = short_id(gid)
        while gid in used_ids:
            gid += "x"
        used_ids.add(gid)
        for x in res:
            x.record["group"] = gid
        n_lang = max(len(r.languages) for r in runs)
        mts = [x.record["metrics"] for x in res]
        headline: dict[str, Any] = {"f1": summ((m["f1"] for m in mts), res)}
        for g in vit:
            headline[f"f1_{g}"] = summ((m["f1_by_vitality"][g] for m in mts), res)
        seq = [x for x in res if x.R is not None]
        langs_all: list[str] = []
        for r in runs:
            for lang in r.languages:
                if lang not in langs_all:
                    langs_all.append(lang)
        per_lang = {
            lang: {
                "f1": mean_of(x.scores.get(lang) for x in res),
                "n": int(sum(1 for x in res if not math.isnan(as_float(x.scores.get(lang))))),
            }
            for lang in langs_all
        }
        label = method_label(method, rank, strategy, scale)
        rec: dict[str, Any] = {
            "id": gid,
            "label": f"{label} {{{sg['label']}}}" if sg["label"] else label,
            "key": dict(zip(GROUP_FIELDS, gk, strict=True)),
            "settings": sg["settings"],
            "settings_label": sg["label"],
            "kind": kinds[0] if len(kinds) == 1 else "/".join(kinds),
            "runs": [r.run_id for r in runs],
            "orders": sorted({str(r.key.get("order", "")) for r in runs}),
            "seeds": sorted({int(r.key.get("seed", 0) or 0) for r in runs}),
            "n_languages": n_lang,
            "params_m": None,
            "headline": headline,
            "per_language": per_lang,
        }
        if seq:
            headline["cbt"] = summ((x.record["metrics"]["cbt"] for x in seq), seq)
            headline["cft"] = summ((x.record["metrics"]["cft"] for x in seq), seq)
            headline["p_avg"] = summ((x.record["metrics"]["p_avg"] for x in seq), seq)
            rec["transfer"] = {
                c: {
                    d: summ((x.record["metrics"]["transfer"][c][d] for x in seq), seq)
                    for d in ("backward", "forward")
                }
                for c in M.CONVENTIONS
            }
            Ts = {len(x.R) for x in seq}
            rec["curves"] = {
                "avg_f1": _curve_summary([x.curve for x in seq]),
                "p_avg": (
                    M.p_avg([x.R for x in seq], p_set)
                    if len(Ts) == 1
                    else np.asarray(
                        M.nanmean(
                            _stack_curves([x.record["metrics"]["shift_curve"] for x in seq]),
                            axis=0,
                        )
                    )
                )
                if max(Ts) > 1
                else [],
            }
            change, change_n = M.average_per_language([(x.change, x.order) for x in seq])
            fmean, fcount = M.average_per_language([(x.mft, x.order) for x in seq])
            bmean, bcount = M.average_per_language([(x.mbt, x.order) for x in seq])
            rec["hops"] = list(hops)
            rec["perf_change"] = {
                lang: {"mean": change[lang], "n": change_n[lang]} for lang in change
            }
            rec["mft"] = {lang: {"by_hop": fmean[lang], "n": fcount[lang]} for lang in fmean}
            rec["mbt"] = {lang: {"by_hop": bmean[lang], "n": bcount[lang]} for lang in bmean}
            # eq. 13-14's scalars: per run 1/|L| sum over its languages, then over the runs
            rec["hop_scalars"] = {
                which: [
                    summ((x.record["metrics"][f"{which}_h"][r] for x in seq), seq)
                    for r in range(len(hops))
                ]
                for which in ("mft", "mbt")
            }
        else:
            # Fig. 2 for a non-sequential method: mean F1 over the first k languages of each
            # sequential order of the same model (else the run's language list), averaged.
            orders = orders_by_model.get(model) or [list(runs[0].languages)]
            curves = []
            for x in res:
                for order in orders:
                    v = np.array([as_float(x.scores.get(lang)) for lang in order], dtype=float)
                    ok = ~np.isnan(v)
                    with np.errstate(invalid="ignore", divide="ignore"):
                        c = np.cumsum(np.where(ok, v, 0.0)) / np.cumsum(ok)
                    curves.append(np.where(np.cumsum(ok) > 0, c, np.nan))
            rec["curves"] = {"avg_f1": _curve_summary(curves)}
        rec["groupings"] = _groupings(rec, vit)
        group_records.append(rec)

    missing = {x.record["run_id"]: x.record["missing"] for x in results if x.record["missing"]}
    out = {
        "schema_version": SCHEMA_VERSION,
        "store": data.path,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),  # noqa: UP017 (3.10)
        "settings": {
            "convention": convention,
            "p_set": p_set,
            "hop_p_set": hop_p_set,
            "hops": list(hops),
            "vitality": {g: list(c) for g, c in vit.items()},
            "bootstrap": {
                "resamples": bootstrap,
                "seed": seed,
                "level": 0.95,
                "unit": "order; the seeds of a drawn order are resampled within it "
                "(a group with one order: its runs)",
                "method": "two-stage percentile bootstrap of the mean over runs",
                "min_units": M.MIN_CI_UNITS,
            },
            "forward_baseline": "0 (the store holds no zero-shot scores of the untrained model)",
            "group_by": list(GROUP_FIELDS),
        },
        "settings_note": settings_note(data.runs),
        "runs": [x.record for x in results],
        "groups": group_records,
        "missing": missing,
        "problems": problems,
    }
    cleaned = _clean(out)
    # each strategy against none, from the per-run values above (analysis/compare.py)
    cleaned["strategy_comparison"] = _clean(compare_strategies(cleaned))
    return cleaned


def _groupings(rec: Mapping[str, Any], vit: Mapping[str, tuple[int, ...]]) -> dict[str, Any]:
    """Mean F1 (and, for sequential groups, mean Fig. 3 change, MFT and MBT over hops) of the
    languages in each script / family / vitality group."""
    out: dict[str, Any] = {}
    langs = list(rec["per_language"])
    for by in ("script", "family", "vitality"):
        parts = L.group_locales(langs, by, vit)
        order = list(vit) if by == "vitality" else sorted(parts)
        block: dict[str, Any] = {}
        for g in order + [g for g in parts if g not in order]:
            members = parts.get(g, [])
            if not members:
                continue
            entry: dict[str, Any] = {
                "languages": members,
                "f1": mean_of(rec["per_language"][x]["f1"] for x in members),
            }
            if "mft" in rec:
                entry["perf_change"] = mean_of(
                    as_float(rec["perf_change"][x]["mean"])
                    for x in members
                    if x in rec["perf_change"]
                )
                entry["mft"] = mean_of(
                    mean_of(rec["mft"][x]["by_hop"]) for x in members if x in rec["mft"]
                )
                entry["mbt"] = mean_of(
                    mean_of(rec["mbt"][x]["by_hop"]) for x in members if x in rec["mbt"]
                )
            block[g] = entry
        out[by] = block
    return out
