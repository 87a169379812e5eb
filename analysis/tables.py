"""Write Table 1, Table 2 and the other tables of a store as CSV, Markdown and LaTeX.

    python analysis/tables.py STORE --out DIR [--convention paper] [--vitality SPEC]
                                             [--bootstrap 1000] [--seed 0] [--p-set common]
                                             [--hop-p-set seen] [--no-params]

Writes DIR/tables/*.csv|md|tex (and DIR/metrics.json). Table 1's parameter counts: arithmetic
on the known presets' shapes, else what the engine recorded (no torch, no network);
--no-params leaves that column empty. See docs/analysis.md.
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
    write_metrics,
)
from hpc_forget.analysis.reduce import attach_params
from hpc_forget.analysis.tables import write_tables


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write DIR/tables/ for a results store.")
    add_analysis_args(ap)
    ap.add_argument("--no-params", action="store_true", help="do not count trainable parameters")
    args = ap.parse_args(argv)

    def run() -> None:
        data, metrics = metrics_from_store(args.store, metric_options(args))
        attach_params(metrics, data, (lambda key, n: None) if args.no_params else None)
        print_notes(metrics)
        write_metrics(metrics, args.out)
        tables = write_tables(metrics, args.out)
        print(f"wrote {len(tables)} tables (csv, md, tex) under {args.out}/tables")

    return run_script(run)


if __name__ == "__main__":
    sys.exit(main())
