"""Compute every metric of a store and write OUT/metrics.json.

    python analysis/metrics.py STORE --out DIR [--convention paper] [--vitality SPEC]
                                              [--bootstrap 1000] [--seed 0] [--p-set common]
                                              [--hop-p-set seen]

STORE is the store folder or its consolidated .h5 copy. See docs/analysis.md.
"""

from __future__ import annotations

import argparse
import sys
import time

from hpc_forget.analysis.entry import (
    add_analysis_args,
    metric_options,
    metrics_from_store,
    print_notes,
    run_script,
    write_metrics,
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write DIR/metrics.json for a results store.")
    add_analysis_args(ap)
    args = ap.parse_args(argv)

    def run() -> None:
        t = time.perf_counter()
        _, metrics = metrics_from_store(args.store, metric_options(args))
        path = write_metrics(metrics, args.out)
        print_notes(metrics)
        missing = sum(len(v) for v in metrics["missing"].values())
        print(
            f"wrote {path}: {len(metrics['runs'])} runs, {len(metrics['groups'])} groups, "
            f"{missing} missing cells, {time.perf_counter() - t:.1f} s"
        )

    return run_script(run)


if __name__ == "__main__":
    sys.exit(main())
