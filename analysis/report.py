"""The whole analysis of a store: metrics.json, tables/, figures/ and report.html.

    python analysis/report.py STORE --out DIR [--convention paper] [--vitality SPEC]
                                             [--bootstrap 1000] [--seed 0] [--p-set common]
                                             [--hop-p-set seen] [--workers 2] [--fig7-png 12]

The same as `hpc-forget analyze STORE --out DIR`. report.html is self-contained (figures
embedded), so it can be mailed or opened offline. See docs/analysis.md.
"""

from __future__ import annotations

import argparse
import sys
import time

from hpc_forget.analysis.entry import (
    add_analysis_args,
    analyze,
    done_message,
    metric_options,
    print_notes,
    run_script,
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Analyse a results store into DIR.")
    add_analysis_args(ap, figures=True)
    args = ap.parse_args(argv)

    def run() -> None:
        t = time.perf_counter()
        metrics = analyze(
            args.store,
            args.out,
            metric_options(args),
            fig7_png_limit=args.fig7_png,
            workers=args.workers,
        )
        print_notes(metrics)
        print(f"{done_message(args.out, metrics)} ({time.perf_counter() - t:.1f} s)")

    return run_script(run)


if __name__ == "__main__":
    sys.exit(main())
