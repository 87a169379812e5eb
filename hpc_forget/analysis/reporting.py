"""Reduce a results store to metrics.json, tables, figures and one self-contained HTML report.

Layers, each usable alone (the analysis/ scripts call them):

- :func:`load_store` — the ONLY function that talks to :mod:`hpc_forget.store.store`; it turns the
  store into plain :class:`RunData` records (matrices with NaN, missing cells, provenance).
- :func:`compute_metrics` — pure: RunData -> the metrics dict written as metrics.json
  (per-run metrics, per-group mean/std/bootstrap CI, per-language MFT/MBT, groupings).
- :func:`build_tables` / :func:`write_tables` — Table 1, Table 2 and the other tables from
  the metrics dict, as CSV, Markdown and LaTeX.
- :func:`write_figures` — Fig. 2-7 as PNG and PDF (matplotlib, Agg canvas, no pyplot).
- :func:`write_report` — report.html with figures embedded as base64 PNGs.
- :func:`analyze` — all of the above (``hpc-forget analyze STORE --out DIR``).

See docs/analysis.md (outputs, incomplete stores) and docs/metrics.md (formulas).
"""

from __future__ import annotations

import base64
import contextlib
import csv
import datetime as _dt
import hashlib
import html
import json
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpc_forget.analysis import metrics as M
from hpc_forget.analysis.options import WORKERS, add_argparse, option_values
from hpc_forget.errors import AnalysisError
from hpc_forget.study import languages as L
from hpc_forget.study.methods import DISPLAY_NAME, METHOD_KIND

SCHEMA_VERSION = 1
METHOD_ORDER: tuple[str, ...] = ("multi", "mono", "vanilla", "shared_lora", "nonshared_lora")
GROUP_FIELDS: tuple[str, ...] = ("method", "model", "rank", "strategy", "data_scale", "settings")
"""What a group of averaged runs shares: the grid cell, and the settings digest of the run key
(runs of different settings are never averaged together)."""
FIG7_PNG_LIMIT = 8
FIG7_ANNOTATE_MAX_T = 16
"""Fig. 7 prints each cell's F1 (%) when the order has at most this many languages."""
FIG_DPI = 100
ParamsFn = Callable[[Mapping[str, Any], int], "float | None"]


# =========================================================================== store adapter


@dataclass
class RunData:
    """One run of the store, as plain data (what the analysis needs from the Store)."""

    run_id: str
    key: dict[str, Any]
    kind: str
    languages: list[str]
    steps: list[str]
    matrix: np.ndarray  # steps x languages, NaN = not computed
    missing: list[tuple[int, str]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    provenance: dict[int, dict[str, Any]] = field(default_factory=dict)
    step_meta: dict[int, dict[str, Any]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    """What beyond the key the scores depend on (``RunRecord.settings``)."""

    def expected_cells(self) -> list[tuple[int, str]]:
        """The (step, language) cells this run's kind fills: the store's one rule
        (:func:`hpc_forget.store.format.expected_cells`)."""
        from hpc_forget.store.format import expected_cells

        return expected_cells(self.kind, self.languages, self.steps)


@dataclass
class StoreData:
    path: str
    runs: list[RunData]
    problems: list[str] = field(default_factory=list)


def load_store(path: str | Path) -> StoreData:
    """Read every run of the store at ``path`` (a store folder or a consolidated ``.h5``).

    The ONLY function that uses the Store API (docs/design.md): ``Store(path).runs()``, each
    record's matrix (``RunRecord.R`` when present, else ``Store.matrix``) and missing cells
    (``RunRecord.missing()``, else ``Store.missing``), then ``Store.problems()``.
    """
    p = Path(path)
    if not p.exists():
        raise AnalysisError(
            f"{path}: no such store; pass the folder given to `hpc-forget run` "
            "(or a copy of its consolidated .h5)"
        )
    from hpc_forget.store.store import Store

    store = Store(p)
    runs: list[RunData] = []
    skipped: list[str] = []
    for rec in store.runs():
        try:
            R = getattr(rec, "R", None)
            matrix = np.asarray(
                R if R is not None and np.size(R) else store.matrix(rec.run_id), dtype=float
            )
            missing = (
                rec.missing()
                if callable(getattr(rec, "missing", None))
                else store.missing(rec.run_id)
            )
            missing = [(int(s), str(lang)) for s, lang in missing]
        except Exception as exc:  # one damaged run must not stop the report
            skipped.append(f"{rec.run_id}: skipped, cannot read its scores ({exc})")
            continue
        runs.append(
            RunData(
                run_id=rec.run_id,
                key=dict(rec.key),
                kind=rec.kind,
                languages=list(rec.languages),
                steps=list(rec.steps),
                matrix=matrix,
                missing=missing,
                config=dict(getattr(rec, "config", None) or {}),
                provenance={
                    int(k): dict(v) for k, v in (getattr(rec, "provenance", None) or {}).items()
                },
                step_meta={
                    int(k): dict(v) for k, v in (getattr(rec, "step_meta", None) or {}).items()
                },
                settings=dict(getattr(rec, "settings", None) or {}),
            )
        )
    problems = [str(x) for x in store.problems()] + skipped
    return StoreData(str(p), runs, problems)


# =========================================================================== small helpers


def _f(x: Any) -> float:
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


def _mean(values: Iterable[float]) -> float:
    v = np.asarray([_f(x) for x in values], dtype=float)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else float("nan")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "x"


def _resolve_vitality(
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
    m = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
    cell = (model_rank.get(model, 0), m, method, strategy != "none", strategy, -scale, rank)
    return (*cell, settings_label, digest)


def settings_groups(runs: Sequence[RunData]) -> dict[tuple, dict[str, Any]]:
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


def settings_note(runs: Sequence[RunData]) -> str | None:
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


def language_scores(run: RunData) -> dict[str, float]:
    """Final test F1 per evaluated language: the last row (sequential), else the run's
    expected cells (joint: step 0; per-language: the cells of
    :meth:`RunData.expected_cells`, the store's rule). NaN where the cell is absent."""
    m = run.matrix
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


def _trainable_from_meta(run: RunData) -> float | None:
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
    from hpc_forget.models.params import PRESETS, XLMR_BASE_CONFIG, encoder_counts
    from hpc_forget.study.config import split_revision

    model, _ = split_revision(str(key.get("model", "")))
    if model not in PRESETS and model not in PRESETS.values():
        return None
    rank = int(key.get("rank", 0) or 0)
    counts = encoder_counts(XLMR_BASE_CONFIG, [rank] if rank else [], num_labels=111)
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


# =========================================================================== metrics


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
    run: RunData,
    *,
    convention: str,
    vit: Mapping[str, tuple[int, ...]],
    p_set: str,
    hop_p_set: str,
    hops: Sequence[int],
    problems: list[str],
) -> _RunResult:
    scores = language_scores(run)
    present = int(np.count_nonzero(~np.isnan(run.matrix))) if run.matrix.size else 0
    done_rows = (
        [i for i in range(run.matrix.shape[0]) if np.any(~np.isnan(run.matrix[i]))]
        if run.matrix.size
        else []
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
        "missing": [[s, lang] for s, lang in run.missing],
        "complete": not run.missing,
        "last_step_with_scores": max(done_rows) if done_rows else None,
        "metrics": {
            "f1": _mean(scores.values()),
            "f1_by_vitality": {g: _mean(scores[x] for x in by_vit.get(g, [])) for g in vit},
            "per_language": scores,
        },
    }
    res = _RunResult(record=record, scores=scores)
    if run.kind != "sequential":
        return res
    try:
        R = M.order_aligned(run.matrix, run.languages, run.steps)
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
            "f1_by_vitality": {g: _mean(trained[x] for x in by_vit.get(g, [])) for g in vit},
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


def _model_order(runs: Sequence[RunData]) -> dict[str, int]:
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
    data: StoreData,
    *,
    convention: str = "paper",
    vitality: Mapping[str, Iterable[int]] | str | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    p_set: str = M.P_SET_DEFAULT,
    hop_p_set: str = M.HOP_P_SET_DEFAULT,
    hops: Sequence[int] = M.HOPS,
) -> dict[str, Any]:
    """Every metric of the store as a JSON-ready dict (the content of metrics.json).

    Pure. NaN is written as null. Table 1's params are added by :func:`attach_params`.
    ``p_set`` is eq. 9's (P_avg, Fig. 3) reading of P, ``hop_p_set`` eq. 13-14's (MFT, MBT).
    """
    if convention not in M.CONVENTIONS:
        raise AnalysisError(f"--convention {convention!r}: use one of {', '.join(M.CONVENTIONS)}")
    if p_set not in M.P_SETS:
        raise AnalysisError(f"--p-set {p_set!r}: use one of {', '.join(M.P_SETS)}")
    if hop_p_set not in M.P_SETS:
        raise AnalysisError(f"--hop-p-set {hop_p_set!r}: use one of {', '.join(M.P_SETS)}")
    if bootstrap < 0:
        raise AnalysisError(f"--bootstrap {bootstrap}: use 0 (no CI) or a positive count")
    vit = _resolve_vitality(vitality)
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
        gid = _slug(f"{method}_{model.rstrip('/').split('/')[-1]}_r{rank}_{strategy}_d{scale:g}")
        if sg["of_cell"] > 1:
            gid += f"_s{digest or 'none'}"
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
                "f1": _mean(x.scores.get(lang) for x in res),
                "n": int(sum(1 for x in res if not math.isnan(_f(x.scores.get(lang))))),
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
                    v = np.array([_f(x.scores.get(lang)) for lang in order], dtype=float)
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
    return _clean(out)


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
                "f1": _mean(rec["per_language"][x]["f1"] for x in members),
            }
            if "mft" in rec:
                entry["perf_change"] = _mean(
                    _f(rec["perf_change"][x]["mean"]) for x in members if x in rec["perf_change"]
                )
                entry["mft"] = _mean(
                    _mean(rec["mft"][x]["by_hop"]) for x in members if x in rec["mft"]
                )
                entry["mbt"] = _mean(
                    _mean(rec["mbt"][x]["by_hop"]) for x in members if x in rec["mbt"]
                )
            block[g] = entry
        out[by] = block
    return out


# =========================================================================== tables


@dataclass
class Table:
    """A table in display form (md/tex/html) and numeric form (csv)."""

    name: str
    title: str
    columns: list[str]
    rows: list[list[str]]
    csv_columns: list[str]
    csv_rows: list[list[Any]]
    section_rows: set[int] = field(default_factory=set)
    note: str = ""


def _fmt(x: Any, scale: float = 1.0, digits: int = 2) -> str:
    v = _f(x)
    return "-" if math.isnan(v) else f"{v * scale:.{digits}f}"


def _fmt_summary(
    s: Mapping[str, Any] | None, scale: float = 1.0, digits: int = 2, runs: int | None = None
) -> str:
    """``mean ± std``; ``(n=k)`` appended when only k of the group's ``runs`` had a value."""
    if not s or s.get("mean") is None:
        return "-"
    m = _fmt(s["mean"], scale, digits)
    out = m if s.get("std") is None else f"{m} ± {_fmt(s['std'], scale, digits)}"
    if runs is not None and s.get("n", runs) < runs:
        out += f" (n={s['n']})"
    return out


def _fmt_ci(s: Mapping[str, Any] | None, scale: float = 1.0, digits: int = 2) -> str:
    """``[low, high]``; ``- (k units)`` when too few orders/runs for an interval."""
    if not s or s.get("mean") is None:
        return "-"
    if s.get("ci_low") is None:
        k = s.get("ci_units")
        return "-" if k is None or k >= M.MIN_CI_UNITS else f"- ({k} unit{'s' * (k != 1)})"
    return f"[{_fmt(s['ci_low'], scale, digits)}, {_fmt(s['ci_high'], scale, digits)}]"


def _csv_summary(name: str, s: Mapping[str, Any] | None, scale: float = 1.0) -> dict[str, Any]:
    s = s or {}

    def v(k: str) -> Any:
        x = s.get(k)
        return "" if x is None else (x * scale if k != "n" else x)

    return {
        name: v("mean"),
        f"{name}_std": v("std"),
        f"{name}_ci_low": v("ci_low"),
        f"{name}_ci_high": v("ci_high"),
        f"{name}_n": s.get("n", 0),
    }


def _multi_model(metrics: Mapping[str, Any]) -> bool:
    return len({g["key"]["model"] for g in metrics["groups"]}) > 1


def _paper_rows(
    groups: Sequence[Mapping[str, Any]], with_model: bool
) -> list[tuple[str | None, Mapping[str, Any] | None]]:
    """Rows in the paper's layout: (label, group) or (section header, None)."""
    rows: list[tuple[str | None, Mapping[str, Any] | None]] = []
    prev_section = None
    for g in groups:
        k = g["key"]
        section = (k["model"] if with_model else "", k["method"], k["strategy"], k["data_scale"])
        base = method_label(k["method"], 0, k["strategy"], k["data_scale"])
        has_plain = any(
            h["key"]["method"] == k["method"]
            and h["key"]["rank"] == 0
            and h["key"]["model"] == k["model"]
            and h["key"]["strategy"] == k["strategy"]
            and h["key"]["data_scale"] == k["data_scale"]
            for h in groups
        )
        if k["rank"] and section != prev_section and not has_plain:
            rows.append((base, None))
        prev_section = section
        label = f"r = {k['rank']}" if k["rank"] else base
        if g.get("settings_label"):
            label += f" {{{g['settings_label']}}}"
        rows.append((label, g))
    return rows


def table1(metrics: Mapping[str, Any]) -> Table:
    """Table 1: Params (M), F1 (%) and F1 (%) by vitality group, per method."""
    vit = list(metrics["settings"]["vitality"])
    with_model = _multi_model(metrics)
    cols = (["Model"] if with_model else []) + ["Method", "Params (M)", "F1 (%)"] + vit
    rows: list[list[str]] = []
    sections: set[int] = set()
    csv_rows: list[list[Any]] = []
    csv_cols: list[str] = []
    for label, g in _paper_rows(metrics["groups"], with_model):
        if g is None:
            sections.add(len(rows))
            rows.append(([""] if with_model else []) + [label or ""] + [""] * (2 + len(vit)))
            continue
        h = g["headline"]
        pm = g.get("params_m")
        rows.append(
            ([g["key"]["model"]] if with_model else [])
            + [
                label or "",
                "-" if pm is None else f"{pm:,.2f}",
                _fmt_summary(h["f1"], 100, runs=len(g["runs"])),
            ]
            + [_fmt_summary(h.get(f"f1_{v}"), 100, runs=len(g["runs"])) for v in vit]
        )
        d: dict[str, Any] = {
            "group": g["id"],
            "model": g["key"]["model"],
            "method": g["label"],
            "runs": len(g["runs"]),
            "params_m": "" if pm is None else pm,
        }
        d.update(_csv_summary("f1_pct", h["f1"], 100))
        for v in vit:
            d.update(_csv_summary(f"f1_{v}_pct", h.get(f"f1_{v}"), 100))
        csv_cols = list(d)
        csv_rows.append(list(d.values()))
    vit_desc = ", ".join(
        f"{g} = Joshi {'/'.join(map(str, c))}" for g, c in metrics["settings"]["vitality"].items()
    )
    return Table(
        "table1",
        "Table 1: trainable parameters (millions) and test F1 (%), mean ± std over orders and seeds",
        cols,
        rows,
        csv_cols,
        csv_rows,
        sections,
        note=(
            f"Vitality groups: {vit_desc}. Sequential methods: F1 after the last step over the "
            "languages of the order (the order-aligned final F1); MULTI: the joint model; "
            "MONO / NON-SHARED LoRA: each language's own model. Params: the paper's convention "
            "(known presets), else the trainable parameters the engine recorded."
        ),
    )


def table2(metrics: Mapping[str, Any]) -> Table:
    """Table 2: CBT and CFT of the sequential methods."""
    conv = metrics["settings"]["convention"]
    with_model = _multi_model(metrics)
    seq = [g for g in metrics["groups"] if "cbt" in g["headline"]]
    cols = (["Model"] if with_model else []) + ["Method", "CBT", "CFT"]
    rows: list[list[str]] = []
    sections: set[int] = set()
    csv_rows: list[list[Any]] = []
    csv_cols: list[str] = []
    for label, g in _paper_rows(seq, with_model):
        if g is None:
            sections.add(len(rows))
            rows.append(([""] if with_model else []) + [label or "", "", ""])
            continue
        h = g["headline"]
        rows.append(
            ([g["key"]["model"]] if with_model else [])
            + [
                label or "",
                _fmt_summary(h["cbt"], 1, 3, runs=len(g["runs"])),
                _fmt_summary(h["cft"], 1, 3, runs=len(g["runs"])),
            ]
        )
        d: dict[str, Any] = {
            "group": g["id"],
            "model": g["key"]["model"],
            "method": g["label"],
            "runs": len(g["runs"]),
        }
        d.update(_csv_summary("cbt", h["cbt"]))
        d.update(_csv_summary("cft", h["cft"]))
        d.update(_csv_summary("p_avg", h["p_avg"]))
        csv_cols = list(d)
        csv_rows.append(list(d.values()))
    return Table(
        "table2",
        f"Table 2: CBT and CFT (convention: {conv}), mean ± std over orders and seeds",
        cols,
        rows,
        csv_cols,
        csv_rows,
        sections,
        note="Fractions of F1 (not %). Higher is better for both.",
    )


def conventions_table(metrics: Mapping[str, Any]) -> Table:
    """Backward/forward transfer of every sequential group under every convention."""
    seq = [g for g in metrics["groups"] if "transfer" in g]
    cols = ["Model", "Method"] + [f"{c} {d}" for c in M.CONVENTIONS for d in ("BWT", "FWT")]
    rows, csv_rows = [], []
    csv_cols = ["group", "model", "method"] + [
        f"{c}_{d}" for c in M.CONVENTIONS for d in ("backward", "forward")
    ]
    for g in seq:
        t = g["transfer"]
        rows.append(
            [g["key"]["model"], g["label"]]
            + [_fmt(t[c][d]["mean"], 1, 3) for c in M.CONVENTIONS for d in ("backward", "forward")]
        )
        csv_rows.append(
            [g["id"], g["key"]["model"], g["label"]]
            + [
                ("" if t[c][d]["mean"] is None else t[c][d]["mean"])
                for c in M.CONVENTIONS
                for d in ("backward", "forward")
            ]
        )
    return Table(
        "conventions",
        "Backward (BWT/CBT) and forward (FWT/CFT) transfer under each convention (mean over runs)",
        cols,
        rows,
        csv_cols,
        csv_rows,
        note="paper = eq. 10-12; gem = GEM reference code (divides by T); avalanche = -forgetting "
        "and one-hop FWT; mhamdi = averaged over every step. Forward baselines are 0.",
    )


def hop_table(metrics: Mapping[str, Any]) -> Table:
    """Eq. 13-14's scalar MFT_h and MBT_h per sequential group and hop (F1 points)."""
    cols = ["Group", "h", "MFT_h (pts)", "MFT_h 95% CI", "MBT_h (pts)", "MBT_h 95% CI", "runs"]
    rows, csv_rows = [], []
    for g in metrics["groups"]:
        if "hop_scalars" not in g:
            continue
        for r, h in enumerate(g["hops"]):
            f, b = g["hop_scalars"]["mft"][r], g["hop_scalars"]["mbt"][r]
            rows.append(
                [g["id"], str(h), _fmt_summary(f, 100), _fmt_ci(f, 100, 2)]
                + [_fmt_summary(b, 100), _fmt_ci(b, 100, 2), str(len(g["runs"]))]
            )
            d: dict[str, Any] = {"group": g["id"], "method": g["label"], "hop": h}
            d.update(_csv_summary("mft_pts", f, 100))
            d.update(_csv_summary("mbt_pts", b, 100))
            csv_rows.append(list(d.values()))
    csv_cols = ["group", "method", "hop"] + [
        f"{w}_pts{x}" for w in ("mft", "mbt") for x in ("", "_std", "_ci_low", "_ci_high", "_n")
    ]
    p = metrics["settings"].get("hop_p_set", M.HOP_P_SET_DEFAULT)
    return Table(
        "hop_transfer",
        f"MFT_h and MBT_h (eq. 13-14, P over the {p} languages): F1 points, mean ± std over runs",
        cols,
        rows,
        csv_cols,
        csv_rows,
        note="Per run, 1/|L| times the sum over the languages with a window of h+1 steps; "
        "then mean, std and bootstrap CI over the runs (orders, then seeds).",
    )


def per_language_table(metrics: Mapping[str, Any]) -> Table:
    """Final F1 (%) per language and group, with the language facts."""
    groups = metrics["groups"]
    vit = metrics["settings"]["vitality"]
    langs: list[str] = []
    for g in groups:
        langs.extend(x for x in g["per_language"] if x not in langs)
    names = [
        f"{g['label']} ({g['key']['model']})" if _multi_model(metrics) else g["label"]
        for g in groups
    ]
    cols = ["Locale", "Language", "Script", "Family", "Joshi", "Vitality"] + names
    rows, csv_rows = [], []
    for lang in langs:
        facts = L.LANGUAGES.get(lang)
        info = (
            [lang, facts.name, facts.script, facts.family, str(facts.joshi), L.vitality(lang, vit)]
            if facts
            else [lang, "", "", "", "", L.UNKNOWN]
        )
        vals = [g["per_language"].get(lang, {}).get("f1") for g in groups]
        rows.append(info + [_fmt(v, 100) for v in vals])
        csv_rows.append(info + [("" if v is None else 100 * v) for v in vals])
    return Table(
        "per_language_f1",
        "Test F1 (%) per language (sequential: after the last step; mean over runs)",
        cols,
        rows,
        ["locale", "language", "script", "family", "joshi", "vitality"] + [g["id"] for g in groups],
        csv_rows,
    )


def per_language_transfer_table(metrics: Mapping[str, Any]) -> Table:
    """Per sequential group and language: Fig. 3 change, and MFT / MBT averaged over hops."""
    cols = [
        "Group",
        "Locale",
        "Δ after training (F1 pts)",
        "MFT mean over hops",
        "MBT mean over hops",
        "orders",
    ]
    rows, csv_rows = [], []
    hops = None
    for g in metrics["groups"]:
        if "mft" not in g:
            continue
        hops = g["hops"]
        for lang in g["perf_change"]:
            ch = g["perf_change"][lang]
            f = g["mft"][lang]["by_hop"]
            b = g["mbt"][lang]["by_hop"]
            rows.append(
                [
                    g["id"],
                    lang,
                    _fmt(ch["mean"], 100),
                    _fmt(_mean(f), 100),
                    _fmt(_mean(b), 100),
                    str(ch["n"]),
                ]
            )
            csv_rows.append(
                [g["id"], lang, "" if ch["mean"] is None else 100 * ch["mean"], ch["n"]]
                + [("" if v is None else 100 * v) for v in f]
                + [("" if v is None else 100 * v) for v in b]
            )
    hops = hops or []
    csv_cols = (
        ["group", "locale", "change_pts", "change_n"]
        + [f"mft_h{h}_pts" for h in hops]
        + [f"mbt_h{h}_pts" for h in hops]
    )
    return Table(
        "per_language_transfer",
        "Per-language change after training (Fig. 3), MFT and MBT (F1 points, mean over orders)",
        cols,
        rows,
        csv_cols,
        csv_rows,
    )


def groupings_table(metrics: Mapping[str, Any]) -> Table:
    """Mean F1 / change / MFT / MBT by script, family and vitality group, per group."""
    cols = ["Group", "Grouping", "Languages", "n", "F1 (%)", "Δ (pts)", "MFT (pts)", "MBT (pts)"]
    rows, csv_rows = [], []
    for g in metrics["groups"]:
        for by, block in g["groupings"].items():
            for name, e in block.items():
                vals = [e["f1"], e.get("perf_change"), e.get("mft"), e.get("mbt")]
                rows.append(
                    [g["id"], by, name, str(len(e["languages"]))] + [_fmt(v, 100) for v in vals]
                )
                csv_rows.append(
                    [g["id"], by, name, len(e["languages"])]
                    + [("" if v is None else 100 * v) for v in vals]
                )
    return Table(
        "groupings",
        "By script (Latin / non-Latin), language family and vitality: mean over the group's languages",
        cols,
        rows,
        ["group", "grouping", "name", "n_languages", "f1_pct", "change_pts", "mft_pts", "mbt_pts"],
        csv_rows,
    )


_HEADLINE_SCALE = {"cbt": 1.0, "cft": 1.0, "p_avg": 100.0}


def headline_table(metrics: Mapping[str, Any]) -> Table:
    """Every headline metric of every group: mean, std, bootstrap CI, units (n of runs)."""
    b = metrics["settings"]["bootstrap"]
    cols = ["Group", "Metric", "Mean", "Std", "95% CI", "n / runs"]
    rows, csv_rows = [], []
    for g in metrics["groups"]:
        for name, s in g["headline"].items():
            scale = _HEADLINE_SCALE.get(name, 100.0)
            unit = "" if scale == 1.0 else (" (pts)" if name == "p_avg" else " (%)")
            digits = 3 if scale == 1.0 else 2
            ci = _fmt_ci(s, scale, digits)
            rows.append(
                [
                    g["id"],
                    name + unit,
                    _fmt(s.get("mean"), scale, digits),
                    _fmt(s.get("std"), scale, digits),
                    ci,
                    f"{s.get('n', 0)} / {len(g['runs'])}",
                ]
            )
            csv_rows.append(
                [g["id"], g["label"], g["key"]["model"], name, scale]
                + [
                    ("" if s.get(k) is None else s[k] * scale)
                    for k in ("mean", "std", "ci_low", "ci_high")
                ]
                + [s.get("n", 0), len(g["runs"])]
            )
    return Table(
        "headline",
        "Headline metrics: mean, std and bootstrap 95% CI over the runs (orders x seeds) of each group",
        cols,
        rows,
        [
            "group",
            "method",
            "model",
            "metric",
            "scale",
            "mean",
            "std",
            "ci_low",
            "ci_high",
            "n",
            "runs",
        ],
        csv_rows,
        note=(
            f"Two-stage percentile bootstrap of the mean, {b['resamples']} resamples (orders, "
            f"then seeds within each order), seed {b['seed']}; no std with fewer than 2 runs, "
            f"no CI with fewer than {M.MIN_CI_UNITS} orders (or runs, for a group of one "
            "order). F1 in %, p_avg in F1 points, CBT/CFT as fractions."
        ),
    )


def missing_table(metrics: Mapping[str, Any]) -> Table:
    rows, csv_rows = [], []
    for r in metrics["runs"]:
        if r["missing"]:
            cells = ", ".join(f"{s}:{lang}" for s, lang in r["missing"][:12])
            more = len(r["missing"]) - 12
            rows.append(
                [
                    r["run_id"],
                    f"{r['cells_present']}/{r['cells_expected']}",
                    cells + (f" (+{more} more)" if more > 0 else ""),
                ]
            )
            csv_rows.extend([[r["run_id"], s, lang] for s, lang in r["missing"]])
    return Table(
        "missing",
        "Missing cells (step:language) — computed from the cells present, never as 0",
        ["Run", "Cells present", "Missing (first 12)"],
        rows,
        ["run_id", "step", "language"],
        csv_rows,
    )


def build_tables(metrics: Mapping[str, Any]) -> list[Table]:
    """Every table of the report, from a metrics dict."""
    return [
        table1(metrics),
        table2(metrics),
        headline_table(metrics),
        conventions_table(metrics),
        groupings_table(metrics),
        per_language_table(metrics),
        per_language_transfer_table(metrics),
        hop_table(metrics),
        missing_table(metrics),
    ]


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|")


def table_markdown(t: Table) -> str:
    lines = [
        f"**{t.title}**",
        "",
        "| " + " | ".join(map(_md_cell, t.columns)) + " |",
        "|" + "|".join("---" for _ in t.columns) + "|",
    ]
    for i, row in enumerate(t.rows):
        cells = [f"*{c}*" if (i in t.section_rows and c) else c for c in row]
        lines.append("| " + " | ".join(map(_md_cell, cells)) + " |")
    if t.note:
        lines += ["", t.note]
    return "\n".join(lines) + "\n"


_TEX_ESC = {
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "\\": r"\textbackslash{}",
}


def _tex(s: str) -> str:
    s = "".join(_TEX_ESC.get(c, c) for c in s)
    s = s.replace("±", r"$\pm$").replace("Δ", r"$\Delta$")
    return re.sub(r"^r = (\d+)$", r"$r = \1$", s)


def table_latex(t: Table) -> str:
    spec = "l" * min(2, len(t.columns)) + "r" * max(0, len(t.columns) - 2)
    out = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(_tex(c) for c in t.columns) + r" \\",
        r"\midrule",
    ]
    for i, row in enumerate(t.rows):
        if i in t.section_rows:
            label = next((c for c in row if c), "")
            out.append(rf"\multicolumn{{{len(t.columns)}}}{{l}}{{\textsc{{{_tex(label)}}}}} \\")
        else:
            out.append(" & ".join(_tex(c) for c in row) + r" \\")
    out += [
        r"\bottomrule",
        r"\end{tabular}",
        rf"\caption{{{_tex(t.title)}.{(' ' + _tex(t.note)) if t.note else ''}}}",
        rf"\label{{tab:{t.name}}}",
        r"\end{table}",
    ]
    return "\n".join(out) + "\n"


def table_html(t: Table) -> str:
    e = html.escape
    out = [
        f"<table id='{e(t.name)}'><caption>{e(t.title)}</caption><thead><tr>"
        + "".join(f"<th>{e(c)}</th>" for c in t.columns)
        + "</tr></thead><tbody>"
    ]
    for i, row in enumerate(t.rows):
        if i in t.section_rows:
            out.append(
                f"<tr class='section'><td colspan='{len(t.columns)}'>{e(next((c for c in row if c), ''))}</td></tr>"
            )
        else:
            out.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>")
    out.append("</tbody></table>")
    if t.note:
        out.append(f"<p class='note'>{e(t.note)}</p>")
    return "".join(out)


def write_tables(metrics: Mapping[str, Any], out_dir: str | Path) -> list[Table]:
    """Write every table as tables/<name>.csv, .md and .tex under ``out_dir``."""
    d = Path(out_dir) / "tables"
    d.mkdir(parents=True, exist_ok=True)
    tables = build_tables(metrics)
    for t in tables:
        with open(d / f"{t.name}.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(t.csv_columns)
            w.writerows(t.csv_rows)
        (d / f"{t.name}.md").write_text(table_markdown(t), encoding="utf-8")
        (d / f"{t.name}.tex").write_text(table_latex(t), encoding="utf-8")
    return tables


# =========================================================================== figures


@dataclass
class FigureInfo:
    name: str
    caption: str
    png: Path | None
    pdf: Path | None


def _new_figure(w: float, h: float, constrained: bool = True):  # -> matplotlib.figure.Figure
    """A figure on its own Agg canvas: no pyplot, no global state, nothing to close."""
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=FIG_DPI, layout="constrained" if constrained else None)


def _margins(fig, *, left: float, bottom: float, right: float, top: float) -> None:
    """Fixed margins in inches (cheaper than constrained layout for label-heavy figures)."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=left / w, bottom=bottom / h, right=1 - right / w, top=1 - top / h)


@contextlib.contextmanager
def _pdf_fonts() -> Iterator[None]:
    """PDFs with the 14 core fonts (no font embedding): 2-3x faster for label-heavy figures.
    Figure text is kept ASCII (:func:`_ascii`) so the core fonts can show all of it."""
    import logging

    import matplotlib as mpl

    log = logging.getLogger("matplotlib.font_manager")
    level = log.level
    log.setLevel(logging.ERROR)  # "Failed to find font weight normal for Helvetica"
    try:
        with mpl.rc_context({"pdf.use14corefonts": True}):
            yield
    finally:
        log.setLevel(level)


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii")


def _save(fig, d: Path, name: str, caption: str, png: bool = True, pdf: bool = True) -> FigureInfo:
    p_png = d / f"{name}.png" if png else None
    p_pdf = d / f"{name}.pdf" if pdf else None
    if p_png:
        fig.savefig(p_png, dpi=FIG_DPI)
    if p_pdf:
        with _pdf_fonts():
            fig.savefig(p_pdf)
    return FigureInfo(name, caption, p_png, p_pdf)


def _arr(x: Any) -> np.ndarray:
    return np.array([_f(v) for v in (x or [])], dtype=float)


def _cmap():
    import matplotlib as mpl

    # the paper: cooler = better; grey = not computable / missing
    return mpl.colormaps["coolwarm_r"].with_extremes(bad="0.85")


class _Heatmap:
    """One heatmap figure reused for many panels of the same shape (ticks are built once,
    which is most of the cost of a 52-language figure)."""

    def __init__(
        self,
        shape: tuple[int, int],
        size: tuple[float, float],
        *,
        xlabel: str,
        ylabel: str,
        cbar: str,
        margins: Mapping[str, float],
    ) -> None:
        self.shape = shape
        self.fig = _new_figure(*size, constrained=False)
        _margins(self.fig, **margins)
        self.ax = self.fig.add_subplot()
        self.im = self.ax.imshow(
            np.zeros(shape), aspect="auto", cmap=_cmap(), interpolation="nearest"
        )
        self.ax.set_xticks(range(shape[1]))
        self.ax.set_yticks(range(shape[0]))
        # no tick marks (the cells show the grid) and fixed axis-label positions: matplotlib
        # would otherwise measure every tick label of every panel to place them
        self.ax.tick_params(bottom=False, left=False)
        self.ax.set_xlabel(xlabel)
        self.ax.set_ylabel(ylabel)
        self.fig.colorbar(self.im, ax=self.ax, label=cbar, fraction=0.04, pad=0.02)
        w, h = size
        ax_w = (w - margins["left"] - margins["right"]) * 0.94  # the colorbar takes ~6%
        ax_h = h - margins["bottom"] - margins["top"]
        self.ax.xaxis.set_label_coords(0.5, -(margins["bottom"] - 0.28) / ax_h)
        self.ax.yaxis.set_label_coords(-(margins["left"] - 0.3) / ax_w, 0.5)
        self.fs = 6 if max(shape) > 20 else 8
        self.texts: list[Any] = []

    def draw(
        self,
        values: np.ndarray,
        xlabels: Sequence[str],
        ylabels: Sequence[str],
        title: str,
        vmin: float,
        vmax: float,
        annotate: str | None = None,
    ):
        """Draw one panel; ``annotate`` (a format such as ``"{:.0f}"``) prints each cell's
        value, in black or white for contrast with the cell's colour."""
        self.im.set_data(np.ma.masked_invalid(values))
        self.im.set_clim(vmin, vmax)
        for t in self.texts:
            t.remove()
        self.texts = []
        if annotate:
            span = (vmax - vmin) or 1.0
            fs = 7 if max(self.shape) <= 10 else 5.5
            for (i, j), v in np.ndenumerate(np.asarray(values, dtype=float)):
                if math.isnan(v):
                    continue
                dark = abs((v - vmin) / span - 0.5) > 0.3  # the ends of coolwarm are dark
                self.texts.append(
                    self.ax.text(
                        j,
                        i,
                        annotate.format(v),
                        ha="center",
                        va="center",
                        fontsize=fs,
                        color="white" if dark else "black",
                    )
                )
        self.ax.set_xticklabels([_ascii(x) for x in xlabels], rotation=90, fontsize=self.fs)
        self.ax.set_yticklabels([_ascii(x) for x in ylabels], fontsize=self.fs)
        import textwrap

        width = max(30, int(self.fig.get_size_inches()[0] * 13))  # ~13 chars an inch at 9 pt
        self.ax.set_title(textwrap.fill(_ascii(title), width, break_on_hyphens=False), fontsize=9)
        return self.fig


def fig2(metrics: Mapping[str, Any], d: Path) -> list[FigureInfo]:
    groups = metrics["groups"]
    models = list(dict.fromkeys(g["key"]["model"] for g in groups))
    if not groups:
        return []
    fig = _new_figure(6.5 * len(models), 4.2)
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    import matplotlib as mpl
    from matplotlib.ticker import MaxNLocator

    for ax, model in zip(axes, models, strict=True):
        ax.set_prop_cycle(color=mpl.colormaps["tab20"].colors)
        for g in (g for g in groups if g["key"]["model"] == model):
            c = g["curves"]["avg_f1"]
            y, s = _arr(c["mean"]) * 100, _arr(c["std"]) * 100
            x = np.arange(1, len(y) + 1)
            seq = "mft" in g
            (line,) = ax.plot(x, y, ls="-" if seq else ":", lw=1.5, label=_ascii(g["label"]))
            if seq and np.any(~np.isnan(s)):
                ax.fill_between(x, y - s, y + s, color=line.get_color(), alpha=0.15, lw=0)
        ax.set_title(_ascii(model))
        ax.set_xlabel("number of learned languages")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # a count: whole numbers
        ax.set_ylabel("average F1 over learned languages (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return [
        _save(
            fig,
            d,
            "fig2_avg_f1",
            "Fig. 2: average F1 over the learned languages after each step "
            "(solid: sequential, mean ± std over orders and seeds; dotted: non-sequential methods, "
            "mean F1 over the first k languages of the orders).",
        )
    ]


def _script_colors(langs: Sequence[str]) -> list[str]:
    return [
        "tab:blue" if (lang in L.LANGUAGES and L.is_latin(lang)) else "tab:orange" for lang in langs
    ]


def fig3(metrics: Mapping[str, Any], d: Path) -> list[FigureInfo]:
    """Per sequential group: the change after training each language (bars sorted)."""
    out = []
    made: dict[int, tuple[Any, Any, Any]] = {}  # one figure per language count, reused
    for g in metrics["groups"]:
        if "perf_change" not in g:
            continue
        items = [(lang, _f(v["mean"]) * 100) for lang, v in g["perf_change"].items()]
        items = [x for x in items if not math.isnan(x[1])]
        if not items:
            continue
        items.sort(key=lambda x: -x[1])
        n = len(items)
        langs = [x[0] for x in items]
        if n not in made:
            fig = _new_figure(max(6.0, 0.13 * n + 1.5), 3.6, constrained=False)
            _margins(fig, left=0.8, bottom=0.6, right=0.2, top=0.35)
            ax = fig.add_subplot()
            bars = ax.bar(range(n), np.zeros(n))
            ax.set_xticks(range(n))
            ax.tick_params(axis="x", bottom=False)
            ax.set_xlim(-0.7, n - 0.3)
            ax.axhline(0, color="k", lw=0.6)
            ax.set_ylabel("change in avg F1 of learned (pts)", fontsize=8)
            made[n] = (fig, ax, bars)
        fig, ax, bars = made[n]
        for bar, (_, v), c in zip(bars, items, _script_colors(langs), strict=True):
            bar.set_height(v)
            bar.set_color(c)
        lo, hi = min(0.0, min(v for _, v in items)), max(0.0, max(v for _, v in items))
        pad = 0.05 * (hi - lo or 1.0)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_xticklabels([_ascii(x) for x in langs], rotation=90, fontsize=6)
        ax.set_title(
            _ascii(f"{g['label']} - {g['key']['model']} (blue: Latin script, orange: non-Latin)"),
            fontsize=9,
        )
        out.append(
            _save(
                fig,
                d,
                f"fig3_change_{g['id']}",
                f"Fig. 3: change in the average F1 of the previously learned languages after training "
                f"each language, mean over {len(g['runs'])} run(s) of {g['label']} ({g['key']['model']}).",
            )
        )
    return out


def fig4(metrics: Mapping[str, Any], d: Path) -> list[FigureInfo]:
    groups = metrics["groups"]
    if not groups:
        return []
    models = list(dict.fromkeys(g["key"]["model"] for g in groups))
    labels = list(dict.fromkeys(g["label"] for g in groups))
    fig = _new_figure(max(6.0, 0.9 * len(labels) + 2), 4.0)
    ax = fig.add_subplot()
    width = 0.8 / len(models)
    for k, model in enumerate(models):
        ys, es = [], []
        for lab in labels:
            g = next((g for g in groups if g["label"] == lab and g["key"]["model"] == model), None)
            s = g["headline"]["f1"] if g else {}
            ys.append(_f(s.get("mean")) * 100)
            es.append(_f(s.get("std")) * 100 if s.get("std") is not None else 0.0)
        ax.bar(
            np.arange(len(labels)) + (k - (len(models) - 1) / 2) * width,
            ys,
            width,
            yerr=es,
            label=_ascii(model),
            capsize=2,
        )
    ax.set_xticks(
        range(len(labels)), [_ascii(x) for x in labels], rotation=30, ha="right", fontsize=8
    )
    ax.set_ylabel("F1 (%)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return [
        _save(
            fig,
            d,
            "fig4_models",
            "Fig. 4: the base models compared: Table 1 F1 per method "
            "(error bars: std over orders and seeds).",
        )
    ]


def fig5_6(metrics: Mapping[str, Any], d: Path) -> list[FigureInfo]:
    """MBT (Fig. 5) and MFT (Fig. 6) heatmaps of every sequential group: hops x languages,
    languages sorted by their mean over hops, descending."""
    out: list[FigureInfo] = []
    maps: dict[tuple[int, int], _Heatmap] = {}
    for g in metrics["groups"]:
        if "mbt" not in g:
            continue
        for which, no in (("mbt", 5), ("mft", 6)):
            data = g[which]
            langs = list(data)
            H = np.array([_arr(data[x]["by_hop"]) for x in langs]).T * 100  # hops x languages
            if H.size == 0 or np.isnan(H).all():
                continue
            score = np.asarray(M.nanmean(H, axis=0))
            idx = sorted(
                range(len(langs)), key=lambda i: (math.isnan(score[i]), -np.nan_to_num(score[i]))
            )
            H = H[:, idx]
            langs = [langs[i] for i in idx]
            lim = float(np.nanmax(np.abs(H))) or 1.0
            if H.shape not in maps:
                maps[H.shape] = _Heatmap(
                    H.shape,
                    (max(6.0, 0.13 * H.shape[1] + 2), 3.2),
                    xlabel="language (sorted by mean over hops)",
                    ylabel="hop distance h",
                    cbar="F1 points",
                    margins={"left": 0.6, "bottom": 0.75, "right": 0.3, "top": 0.35},
                )
            name = "MBT" if which == "mbt" else "MFT"
            fig = maps[H.shape].draw(
                H,
                langs,
                [str(h) for h in g["hops"]],
                f"{name} - {g['label']} ({g['key']['model']})",
                -lim,
                lim,
            )
            what = (
                "Fig. 5: multi-hop backward transfer MBT_h (eq. 14)"
                if which == "mbt"
                else "Fig. 6: multi-hop forward transfer MFT_h (eq. 13)"
            )
            out.append(
                _save(
                    fig,
                    d,
                    f"fig{no}_{which}_{g['id']}",
                    f"{what} per language (F1 points), mean over {len(g['runs'])} run(s) of "
                    f"{g['label']} ({g['key']['model']}); languages sorted by their mean over hops, "
                    "descending; grey = not computable.",
                )
            )
    return out


def _fig7_runs(
    data: StoreData, metrics: Mapping[str, Any]
) -> list[tuple[RunData, np.ndarray, str]]:
    group_of = {r["run_id"]: r["group"] for r in metrics["runs"]}
    gorder = {g["id"]: i for i, g in enumerate(metrics["groups"])}
    labels = {g["id"]: f"{g['label']} ({g['key']['model']})" for g in metrics["groups"]}
    seq = [r for r in data.runs if r.kind == "sequential"]
    seq.sort(
        key=lambda r: (
            gorder.get(group_of.get(r.run_id), 0),
            str(r.key.get("order", "")),
            r.key.get("seed", 0),
        )
    )
    out = []
    for run in seq:
        try:
            R = M.order_aligned(run.matrix, run.languages, run.steps)
        except M.MetricsError:
            continue
        label = (
            f"R of {labels.get(group_of.get(run.run_id), run.run_id)}, order {run.key.get('order', '')}, "
            f"seed {run.key.get('seed', '')}"
        )
        out.append((run, R, label))
    return out


def fig7(
    data: StoreData,
    metrics: Mapping[str, Any],
    d: Path,
    png_limit: int = FIG7_PNG_LIMIT,
    pdf: bool = True,
    png: bool = True,
) -> list[FigureInfo]:
    """The R heatmap of every sequential run: one multi-page PDF with every run, and PNGs for
    the first ``png_limit`` runs in table order (the HTML report embeds those)."""
    runs = _fig7_runs(data, metrics)
    out: list[FigureInfo] = []
    if not runs:
        return out
    maps: dict[int, _Heatmap] = {}

    def draw(run: RunData, R: np.ndarray, label: str):
        T = len(R)
        if T not in maps:
            side = max(4.0, 0.11 * T + 1.8)
            maps[T] = _Heatmap(
                (T, T),
                (side + 1.3, side),
                xlabel="evaluated language (training order)",
                ylabel="after training step",
                cbar="test F1 (%)",
                margins={"left": 0.9, "bottom": 0.75, "right": 0.75, "top": 0.5},
            )
        return maps[T].draw(
            R * 100,
            run.steps,
            [f"{i + 1} {s}" for i, s in enumerate(run.steps)],
            label,
            0,
            100,
            annotate="{:.0f}" if T <= FIG7_ANNOTATE_MAX_T else None,
        )

    if png:
        # one run per group first (order 1 of each), then the next run of each group, ...
        group_of = {r["run_id"]: r["group"] for r in metrics["runs"]}
        seen: dict[Any, int] = {}
        nth = []
        for run, _, _ in runs:
            g = group_of.get(run.run_id)
            nth.append(seen.get(g, 0))
            seen[g] = nth[-1] + 1
        picked = sorted(range(len(runs)), key=lambda i: (nth[i], i))[:png_limit]
        for run, R, label in (runs[i] for i in picked):
            name = f"fig7_R_{_slug(run.run_id)}"
            draw(run, R, label).savefig(d / f"{name}.png", dpi=FIG_DPI)
            out.append(
                FigureInfo(
                    name,
                    f"Fig. 7: {label} (run {run.run_id}); rows: after each training step, "
                    "columns: languages in training order.",
                    d / f"{name}.png",
                    None,
                )
            )
    if pdf:
        from matplotlib.backends.backend_pdf import PdfPages

        pdf_path = d / "fig7_R_all_runs.pdf"
        with _pdf_fonts(), PdfPages(pdf_path) as pages:
            for run, R, label in runs:
                pages.savefig(draw(run, R, label))
        out.append(
            FigureInfo(
                "fig7_R_all_runs",
                f"Fig. 7: the R heatmap of each of the {len(runs)} sequential "
                f"runs (one page per run; PNGs for the first {min(png_limit, len(runs))}).",
                None,
                pdf_path,
            )
        )
    return out


def _figure_job(
    job: str, data: StoreData, metrics: Mapping[str, Any], d: Path, png_limit: int
) -> list[FigureInfo]:
    """One share of the figures (a top-level function so a worker process can run it)."""
    if job == "fig7-pdf":
        return fig7(data, metrics, d, png_limit, png=False)
    if job == "fig7-png":
        return fig7(data, metrics, d, png_limit, pdf=False)
    if job == "heatmaps":
        return fig5_6(metrics, d)
    return fig2(metrics, d) + fig3(metrics, d) + fig4(metrics, d)


# longest first: with 2 workers the shares finish close together
_JOBS = ("fig7-pdf", "heatmaps", "plots", "fig7-png")


def _order_figures(results: Iterable[list[FigureInfo]]) -> list[FigureInfo]:
    figs = [f for r in results for f in r]
    rank = {"fig2": 0, "fig3": 1, "fig4": 2, "fig5": 3, "fig6": 4, "fig7": 5}
    return sorted(figs, key=lambda f: (rank.get(f.name[:4], 9), f.name.startswith("fig7_R_all")))


def _warm_matplotlib() -> None:
    """Import matplotlib's figure, Agg and PDF modules and load the font cache."""
    import matplotlib.backends.backend_agg  # noqa: F401
    import matplotlib.backends.backend_pdf  # noqa: F401
    import matplotlib.figure  # noqa: F401
    from matplotlib import font_manager

    font_manager.findfont(font_manager.FontProperties())


def _mp_context():
    import multiprocessing as mp

    return mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")


class _FigureWork:
    """The figure jobs, running in ``workers`` processes (in-process when 1 or when no
    process can be started) while the caller does other work."""

    def __init__(
        self, data: StoreData, metrics: Mapping[str, Any], d: Path, png_limit: int, workers: int
    ) -> None:
        for old in [*d.glob("fig[2-7]_*.png"), *d.glob("fig[2-7]_*.pdf")]:
            old.unlink(missing_ok=True)  # figures of an earlier analysis into the same folder
        self.jobs = [(j, data, metrics, d, png_limit) for j in _JOBS]
        self.ex = None
        self.futures: list = []
        if workers > 1:
            from concurrent.futures import ProcessPoolExecutor

            _warm_matplotlib()  # forked workers inherit it instead of each loading it

            try:
                self.ex = ProcessPoolExecutor(max_workers=workers, mp_context=_mp_context())
                self.futures = [self.ex.submit(_figure_job, *j) for j in self.jobs]
            except (OSError, RuntimeError, ImportError):
                self.close()

    def result(self) -> list[FigureInfo]:
        from concurrent.futures import BrokenExecutor

        try:
            if self.futures:
                try:
                    results = [f.result() for f in self.futures]
                except BrokenExecutor:  # a worker died (e.g. out of memory): draw here
                    self.close(wait=False)
                else:
                    self.close()
                    return _order_figures(results)
            return _order_figures(_figure_job(*j) for j in self.jobs)
        finally:
            self.close(wait=False)

    def close(self, wait: bool = True) -> None:
        """Stop the workers. After a failure (wait=False) they are terminated: waiting for a
        pool that broke or failed to pickle a job can hang."""
        if self.ex is None:
            return
        ex, self.ex, self.futures = self.ex, None, []
        if wait:
            ex.shutdown(wait=True)
            return
        procs = list((getattr(ex, "_processes", None) or {}).values())
        ex.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            if p.is_alive():
                p.terminate()


def _default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def write_figures(
    data: StoreData,
    metrics: Mapping[str, Any],
    out_dir: str | Path,
    *,
    fig7_png_limit: int = FIG7_PNG_LIMIT,
    workers: int | None = None,
) -> list[FigureInfo]:
    """Write Fig. 2-7 under out_dir/figures/ (PNG and PDF).

    ``workers`` processes share the work (default: 2, or 1 on a one-core machine).
    """
    d = Path(out_dir) / "figures"
    d.mkdir(parents=True, exist_ok=True)
    n = workers if workers is not None else _default_workers()
    return _FigureWork(data, metrics, d, fig7_png_limit, n).result()


# =========================================================================== report

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
color:#222;padding:0 1em}
h1,h2,h3{font-weight:600} table{border-collapse:collapse;margin:1em 0;font-size:13px}
caption{text-align:left;font-weight:600;padding:4px 0} th,td{border:1px solid #ccc;padding:3px 7px}
th{background:#f3f3f3} td{text-align:right} td:first-child,td:nth-child(2){text-align:left}
tr.section td{font-style:italic;background:#fafafa;text-align:left} .note{color:#555;font-size:12px}
figure{margin:1.5em 0} figure img{max-width:100%} figcaption{font-size:13px;color:#333}
pre{background:#f6f6f6;padding:8px;overflow-x:auto;font-size:12px} details{margin:.4em 0}
.warn{color:#a40}
"""


def _provenance_summary(run: RunData) -> dict[str, list[str]]:
    vals: dict[str, list[str]] = {}
    for p in run.provenance.values():
        for k, v in p.items():
            s = (
                json.dumps(v, sort_keys=True, default=str)
                if isinstance(v, (dict, list))
                else str(v)
            )
            lst = vals.setdefault(k, [])
            if s not in lst:
                lst.append(s)
    return vals


def write_report(
    data: StoreData,
    metrics: Mapping[str, Any],
    tables: Sequence[Table],
    figures: Sequence[FigureInfo],
    out_dir: str | Path,
) -> Path:
    """Write out_dir/report.html: every table, every figure (PNG embedded), provenance."""
    e = html.escape
    s = metrics["settings"]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>hpc-forget report: {e(metrics['store'])}</title><style>{_CSS}</style></head><body>",
        "<h1>hpc-forget analysis report</h1>",
        f"<p>Store <code>{e(metrics['store'])}</code>, analysed {e(metrics['created'])}: "
        f"{len(metrics['runs'])} runs in {len(metrics['groups'])} groups. "
        f"Transfer convention <b>{e(s['convention'])}</b>; P averaged over the <b>{e(s['p_set'])}</b> "
        f"language set in eq. 9 / Fig. 3 and over the <b>{e(s['hop_p_set'])}</b> set in eq. 13-14 "
        f"(MFT, MBT); vitality groups {e(json.dumps(s['vitality']))}; "
        f"{s['bootstrap']['resamples']} bootstrap resamples (seed {s['bootstrap']['seed']}) of the "
        "orders, then the seeds within each order. Missing cells are never read as 0.</p>",
    ]
    if metrics.get("settings_note"):
        parts.append(f"<p class='warn'>{e(metrics['settings_note'])}</p>")
    if metrics["problems"]:
        parts.append(
            "<h3 class='warn'>Store problems</h3><ul>"
            + "".join(f"<li>{e(p)}</li>" for p in metrics["problems"])
            + "</ul>"
        )
    n_missing = sum(len(v) for v in metrics["missing"].values())
    if n_missing:
        parts.append(
            f"<p class='warn'>{len(metrics['missing'])} run(s) are incomplete ({n_missing} missing cells): "
            "see <a href='#missing'>Missing cells</a>.</p>"
        )
    parts.append("<h2>Tables</h2>")
    for t in tables:
        if t.name == "missing" and not t.rows:
            continue
        if t.name in (
            "per_language_f1",
            "per_language_transfer",
            "groupings",
            "headline",
            "hop_transfer",
        ):
            parts.append(f"<details><summary>{e(t.title)}</summary>{table_html(t)}</details>")
        else:
            parts.append(table_html(t))
    parts.append("<h2>Figures</h2>")
    for f in figures:
        if f.png is not None and f.png.exists():
            b64 = base64.b64encode(f.png.read_bytes()).decode("ascii")
            parts.append(
                f"<figure id='{e(f.name)}'><img alt='{e(f.name)}' src='data:image/png;base64,{b64}'>"
                f"<figcaption>{e(f.caption)}</figcaption></figure>"
            )
        elif f.pdf is not None:
            parts.append(
                f"<p>{e(f.caption)} Not embedded: see <code>figures/{e(f.pdf.name)}</code>.</p>"
            )
    # provenance
    parts.append("<h2>Runs, configuration and provenance</h2>")
    gl = {g["id"]: g for g in metrics["groups"]}
    rrec = {r["run_id"]: r for r in metrics["runs"]}
    parts.append(
        "<table><caption>Runs (each table and figure row averages the runs of its group)</caption>"
        "<thead><tr><th>Run</th><th>Group</th><th>Kind</th><th>Order</th><th>Seed</th>"
        "<th>Cells present</th></tr></thead><tbody>"
    )
    for r in metrics["runs"]:
        g = gl.get(r["group"], {})
        parts.append(
            f"<tr><td>{e(r['run_id'])}</td><td>{e(g.get('label', ''))} ({e(str(r['key'].get('model', '')))})</td>"
            f"<td>{e(r['kind'])}</td><td>{e(str(r['key'].get('order', '')))}</td>"
            f"<td>{e(str(r['key'].get('seed', '')))}</td><td>{r['cells_present']}/{r['cells_expected']}</td></tr>"
        )
    parts.append("</tbody></table>")
    configs: dict[str, tuple[str, list[str]]] = {}
    for run in data.runs:
        txt = json.dumps(run.config, indent=2, sort_keys=True, default=str)
        h = hashlib.sha256(txt.encode()).hexdigest()[:8]
        configs.setdefault(h, (txt, []))[1].append(run.run_id)
    for h, (txt, ids) in configs.items():
        parts.append(
            f"<details><summary>Config {h} (used by {len(ids)} run(s))</summary>"
            f"<p class='note'>{e(', '.join(ids))}</p><pre>{e(txt)}</pre></details>"
        )
    for run in data.runs:
        prov = _provenance_summary(run)
        meta_keys = sorted({k for m in run.step_meta.values() for k in m})
        body = "".join(
            f"<tr><td>{e(k)}</td><td>{e('; '.join(v))}</td></tr>" for k, v in sorted(prov.items())
        )
        parts.append(
            f"<details><summary>Provenance of {e(run.run_id)} "
            f"({len(run.provenance)} step(s) recorded)</summary><table><tbody>{body}</tbody></table>"
            f"<p class='note'>key: {e(json.dumps(rrec[run.run_id]['key'], sort_keys=True))}; "
            f"step meta fields: {e(', '.join(meta_keys))}</p></details>"
        )
    parts.append("</body></html>")
    path = Path(out_dir) / "report.html"
    path.write_text("".join(parts), encoding="utf-8")
    return path


# =========================================================================== entry points


def write_metrics(metrics: Mapping[str, Any], out_dir: str | Path) -> Path:
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / "metrics.json"
    path.write_text(json.dumps(metrics, indent=1, allow_nan=False), encoding="utf-8")
    return path


def _check_out(out_dir: str | Path) -> Path:
    d = Path(out_dir)
    if d.exists() and not d.is_dir():
        raise AnalysisError(f"--out {out_dir}: is a file; give a folder to write the analysis into")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AnalysisError(f"--out {out_dir}: cannot create the folder ({exc.strerror})") from None
    return d


def analyze(
    store_path: str | Path,
    out_dir: str | Path,
    *,
    convention: str = "paper",
    vitality: Mapping[str, Iterable[int]] | str | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    p_set: str = M.P_SET_DEFAULT,
    hop_p_set: str = M.HOP_P_SET_DEFAULT,
    params: ParamsFn | None = None,
    fig7_png_limit: int = FIG7_PNG_LIMIT,
    workers: int | None = None,
) -> dict[str, Any]:
    """Reduce the store at ``store_path`` into ``out_dir``: metrics.json, tables/, figures/,
    report.html. Returns the metrics dict (as written to metrics.json).

    convention: paper | paper-literal | gem | avalanche | mhamdi (Table 2; metrics.json holds
    all). vitality: None (High 4-5, Mid 3, Low 0-2), a mapping or "High=4-5,Mid=3,Low=0-2".
    bootstrap/seed: resamples and seed of the CIs. p_set (eq. 9, Fig. 3; default "common")
    and hop_p_set (eq. 13-14; default "seen"): "common" or "seen" (docs/metrics.md).
    params: callable (group key, n_languages) -> trainable params in millions (Table 1).
    workers: processes drawing figures (default 2).
    """
    data = load_store(store_path)
    return analyze_data(
        data,
        out_dir,
        convention=convention,
        vitality=vitality,
        bootstrap=bootstrap,
        seed=seed,
        p_set=p_set,
        hop_p_set=hop_p_set,
        params=params,
        fig7_png_limit=fig7_png_limit,
        workers=workers,
    )


def analyze_data(
    data: StoreData,
    out_dir: str | Path,
    *,
    convention: str = "paper",
    vitality: Mapping[str, Iterable[int]] | str | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    p_set: str = M.P_SET_DEFAULT,
    hop_p_set: str = M.HOP_P_SET_DEFAULT,
    params: ParamsFn | None = None,
    fig7_png_limit: int = FIG7_PNG_LIMIT,
    workers: int | None = None,
) -> dict[str, Any]:
    """:func:`analyze` on runs already in memory (see :func:`load_store`)."""
    out = _check_out(out_dir)
    metrics = compute_metrics(
        data,
        convention=convention,
        vitality=vitality,
        bootstrap=bootstrap,
        seed=seed,
        p_set=p_set,
        hop_p_set=hop_p_set,
    )
    figdir = out / "figures"
    figdir.mkdir(exist_ok=True)
    work = _FigureWork(
        data,
        metrics,
        figdir,
        fig7_png_limit,
        workers if workers is not None else _default_workers(),
    )
    try:
        attach_params(metrics, data, params)
        write_metrics(metrics, out)
        tables = write_tables(metrics, out)
        figures = work.result()
    finally:
        work.close(wait=False)  # no-op after result(); on an error, stop drawing
    write_report(data, metrics, tables, figures, out)
    return metrics


def metrics_from_store(store_path: str | Path, **kw: Any) -> tuple[StoreData, dict[str, Any]]:
    """Load a store and compute its metrics (what every analysis/ script starts with)."""
    data = load_store(store_path)
    return data, compute_metrics(data, **kw)


def read_metrics(path: str | Path) -> dict[str, Any]:
    """Read a metrics.json written by :func:`write_metrics`."""
    p = Path(path)
    try:
        m = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AnalysisError(
            f"{path}: cannot read metrics.json ({exc}); run analysis/metrics.py first"
        ) from None
    if m.get("schema_version") != SCHEMA_VERSION:
        raise AnalysisError(
            f"{path}: metrics schema {m.get('schema_version')} is not {SCHEMA_VERSION}; recompute it"
        )
    return m


# =========================================================================== script helpers


def add_analysis_args(ap: Any, *, figures: bool = False) -> None:
    """The options shared by the analysis/ scripts (an argparse.ArgumentParser): the store,
    ``--out`` and :data:`hpc_forget.analysis.options.OPTIONS` (also `hpc-forget analyze`'s)."""
    ap.add_argument("store", help="store folder, or its consolidated .h5 copy")
    ap.add_argument("--out", required=True, help="output folder")
    add_argparse(ap)
    if figures:
        add_argparse(ap, (WORKERS,))
        ap.add_argument(
            "--fig7-png",
            type=int,
            default=FIG7_PNG_LIMIT,
            help=f"R heatmaps also written as PNG (default {FIG7_PNG_LIMIT}; all are in the PDF)",
        )


def metric_options(args: Any) -> dict[str, Any]:
    """compute_metrics keyword arguments from parsed :func:`add_analysis_args` options."""
    return option_values(args)


def analysis_notes(metrics: Mapping[str, Any]) -> list[str]:
    """The one-line notes an analysis prints on stderr: runs of other settings in the same
    cells, and damaged files or runs that were skipped (listed in report.html)."""
    out = []
    if metrics.get("settings_note"):
        out.append(str(metrics["settings_note"]))
    problems = metrics.get("problems") or []
    if problems:
        first = str(problems[0])
        first = first if len(first) <= 120 else first[:117] + "..."
        out.append(
            f"warning: skipped {len(problems)} damaged file(s) or run(s) of the store, listed in "
            f"report.html and metrics.json 'problems' (first: {first})"
        )
    return out


def print_notes(metrics: Mapping[str, Any]) -> None:
    """Print :func:`analysis_notes` on stderr, one line each."""
    for line in analysis_notes(metrics):
        print(line, file=sys.stderr)


def done_message(out_dir: str | Path, metrics: Mapping[str, Any]) -> str:
    """What `analyze` prints at the end: the output folder and the report to open."""
    out = Path(out_dir)
    return (
        f"wrote {out}/: metrics.json, tables/, figures/ ({len(metrics.get('runs', []))} runs, "
        f"{len(metrics.get('groups', []))} groups)\nopen {out / 'report.html'}"
    )


def run_script(main: Callable[[], None]) -> int:
    """Run an analysis script's ``main``: user errors become one line on stderr, exit 2."""
    errors: tuple[type[BaseException], ...] = (AnalysisError, L.LanguageError, M.MetricsError)
    try:
        from hpc_forget.errors import StoreError

        errors += (StoreError,)
    except ImportError:
        pass
    try:
        main()
    except errors as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
