"""A two-language vanilla chain on the tiny model, run with a given strategy (config entry)."""

from __future__ import annotations

from hpc_forget.run.engine import run_task
from hpc_forget.store.store import Store
from hpc_forget.study.config import config_from_dict
from hpc_forget.study.planning import plan


def strategy_cfg(tmp_path, model_dir, strategy="none", method="vanilla", languages=None):
    return config_from_dict(
        {
            "name": "s",
            "store": str(tmp_path / "store"),
            "data": {
                "source": "samples",
                "languages": languages or ["en-US", "th-TH"],
                "max_train": 32,
                "max_eval": 16,
            },
            "models": [str(model_dir)],
            "methods": [method],
            "ranks": [4],
            "orders": [1],
            "strategies": [strategy],
            "train": {
                "lr_full": 2e-3,
                "lr_lora": 5e-3,
                "max_epochs_full": 2,
                "max_epochs_lora": 2,
                "patience_full": 1,
                "patience_lora": 1,
                "batch_size": 16,
                "cpu_threads": 1,
            },
        }
    )


def run_strategy(tmp_path, model_dir, strategy="none", method="vanilla", **kw):
    """Run the plan's first task; (store, its RunRecord, the task)."""
    cfg = strategy_cfg(tmp_path, model_dir, strategy, method, **kw)
    task = plan(cfg)[0]
    store = Store(cfg.store)
    run_task(task, cfg, store)
    return store, store.run(task.run_id), task


def scores(store, rec):
    return store.matrix(rec.run_id).tolist()
