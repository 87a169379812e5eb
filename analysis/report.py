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

from hpc_forget.analysis import reporting


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Analyse a results store into DIR.")
    reporting.add_analysis_args(ap, figures=True)
    args = ap.parse_args(argv)

    def run() -> None:
        t = time.perf_counter()
        metrics = reporting.analyze(
            args.store,
            args.out,
            fig7_png_limit=args.fig7_png,
            workers=args.workers,
            **reporting.metric_options(args),
        )
        reporting.print_notes(metrics)
        print(f"{reporting.done_message(args.out, metrics)} ({time.perf_counter() - t:.1f} s)")

    return reporting.run_script(run)


if __name__ == "__main__":
    sys.exit(main())
