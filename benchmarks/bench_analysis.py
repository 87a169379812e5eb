"""Benchmark: reduce a store of the paper's full grid, with synthetic scores.

Builds (with the real Store writer API, put_run / put_step) a store holding the paper's grid
for 52 languages, 2 models and 1 seed: 5 orders x {VANILLA, SHARED LoRA r=32/64/256}, MULTI
(full and LoRA 32/64/256), MONO and NON-SHARED LoRA r=32/64/256: 56 runs, 2,504 step files.
It consolidates the store (``Store.consolidate``: what users copy to a laptop) and times, on
the consolidated file,

- the metrics alone: load the store + every metric (budget 5 s), and
- the full analysis: ``analyze`` -> metrics.json, tables, figures, report.html (budget 30 s),

and prints both timings and their ratio to the budgets.

    python benchmarks/bench_analysis.py [--store DIR] [--out DIR] [--workers N] [--keep]

An existing store at --store is reused (built once, timed many times).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hpc_forget.analysis.entry import analyze
from hpc_forget.analysis.load import load_store
from hpc_forget.analysis.options import WORKERS, add_argparse
from hpc_forget.analysis.reduce import compute_metrics
from hpc_forget.data.labels import LABELS
from hpc_forget.store.store import Store
from hpc_forget.study import languages as L
from hpc_forget.study.methods import METHOD_KIND
from hpc_forget.study.orders import MASSIVE_LOCALES, PAPER_ORDERS
from hpc_forget.study.planning import RunKey

METRICS_BUDGET_S = 5.0
FULL_BUDGET_S = 30.0
MODELS = ("xlm-roberta-base", "multilingual-e5-large-instruct")  # the paper config's models
GRID: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("multi", (0, 32, 64, 256)),
    ("mono", (0,)),
    ("vanilla", (0,)),
    ("shared_lora", (32, 64, 256)),
    ("nonshared_lora", (32, 64, 256)),
)
DESTRUCTIVE = {"zh-CN": 0.012, "ja-JP": 0.009, "zh-TW": 0.008, "th-TH": 0.005, "de-DE": -0.003}


def _ability(rng: np.random.Generator, langs: list[str]) -> dict[str, float]:
    return {
        lang: float(rng.uniform(0.68, 0.78) + (0.02 if L.is_latin(lang) else 0.0)) for lang in langs
    }


def _sequential(
    rng: np.random.Generator, order: tuple[str, ...], ability: dict[str, float], lora: bool
) -> np.ndarray:
    """Order-aligned synthetic R: learned languages decay as others are trained (faster for
    a shared LoRA, and after the destructive languages); unseen ones get zero-shot scores."""
    T = len(order)
    R = np.empty((T, T))
    damage = np.array([DESTRUCTIVE.get(x, 0.002) for x in order]) * (1.6 if lora else 1.0)
    for i in range(T):
        for j in range(T):
            if j <= i:
                v = (
                    ability[order[j]]
                    - (0.08 if lora else 0.0) * (i > j)
                    - damage[j + 1 : i + 1].sum()
                )
            else:
                v = 0.42 + (0.08 if L.is_latin(order[j]) else 0.0) + 0.0015 * i
            R[i, j] = v + rng.normal(0, 0.012)
    return np.clip(R, 0.0, 1.0)


def build_store(path: Path, seed: int = 0) -> int:
    """Write the full grid into the store at ``path``; returns the number of step files."""
    rng = np.random.default_rng(seed)
    store = Store(path)
    store.check_writable()
    langs = list(MASSIVE_LOCALES)
    prov = {
        "hpc_forget": "bench",
        "host": socket.gethostname(),
        "python": sys.version.split()[0],
        "git_commit": "synthetic",
        "slurm_job_id": "",
    }
    n_files = 0
    for model in MODELS:
        ability = _ability(rng, langs)
        for method, ranks in GRID:
            kind = METHOD_KIND[method]
            for rank in ranks:
                orders = [str(o) for o in PAPER_ORDERS] if kind == "sequential" else [""]
                for order in orders:
                    key = RunKey(method=method, model=model, rank=rank, order=order, seed=0)
                    steps = (
                        list(PAPER_ORDERS[int(order)])
                        if order
                        else (["all"] if kind == "joint" else langs)
                    )
                    config = {
                        "synthetic": True,
                        "models": list(MODELS),
                        "method": method,
                        "rank": rank,
                        "data": {"languages": langs},
                    }
                    store.put_run(
                        key.run_id,
                        key=key.as_dict(),
                        kind=kind,
                        languages=langs,
                        steps=steps,
                        labels=list(LABELS),
                        config=config,
                    )
                    if kind == "sequential":
                        R = _sequential(rng, tuple(steps), ability, lora=rank > 0)
                        rows = [
                            {lang: float(R[i, j]) for j, lang in enumerate(steps)}
                            for i in range(len(steps))
                        ]
                    elif kind == "joint":
                        rows = [
                            {lang: float(ability[lang] + rng.normal(0, 0.01)) for lang in langs}
                        ]
                    else:
                        rows = [
                            {lang: float(ability[lang] - 0.01 + rng.normal(0, 0.01))}
                            for lang in langs
                        ]
                    for i, scores in enumerate(rows):
                        meta = {
                            "epochs_run": 10,
                            "best_epoch": 5,
                            "wall_time_s": 1.0,
                            "device": "cpu",
                            "train_examples_per_s": 100.0,
                            "trained": steps[i],
                        }
                        store.put_step(
                            key.run_id,
                            i,
                            scores=scores,
                            dev_curve=[0.5, 0.6, 0.65],
                            meta=meta,
                            provenance=dict(prov, step=i),
                        )
                        n_files += 1
    return n_files


def _cpu(a: os.times_result, b: os.times_result) -> float:
    """CPU seconds between two os.times() readings, waited-for children included."""
    return (
        (b.user - a.user)
        + (b.system - a.system)
        + (b.children_user - a.children_user)
        + (b.children_system - a.children_system)
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", help="store folder (built if absent; default: a temporary folder)")
    ap.add_argument("--out", help="analysis output folder (default: a temporary folder)")
    add_argparse(ap, (WORKERS,))
    ap.add_argument("--keep", action="store_true", help="keep the temporary folders")
    ap.add_argument(
        "--raw",
        action="store_true",
        help="time the store folder (unconsolidated step files) instead",
    )
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="hpc-forget-bench-"))
    store_path = Path(args.store) if args.store else tmp / "store"
    out = Path(args.out) if args.out else tmp / "analysis"
    try:
        if not (store_path / "runs").is_dir():
            t = time.perf_counter()
            n = build_store(store_path)
            print(f"built {store_path}: {n} step files in {time.perf_counter() - t:.1f} s")
        if args.raw:
            target = store_path
        else:
            target = store_path / "consolidated.h5"
            if not target.is_file():
                Store(store_path).consolidate()
        print(f"timing on {target}")
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"{cores} cores, load average {load:.1f} at start")
        c0 = os.times()
        t = time.perf_counter()
        data = load_store(target)
        t_load = time.perf_counter() - t
        metrics = compute_metrics(data)
        t_metrics = time.perf_counter() - t
        c1 = os.times()
        print(f"runs: {len(data.runs)}, groups: {len(metrics['groups'])}")

        t = time.perf_counter()
        analyze(target, out, workers=args.workers)
        t_full = time.perf_counter() - t
        c2 = os.times()
        n_fig = len(list((out / "figures").iterdir()))
        n_tab = len(list((out / "tables").iterdir()))
        print(
            f"metrics only: {t_metrics:6.2f} s (store read {t_load:.2f} s)  "
            f"= {t_metrics / METRICS_BUDGET_S:.0%} of the {METRICS_BUDGET_S:.0f} s budget"
        )
        print(
            f"full analysis: {t_full:6.2f} s ({n_tab} table files, {n_fig} figure files, report.html)  "
            f"= {t_full / FULL_BUDGET_S:.0%} of the {FULL_BUDGET_S:.0f} s budget"
        )
        print(
            f"CPU time (this process and its figure workers): metrics {_cpu(c0, c1):.2f} s, "
            f"full analysis {_cpu(c1, c2):.2f} s; load average now {os.getloadavg()[0]:.1f} "
            "(wall times above include waiting for cores other processes use)"
        )
        ok = t_metrics <= METRICS_BUDGET_S and t_full <= FULL_BUDGET_S
        print("within budget" if ok else "OVER BUDGET")
        return 0 if ok else 1
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")


if __name__ == "__main__":
    sys.exit(main())
