"""Helpers shared by the cluster tests: a small demo config, a faked submission, store steps."""

from __future__ import annotations

from pathlib import Path

from hpc_forget.cluster import profiles as P
from hpc_forget.cluster import sbatch as SB
from hpc_forget.cluster import submit as SU
from hpc_forget.study.config import load_config

SMALL = {
    "data.max_train": 64,
    "data.max_eval": 32,
    "train.max_epochs_full": 2,
    "train.max_epochs_lora": 2,
    "train.patience_full": 100,
    "train.patience_lora": 100,
}


def small_demo(tmp: Path, **more) -> object:
    return load_config("demo", overrides={**SMALL, "store": str(tmp / "store"), **more})


def fake_submit(tmp_path: Path, monkeypatch, cfg=None, **kw) -> Path:
    """submit() with sbatch replaced by a counter: job ids 100, 101, ..."""
    calls: list[str] = []

    def fake_sbatch(path: str, size: int | None = None) -> str:
        calls.append(path)
        return str(100 + len(calls) - 1)

    monkeypatch.setattr(SB, "sbatch_submit", fake_sbatch)
    cfg = cfg or small_demo(tmp_path)
    run = tmp_path / "run"
    res = SU.submit(cfg, P.load_profile("local"), run_folder=run, max_array_size=6, **kw)
    assert len(calls) == len(res.arrays) == 3  # one sbatch per array
    return run


def put_steps(store_path: Path, task: dict, steps) -> None:
    from hpc_forget.store.store import Store

    st = Store(store_path)
    st.put_run(
        task["run_id"],
        key=task["key"],
        kind=task["kind"],
        languages=task["languages"],
        steps=task["steps"],
        labels=["O"],
        config={},
    )
    for s in steps:
        langs = task["languages"] if task["kind"] != "per-language" else [task["languages"][s]]
        st.put_step(
            task["run_id"],
            s,
            scores={lg: 0.5 for lg in langs},
            dev_curve=[0.1],
            meta={},
            provenance={},
        )
