"""Draw the paper's figures (Fig. 2-7) for a store as PNG and PDF.

    python analysis/figures.py STORE --out DIR [--workers 2] [--fig7-png 12] [metric options]

Writes DIR/figures/: fig2 (average F1 vs learned languages), fig3 (change per language),
fig4 (models compared), fig5/fig6 (MBT/MFT heatmaps), fig7 (R heatmaps: one PDF page per
sequential run, PNGs for the first --fig7-png), and strategy_comparison (each strategy against
none, only when the store holds strategies). See docs/analysis.md.
"""

from __future__ import annotations

import argparse
import sys

from hpc_forget.analysis.entry import (
    add_analysis_args,
    metric_options,
    metrics_from_store,
    print_notes,
    run_script,
)
from hpc_forget.analysis.figures import write_figures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write DIR/figures/ for a results store.")
    add_analysis_args(ap, figures=True)
    args = ap.parse_args(argv)

    def run() -> None:
        data, metrics = metrics_from_store(args.store, metric_options(args))
        print_notes(metrics)
        figs = write_figures(
            data, metrics, args.out, fig7_png_limit=args.fig7_png, workers=args.workers
        )
        print(f"wrote {len(figs)} figures under {args.out}/figures")

    return run_script(run)


if __name__ == "__main__":
    sys.exit(main())
