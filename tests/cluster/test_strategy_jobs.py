"""Strategies through submit and the workers: the manifests carry each task's strategy, and the
array tasks, run by the real worker, write the same scores as a local run (sbatch faked)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hpc_forget.cluster import profiles as P
from hpc_forget.cluster import sbatch as SB
from hpc_forget.cluster import submit as SU
from hpc_forget.cluster import worker as W
from hpc_forget.run.engine import run_config
from hpc_forget.store.store import Store
from hpc_forget.study.config import config_from_dict

STRATEGIES = ["none", {"name": "ewc", "lam": 10, "fisher_examples": 8}, {"name": "merge"}]


def _cfg(tmp_path, model_dir, store: str):
    return config_from_dict(
        {
            "name": "strategy-jobs",
            "store": str(tmp_path / store),
            "cache_dir": str(tmp_path / "cache"),
            "data": {
                "source": "samples",
                "languages": ["en-US", "th-TH"],
                "max_train": 32,
                "max_eval": 16,
            },
            "models": [str(model_dir)],
            "methods": ["vanilla", "mono"],
            "orders": [1],
            "strategies": STRATEGIES,
            "train": {
                "lr_full": 2e-3,
                "max_epochs_full": 2,
                "patience_full": 1,
                "batch_size": 16,
                "cpu_threads": 1,
            },
        }
    )


@pytest.mark.slow
def test_every_strategy_runs_as_array_tasks_with_the_scores_of_a_local_run(
    tmp_path, monkeypatch, tiny_model_dir
):
    monkeypatch.setattr(SB, "sbatch_submit", lambda path, size=None: "100")
    cfg = _cfg(tmp_path, tiny_model_dir, "store")
    run = tmp_path / "run"
    SU.submit(cfg, P.load_profile("local"), run_folder=run)
    manifests = sorted((run / "manifests").glob("*.json"))
    tasks = [(m, i, t) for m in manifests for i, t in enumerate(json.loads(m.read_text())["tasks"])]
    strategies = {t["key"]["strategy"].split("(")[0] for _, _, t in tasks}
    assert strategies == {"none", "ewc", "merge"}
    # MONO + merge is one joint task (the merged model tested on every language)
    merged = [t for _, _, t in tasks if t["key"]["method"] == "mono" and "merge" in t["run_id"]]
    assert len(merged) == 1 and merged[0]["kind"] == "joint"
    for manifest, i, _ in tasks:
        env = {"SLURM_ARRAY_TASK_ID": str(i), "SLURM_ARRAY_JOB_ID": "100", "SLURM_JOB_ID": "1"}
        rc = W.run(str(manifest), runner=W.engine_runner, env=env, install_signals=False)
        assert rc == 0, (manifest.name, i)

    local = _cfg(tmp_path, tiny_model_dir, "local-store")
    run_config(local, progress=False)
    jobs, ref = Store(cfg.store), Store(local.store)
    ids = {r.run_id for r in jobs.runs()}
    assert ids == {r.run_id for r in ref.runs()} and len(ids) == 5
    for rid in ids:
        np.testing.assert_array_equal(jobs.matrix(rid), ref.matrix(rid), err_msg=rid)
        assert jobs.run(rid).key["strategy"] == ref.run(rid).key["strategy"]
