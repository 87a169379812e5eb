"""One rank of the data-parallel checks (tests/run/test_ddp.py): ``torchrun --standalone
--nproc_per_node 2 tests/run/_ddp_worker.py OUT_DIR`` on gloo (CPU). Each rank writes
``OUT_DIR/rank-<r>.json`` with what it saw; the test compares the ranks."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import torch
from _toy import Toy, toy_encoded

from hpc_forget.run import training
from hpc_forget.run.training import Preempted, Prepared, StepData, make_accelerator, train_step
from hpc_forget.study.config import TrainConfig
from hpc_forget.study.methods import step_hyper


def _hyper(**kw):
    return replace(step_hyper("vanilla", 0, TrainConfig()), **kw)


def main(out: Path) -> None:
    acc = make_accelerator("fp32", cpu_threads=1)
    rank = acc.process_index
    res: dict = {"rank": rank, "world": acc.num_processes}
    enc = toy_encoded(48, seed=0)
    data = StepData(train=enc, dev=enc, dev_examples=[])
    dev_f1 = {"values": [0.5] * 100, "i": 0}

    def fake_predict(*_a, **_k):
        return None

    def fake_score(_examples, _pred, _labels):
        v = dev_f1["values"][dev_f1["i"]]
        dev_f1["i"] += 1
        return v, 0

    training.predict_words = fake_predict
    training.score_examples = fake_score

    def run(model, hyper, prepared=None, **kw):
        dev_f1["i"] = 0
        return train_step(
            model,
            data,
            hyper,
            accelerator=acc,
            labels=[],
            pad_id=0,
            seed=7,
            prepared=prepared,
            **kw,
        )

    # 1. the LR schedule: after each epoch's optimizer steps, the single-process schedule's
    torch.manual_seed(0)
    model = Toy()
    hyper = _hyper(max_epochs=4, patience=100, batch_size=4, warmup_ratio=0.25, lr=1e-3)
    r = run(model, hyper)
    res["lr_curve"] = r.lr_curve
    res["batches_per_epoch"] = len(training._shard(-(-48 // 4), acc.num_processes, rank))

    # 2. early stopping: rank 0's dev F1 decides (rank 1's own values never stop it)
    dev_f1["values"] = (
        [0.9, 0.1, 0.1, 0.1] + [0.1] * 20 if rank == 0 else [i / 100 for i in range(100)]
    )
    r = run(Toy(), _hyper(max_epochs=10, patience=2, batch_size=8))
    res["early"] = {"epochs_run": r.epochs_run, "best_epoch": r.best_epoch, "curve": r.dev_curve}
    dev_f1["values"] = [0.5] * 100

    # 3. prepared once: the same DDP wrapper, one level deep, over several steps
    model = Toy()
    prepared = Prepared(acc, model)
    depth, ids = [], set()
    for _ in range(3):
        run(model, _hyper(max_epochs=1, batch_size=8), prepared=prepared)
        w = prepared.wrapped()
        ids.add(id(w))
        d, m = 0, w
        while isinstance(m, torch.nn.parallel.DistributedDataParallel):
            d, m = d + 1, m.module
        depth.append(d)
        res["inner_is_model"] = m is model
    res["ddp_depth"] = depth
    res["wrappers"] = len(ids)
    prepared.release()

    # 4. the stop flag set on rank 1 only, from the second epoch: every rank stops there
    calls = {"n": 0}

    def stop_on_rank1() -> bool:
        calls["n"] += 1
        return rank == 1 and calls["n"] >= 2

    try:
        run(Toy(), _hyper(max_epochs=5, patience=100, batch_size=8), should_stop=stop_on_rank1)
        res["stopped"] = None
    except Preempted as e:
        res["stopped"] = str(e)
    (out / f"rank-{rank}.json").write_text(json.dumps(res))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
