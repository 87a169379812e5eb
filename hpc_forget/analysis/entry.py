"""Entry points: :func:`analyze` (``hpc-forget analyze STORE --out DIR``: metrics.json, tables,
figures and report.html), :func:`analyze_data`, :func:`read_metrics`, and the argparse glue the
analysis/ scripts share. See docs/analysis.md (outputs, incomplete stores).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hpc_forget.analysis import metrics as M
from hpc_forget.analysis.figures import FIG7_PNG_LIMIT, FigureWork, default_workers
from hpc_forget.analysis.load import StoreData, load_store
from hpc_forget.analysis.options import DEFAULTS, WORKERS, AnalysisOptions, add_argparse
from hpc_forget.analysis.reduce import SCHEMA_VERSION, ParamsFn, attach_params, compute_metrics
from hpc_forget.analysis.report import write_report
from hpc_forget.analysis.tables import write_tables
from hpc_forget.errors import AnalysisError
from hpc_forget.study import languages as L


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
    options: AnalysisOptions = DEFAULTS,
    *,
    params: ParamsFn | None = None,
    fig7_png_limit: int = FIG7_PNG_LIMIT,
    workers: int | None = None,
) -> dict[str, Any]:
    """Reduce the store at ``store_path`` into ``out_dir``: metrics.json, tables/, figures/,
    report.html. Returns the metrics dict (as written to metrics.json).

    options: how metrics are computed (:class:`AnalysisOptions`, the analysis options).
    params: callable (group key, n_languages) -> trainable params in millions (Table 1).
    workers: processes drawing figures (default 2).
    """
    data = load_store(store_path)
    return analyze_data(
        data, out_dir, options, params=params, fig7_png_limit=fig7_png_limit, workers=workers
    )


def analyze_data(
    data: StoreData,
    out_dir: str | Path,
    options: AnalysisOptions = DEFAULTS,
    *,
    params: ParamsFn | None = None,
    fig7_png_limit: int = FIG7_PNG_LIMIT,
    workers: int | None = None,
) -> dict[str, Any]:
    """:func:`analyze` on runs already in memory (see :func:`load_store`)."""
    out = _check_out(out_dir)
    metrics = compute_metrics(data, options)
    figdir = out / "figures"
    figdir.mkdir(exist_ok=True)
    work = FigureWork(
        data,
        metrics,
        figdir,
        fig7_png_limit,
        workers if workers is not None else default_workers(),
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


def metrics_from_store(
    store_path: str | Path, options: AnalysisOptions = DEFAULTS
) -> tuple[StoreData, dict[str, Any]]:
    """Load a store and compute its metrics (what every analysis/ script starts with)."""
    data = load_store(store_path)
    return data, compute_metrics(data, options)


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


def metric_options(args: Any) -> AnalysisOptions:
    """The :class:`AnalysisOptions` of parsed :func:`add_analysis_args` options."""
    return AnalysisOptions.from_args(args)


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
