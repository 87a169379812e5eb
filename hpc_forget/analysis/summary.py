"""Print what a store holds: the F1 table of every run and the R matrix of sequential runs.

This is the quick look `hpc-forget run` prints at the end; the full analysis (metrics, tables,
figures, report) is `hpc-forget analyze`.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpc_forget.analysis.reduce import language_scores
from hpc_forget.study.identity import grid_key, settings_labels
from hpc_forget.study.methods import DISPLAY_NAME

if TYPE_CHECKING:
    from hpc_forget.run.engine import StudyRun


def _pct(x: float) -> str:
    return "   -  " if math.isnan(x) else f"{100 * x:6.2f}"


def _label(key: dict, settings_label: str = "") -> str:
    s = DISPLAY_NAME.get(key["method"], key["method"])
    if key.get("rank"):
        s += f" r={key['rank']}"
    if key.get("order"):
        s += f" order {key['order']}"
    extra = f", {settings_label}" if settings_label else ""
    return f"{s} [{key['model']}, seed {key['seed']}{extra}]"


def _settings_labels(records: Sequence[Any]) -> dict[str, str]:
    """run id -> the settings keys in which it differs from the runs of its grid cell (same
    key apart from the settings digest); "" where the cell holds one settings."""
    cells: dict[str, dict[str, dict]] = {}
    for r in records:
        cells.setdefault(grid_key(r.key), {}).setdefault(
            str(r.key.get("settings", "")), dict(r.settings)
        )
    labels: dict[str, str] = {}
    for cell, by_digest in cells.items():
        if len(by_digest) > 1:
            for digest, lab in zip(
                by_digest, settings_labels(list(by_digest.values())), strict=True
            ):
                labels[f"{cell}|{digest}"] = lab
    return {
        r.run_id: labels.get(f"{grid_key(r.key)}|{r.key.get('settings', '')}", "") for r in records
    }


def format_summary(store: object, run_ids: Iterable[str] | None = None) -> str:
    """A plain-text F1 table (one row per run) followed by each sequential run's R matrix."""
    wanted = set(run_ids) if run_ids is not None else None
    records = [r for r in store.runs() if wanted is None or r.run_id in wanted]
    if not records:
        return "the store holds no runs yet"
    slabel = _settings_labels(records)
    records.sort(
        key=lambda r: (
            r.key["model"],
            r.key["method"],
            r.key["rank"],
            slabel[r.run_id],
            r.key["order"],
            r.key["seed"],
        )
    )
    langs = records[0].languages
    width = max(len(_label(r.key, slabel[r.run_id])) for r in records)
    lines = ["Test slot F1 (%) per language; '-' = not computed yet", ""]
    lines.append(f"{'run':<{width}}  " + " ".join(f"{x:>6}" for x in langs) + "    avg")
    for r in records:
        cells = language_scores(r)
        vals = [cells.get(x, math.nan) for x in langs]
        present = [v for v in vals if not math.isnan(v)]
        avg = sum(present) / len(present) if len(present) == len(vals) else math.nan
        lines.append(
            f"{_label(r.key, slabel[r.run_id]):<{width}}  "
            + " ".join(_pct(v) for v in vals)
            + f" {_pct(avg)}"
        )
    for r in records:
        if r.kind != "sequential":
            continue
        m = r.R
        lines += [
            "",
            f"R matrix of {_label(r.key, slabel[r.run_id])}: row i = after training step i, column = test language",
        ]
        lines.append(f"{'step':<14}" + " ".join(f"{x:>6}" for x in r.languages))
        for i, trained in enumerate(r.steps):
            lines.append(f"{i + 1:>2} {trained:<11}" + " ".join(_pct(v) for v in m[i]))
    missing = sum(len(r.missing()) for r in records)
    lines += ["", f"{len(records)} runs; {missing} expected cells missing"]
    return "\n".join(lines)


def run_message(study: StudyRun) -> str:
    """What `hpc-forget run` prints: what ran, a note on other settings in the store, the
    summary table of the study's runs, where the store is and the next command."""
    from hpc_forget.store.store import Store
    from hpc_forget.study.identity import store_note

    cfg, run_ids = study.cfg, {t.run_id for t in study.tasks}
    store = Store(cfg.store)
    lines = [
        f"{cfg.name}: {len(study.ran)} tasks, {sum(study.ran.values())} step(s) trained in"
        f" {study.seconds:.1f} s (steps already in the store were skipped)"
    ]
    note = store_note(store, cfg, run_ids)
    if note:
        lines.append(note)
    out = Path(cfg.store).parent / "report"
    tail = [
        f"store: {cfg.store}",
        f"next: hpc-forget analyze {shlex.quote(cfg.store)} --out {shlex.quote(str(out))}"
        "   (metrics, tables, figures and report.html)",
    ]
    return "\n".join(lines) + "\n\n" + format_summary(store, run_ids) + "\n\n" + "\n".join(tail)
