#!/usr/bin/env python
"""Time `hpc-forget status` and `hpc-forget plan` on a fabricated run of about 10,000 tasks.

    python benchmarks/bench_status.py [--tasks 10000] [--repeat 3]

It builds, in a temporary folder, the files `submit` and the workers leave behind for a real
plan (52 languages, all five methods, 4 LoRA ranks, 5 orders, as many seeds as needed):
submission.json with arrays split at MaxArraySize, plan.json, a marker for three tasks in four
(done, running or failed) and the step files of the done ones. Then it times
`hpc_forget.cluster.status.status()` on it, without sacct, and then both commands as whole
processes (`hpc-forget status RUN` and `hpc-forget plan CONFIG` of the same config), which
the issue's target (under 2 s each) is about. Nothing is submitted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

from hpc_forget.cluster.contract import marker_path, write_marker
from hpc_forget.cluster.profiles import Profile
from hpc_forget.cluster.runfolder import (
    PLAN_FILE,
    SUBMISSION_FORMAT,
    SUBMISSION_VERSION,
    JobLayout,
    plan_rows,
)
from hpc_forget.cluster.scripts import split_array, task_record
from hpc_forget.cluster.status import status
from hpc_forget.study.orders import MASSIVE_LOCALES


def big_config(store: str, seeds: int) -> dict:
    """52 languages, all five methods, 4 LoRA ranks, 5 orders: 286 tasks per seed."""
    return {
        "name": "bench",
        "store": store,
        "data": {"source": "samples", "languages": list(MASSIVE_LOCALES)},
        "models": ["xlm-roberta-base"],
        "methods": ["multi", "mono", "vanilla", "shared_lora", "nonshared_lora"],
        "ranks": [8, 16, 32, 64],
        "orders": [1, 2, 3, 4, 5],
        "seeds": list(range(seeds)),
    }


def synthetic_tasks(n: int) -> list[dict]:
    """Task records shaped like a real plan's, without planning (fast: for the smoke test)."""
    langs = list(MASSIVE_LOCALES)
    out = []
    for i in range(n):
        if i % 12 == 0:  # a chain (of 4 steps: few step files to write)
            out.append({"task_id": f"vanilla_m_o1_s{i}_{i:08x}", "run_id": f"vanilla_m_o1_s{i}_{i:08x}",
                        "key": {"method": "vanilla"}, "kind": "sequential", "languages": langs[:4],
                        "steps": langs[:4], "step_indices": list(range(4))})  # fmt: skip
        else:
            run = f"mono_m_s{i // 52}_{i // 52:08x}"
            out.append({"task_id": f"{run}-s{i % 52}", "run_id": run, "key": {"method": "mono"},
                        "kind": "per-language", "languages": langs, "steps": langs,
                        "step_indices": [i % 52]})  # fmt: skip
    return out


def fabricate(root: Path, n_tasks: int = 10_000, *, real_plan: bool = True) -> tuple[Path, int]:
    """A run folder under ``root`` with about ``n_tasks`` tasks in every state; returns
    (run folder, task count)."""
    store = root / "store"
    raw = big_config(str(store), max(1, -(-n_tasks // 286)))
    if real_plan:
        from hpc_forget.study.config import config_from_dict
        from hpc_forget.study.planning import plan

        tasks = [task_record(t) for t in plan(config_from_dict(raw))]
    else:
        tasks = synthetic_tasks(n_tasks)
    folder = root / "run"
    layout = JobLayout(str(folder), str(root), str(store), str(root / "cache"))
    arrays = []
    groups = {"chains": [t for t in tasks if t["kind"] == "sequential"]}
    groups["independent"] = [t for t in tasks if t["kind"] != "sequential"]
    for group, members in groups.items():
        for k, (start, count) in enumerate(split_array(len(members), 1001)):
            name, job = f"{group}-{k}", str(1000 + len(arrays))
            chunk = members[start : start + count]
            arrays.append({"name": name, "group": group, "size": count, "job_id": job,
                           "script": f"scripts/{name}.sbatch", "manifest": f"manifests/{name}.json",
                           "task_ids": [t["task_id"] for t in chunk],
                           "submitted_at": "2026-01-01T00:00:00+00:00", "cancelled_at": None})  # fmt: skip
            for i, t in enumerate(chunk):
                k4 = zlib.crc32(t["task_id"].encode()) % 4
                if k4 == 3:
                    continue  # not started: pending
                state = ("done", "running", "failed")[k4]
                write_marker(
                    marker_path(folder, t["task_id"]),
                    {"task_id": t["task_id"], "array": name, "index": i, "state": state,
                     "attempts": 1, "last_error": "RuntimeError: x" if state == "failed" else "",
                     "log": f"{folder}/logs/{name}-{job}_{i}.log",
                     "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())},
                )  # fmt: skip
                if state == "done":
                    d = store / "steps" / t["run_id"]
                    d.mkdir(parents=True, exist_ok=True)
                    for s in t["step_indices"]:
                        (d / f"{s:06d}.h5").touch()
    sub = {
        "format": SUBMISSION_FORMAT,
        "version": SUBMISSION_VERSION,
        "created_at": "2026-01-01T00:00:00+00:00",
        "config_name": "bench",
        "config": raw,
        "profile": Profile().as_dict(),
        "container": None,
        "layout": dataclasses.asdict(layout),
        "max_array_size": 1001,
        "arrays": arrays,
    }
    (folder / "submission.json").write_text(json.dumps(sub))
    (folder / PLAN_FILE).write_text(json.dumps({"tasks": plan_rows(tasks)}))
    return folder, len(tasks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        folder, n = fabricate(Path(tmp), args.tasks)
        print(f"fabricated {n} tasks in {time.perf_counter() - t0:.1f} s")
        for r in range(args.repeat):
            t0 = time.perf_counter()
            st = status(folder)
            dt = time.perf_counter() - t0
            print(f"status #{r + 1}: {len(st.tasks)} tasks in {dt:.2f} s  {st.counts()}")
        sub = json.loads((folder / "submission.json").read_text())
        cfg_file = Path(tmp) / "bench.yaml"
        cfg_file.write_text(json.dumps(sub["config"]))  # JSON is YAML
        for what, argv in (("status", [str(folder)]), ("plan", [str(cfg_file)])):
            for r in range(args.repeat):
                t0 = time.perf_counter()
                subprocess.run(
                    [sys.executable, "-m", "hpc_forget.cli", what, *argv],
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
                dt = time.perf_counter() - t0
                print(f"hpc-forget {what} (whole process) #{r + 1}: {n} tasks in {dt:.2f} s")


if __name__ == "__main__":
    main()
