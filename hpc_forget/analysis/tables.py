"""Table 1, Table 2 and the other tables from the metrics dict, as CSV, Markdown, LaTeX and HTML
(:func:`build_tables`, :func:`write_tables`)."""

from __future__ import annotations

import csv
import html
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpc_forget.analysis import metrics as M
from hpc_forget.analysis.compare import COMPARED, comparison_entries
from hpc_forget.analysis.reduce import as_float, mean_of, method_label
from hpc_forget.study import languages as L


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
    v = as_float(x)
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
                    _fmt(mean_of(f), 100),
                    _fmt(mean_of(b), 100),
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


_COMPARE_SCALE = {
    "f1": (100.0, 2, "%"),
    "cbt": (1.0, 3, ""),
    "cft": (1.0, 3, ""),
    "mbt_0": (100.0, 2, "pts"),
}


def _fmt_value_ci(s: Mapping[str, Any] | None, scale: float, digits: int) -> str:
    """``mean [low, high]``; ``mean (k units, no CI)`` when too few units for an interval."""
    if not s or s.get("mean") is None:
        return "-"
    m = _fmt(s["mean"], scale, digits)
    if s.get("ci_low") is not None:
        return f"{m} [{_fmt(s['ci_low'], scale, digits)}, {_fmt(s['ci_high'], scale, digits)}]"
    k = s.get("ci_units")
    if k is not None and k < M.MIN_CI_UNITS:
        return f"{m} ({k} unit{'s' * (k != 1)}, no CI)"
    return f"{m} (no CI)"


def strategy_comparison_table(metrics: Mapping[str, Any]) -> Table:
    """Each strategy against none on the same method, model, rank, data scale, settings and
    orders: final F1, CBT, CFT and MBT_0, the strategy's and none's value and the paired
    difference, each with its bootstrap CI (analysis/compare.py)."""
    with_model = _multi_model(metrics)
    cols = (["Model"] if with_model else []) + [
        "Method",
        "Metric",
        "Strategy [95% CI]",
        "none [95% CI]",
        "Δ strategy - none [95% CI]",
        "Pairs",
        "Note",
    ]
    rows: list[list[str]] = []
    csv_rows: list[list[Any]] = []
    names = dict(COMPARED)
    for e in comparison_entries(metrics):
        for name, c in e["metrics"].items():
            scale, digits, unit = _COMPARE_SCALE.get(name, (1.0, 3, ""))
            note = c.get("status") or ""
            if not c.get("status") and e.get("unpaired"):
                note = "unpaired: " + "; ".join(e["unpaired"])
            unit_word = {"order": "orders", "language": "languages"}.get(e.get("unit") or "", "")
            pairs = f"{c['pairs']} ({unit_word})" if c["pairs"] and unit_word else str(c["pairs"])
            rows.append(
                ([e["key"]["model"]] if with_model else [])
                + [
                    e["label"],
                    names.get(name, name) + (f" ({unit})" if unit else ""),
                    _fmt_value_ci(c.get("strategy"), scale, digits),
                    _fmt_value_ci(c.get("none"), scale, digits),
                    _fmt_value_ci(c.get("difference"), scale, digits),
                    pairs,
                    note,
                ]
            )
            d: dict[str, Any] = {
                "group": e["group"],
                "none_group": e.get("none_group") or "",
                "model": e["key"]["model"],
                "method": e["label"],
                "strategy": e["key"]["strategy"],
                "metric": name,
                "scale": scale,
                "unit": e.get("unit") or "",
                "pairs": c["pairs"],
            }
            for side in ("strategy", "none", "difference"):
                s = c.get(side) or {}
                for k in ("mean", "ci_low", "ci_high"):
                    v = s.get(k)
                    d[f"{side}_{k}"] = "" if v is None else v * scale
                d[f"{side}_n"] = s.get("n", 0)
            d["status"] = note
            csv_rows.append(list(d.values()))
    csv_cols = (
        ["group", "none_group", "model", "method", "strategy", "metric", "scale", "unit", "pairs"]
        + [
            f"{side}_{k}"
            for side in ("strategy", "none", "difference")
            for k in ("mean", "ci_low", "ci_high", "n")
        ]
        + ["status"]
    )
    b = metrics["settings"]["bootstrap"]
    conv = metrics["settings"]["convention"]
    return Table(
        "strategy_comparison",
        "Strategies against none on the same method, model, rank, data scale and orders: "
        "value and paired difference, with 95% bootstrap CIs",
        cols,
        rows,
        csv_cols,
        csv_rows,
        note=(
            f"F1 in %, CBT and CFT (convention: {conv}) as fractions, MBT_0 in F1 points; "
            "higher is better for all. Δ: the mean over pairs of strategy - none; its CI is a "
            f"paired percentile bootstrap, {b['resamples']} resamples, seed {b['seed']}, of "
            "the pairs' orders (seeds within an order), or of the languages for a merged "
            "per-language method; no CI with fewer than "
            f"{M.MIN_CI_UNITS} units. The three columns are over the same pairs."
        ),
    )


def build_tables(metrics: Mapping[str, Any]) -> list[Table]:
    """Every table of the report, from a metrics dict (``strategy_comparison`` only when
    the store holds a strategy other than none)."""
    compared = [strategy_comparison_table(metrics)] if comparison_entries(metrics) else []
    return [
        table1(metrics),
        table2(metrics),
        *compared,
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
    names = {t.name for t in tables}
    for ext in ("csv", "md", "tex"):  # a table of an earlier analysis into the same folder
        if "strategy_comparison" not in names:
            (d / f"strategy_comparison.{ext}").unlink(missing_ok=True)
    for t in tables:
        with open(d / f"{t.name}.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(t.csv_columns)
            w.writerows(t.csv_rows)
        (d / f"{t.name}.md").write_text(table_markdown(t), encoding="utf-8")
        (d / f"{t.name}.tex").write_text(table_latex(t), encoding="utf-8")
    return tables
