"""Print what a store holds: the F1 table of every run and the R matrix of sequential runs.

This is the quick look `hpc-forget run` prints at the end; the full analysis (metrics, tables,
figures, report) is `hpc-forget analyze`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from hpc_forget.methods import DISPLAY_NAME


def _pct(x: float) -> str:
    return "   -  " if math.isnan(x) else f"{100 * x:6.2f}"


def _label(key: dict) -> str:
    s = DISPLAY_NAME.get(key["method"], key["method"])
    if key.get("rank"):
        s += f" r={key['rank']}"
    if key.get("order"):
        s += f" order {key['order']}"
    return f"{s} [{key['model']}, seed {key['seed']}]"


def final_scores(kind: str, matrix: np.ndarray) -> np.ndarray:
    """Per-language test F1 a run ends with (NaN where absent).

    sequential: the last row of R; joint: its one row; per-language: the diagonal.
    """
    if kind == "per-language":
        return np.diag(matrix).copy()
    return matrix[-1].copy()


def format_summary(store: object, run_ids: Iterable[str] | None = None) -> str:
    """A plain-text F1 table (one row per run) followed by each sequential run's R matrix."""
    wanted = set(run_ids) if run_ids is not None else None
    records = [r for r in store.runs() if wanted is None or r.run_id in wanted]
    if not records:
        return "the store holds no runs yet"
    records.sort(
        key=lambda r: (
            r.key["model"],
            r.key["method"],
            r.key["rank"],
            r.key["order"],
            r.key["seed"],
        )
    )
    langs = records[0].languages
    width = max(len(_label(r.key)) for r in records)
    lines = ["Test slot F1 (%) per language; '-' = not computed yet", ""]
    lines.append(f"{'run':<{width}}  " + " ".join(f"{x:>6}" for x in langs) + "    avg")
    matrices = {}
    for r in records:
        m = store.matrix(r.run_id)
        matrices[r.run_id] = m
        row = final_scores(r.kind, m)
        cells = {loc: row[i] for i, loc in enumerate(r.languages)}
        vals = [cells.get(x, math.nan) for x in langs]
        present = [v for v in vals if not math.isnan(v)]
        avg = sum(present) / len(present) if len(present) == len(vals) else math.nan
        lines.append(
            f"{_label(r.key):<{width}}  " + " ".join(_pct(v) for v in vals) + f" {_pct(avg)}"
        )
    for r in records:
        if r.kind != "sequential":
            continue
        m = matrices[r.run_id]
        lines += [
            "",
            f"R matrix of {_label(r.key)}: row i = after training step i, column = test language",
        ]
        lines.append(f"{'step':<14}" + " ".join(f"{x:>6}" for x in r.languages))
        for i, trained in enumerate(r.steps):
            lines.append(f"{i + 1:>2} {trained:<11}" + " ".join(_pct(v) for v in m[i]))
    missing = sum(len(store.missing(r.run_id)) for r in records)
    lines += ["", f"{len(records)} runs; {missing} expected cells missing"]
    return "\n".join(lines)
