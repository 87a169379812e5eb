"""Data-parallel and GPU paths of the training loop, checked on CPU: the precision choice,
a model prepared once per task and freed after, and (slow) two processes on gloo started by
``torchrun --nproc_per_node 2``: the LR schedule, the stop flag, early stopping, wrappers."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import weakref
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from _toy import Toy, toy_encoded

from hpc_forget.errors import ConfigError
from hpc_forget.run import training
from hpc_forget.run.training import (
    Prepared,
    StepData,
    choose_precision,
    make_accelerator,
    train_step,
)
from hpc_forget.study.config import TrainConfig
from hpc_forget.study.methods import step_hyper

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


@pytest.mark.parametrize(
    ("precision", "cuda", "capability", "expected"),
    [
        ("auto", False, None, "no"),
        ("auto", True, (7, 0), "no"),  # V100: bf16 only emulated
        ("auto", True, (7, 5), "no"),  # T4
        ("auto", True, (8, 0), "bf16"),  # A100
        ("auto", True, (8, 9), "bf16"),  # L4 / L40S
        ("auto", True, (9, 0), "bf16"),  # H100
        ("fp32", True, (9, 0), "no"),
        ("bf16", False, None, "bf16"),  # asked for: taken (CPU autocast has bf16)
        ("fp16", True, (7, 0), "fp16"),
    ],
)
def test_precision_choice(precision, cuda, capability, expected):
    assert choose_precision(precision, cuda=cuda, capability=capability) == expected


def test_fp16_needs_a_gpu_and_unknown_precisions_are_errors():
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        choose_precision("fp16", cuda=False, capability=None)
    with pytest.raises(ConfigError, match="must be auto"):
        choose_precision("fp8", cuda=True, capability=(9, 0))


@pytest.fixture
def bf16_state():
    """Accelerate's state is a process-wide singleton (an earlier test's fp32 Accelerator
    forbids a bf16 one): reset it around tests that make a bf16 Accelerator."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def _hyper(**kw):
    return replace(step_hyper("vanilla", 0, TrainConfig()), **kw)


def _fake_dev(monkeypatch):
    monkeypatch.setattr(training, "predict_words", lambda *a, **k: None)
    monkeypatch.setattr(training, "score_examples", lambda *a: (0.5, 0))


def _step(acc, model, prepared=None):
    enc = toy_encoded(16)
    return train_step(
        model,
        StepData(train=enc, dev=enc, dev_examples=[]),
        _hyper(max_epochs=1, batch_size=8),
        accelerator=acc,
        labels=[],
        pad_id=0,
        seed=3,
        prepared=prepared,
    )


def _forward_depth(model: torch.nn.Module) -> int:
    f, d = model.forward, 0
    f = getattr(f, "__func__", f)
    while hasattr(f, "__wrapped__"):
        f, d = f.__wrapped__, d + 1
        f = getattr(f, "__func__", f)
    return d


def test_a_model_is_prepared_once_for_several_steps(monkeypatch, bf16_state):
    _fake_dev(monkeypatch)
    acc = make_accelerator("bf16", cpu_threads=1)  # bf16 autocast patches the forward
    calls = []
    real = acc.prepare_model
    monkeypatch.setattr(acc, "prepare_model", lambda m, **k: calls.append(m) or real(m, **k))
    model = Toy()
    prepared = Prepared(acc, model)
    depths = []
    for _ in range(3):
        _step(acc, model, prepared)
        depths.append(_forward_depth(model))
    assert len(calls) == 1
    assert depths[0] > 0 and depths == [depths[0]] * 3  # not one autocast layer more per step
    model.embed.weight.requires_grad_(False)  # a strategy froze weights: DDP must re-hook
    _step(acc, model, prepared)
    assert len(calls) == 2 and _forward_depth(model) == depths[0]
    prepared.release()
    assert _forward_depth(model) == 0 and "forward" not in model.__dict__


@pytest.mark.parametrize("own", [True, False])
def test_a_finished_model_is_freed_without_the_garbage_collector(monkeypatch, own, bf16_state):
    """Under bf16 accelerate binds a patched forward to the model (a reference cycle); the
    released model (and the accelerator's lists) must hold no reference to it."""
    _fake_dev(monkeypatch)
    acc = make_accelerator("bf16", cpu_threads=1)
    model = Toy()
    ref = weakref.ref(model)
    if own:
        _step(acc, model)
    else:
        prepared = Prepared(acc, model)
        _step(acc, model, prepared)
        _step(acc, model, prepared)
        prepared.release()
        del prepared
    gc.collect()  # anything of earlier tests
    gc.disable()
    try:
        del model
        assert ref() is None, "a finished model is still referenced"
    finally:
        gc.enable()
    assert acc._models == [] and acc._optimizers == []


def test_run_task_refuses_another_world_size():
    from hpc_forget.run.engine import check_processes
    from hpc_forget.study.config import load_config
    from hpc_forget.study.planning import plan

    cfg = load_config("demo")
    task = plan(cfg)[0]
    check_processes(task, cfg, 1)
    with pytest.raises(ConfigError, match="train.processes is 1"):
        check_processes(task, cfg, 2)


@pytest.mark.slow
def test_two_processes_on_gloo_agree(tmp_path):
    """torchrun --nproc_per_node 2: see tests/run/_ddp_worker.py for what each rank does."""
    from transformers import get_linear_schedule_with_warmup

    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2"]
    try:
        proc = subprocess.run(
            [*cmd, str(HERE / "_ddp_worker.py"), str(tmp_path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,  # a rank waiting in a collective forever: fail, not hang
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the two ranks did not finish (one waits for the other): {e}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    # the LR after each epoch is the single-process schedule's after as many optimizer steps
    n = ranks[0]["batches_per_epoch"]
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = get_linear_schedule_with_warmup(opt, int(0.25 * n * 4), n * 4)
    expected = []
    for _ in range(4):
        for _ in range(n):
            opt.step()
            sched.step()
        expected.append(opt.param_groups[0]["lr"])
    for r in ranks:
        assert r["lr_curve"] == pytest.approx(expected, abs=1e-12)
        assert r["lr_curve"][0] == pytest.approx(1e-3)  # warmup ends at a quarter, not an eighth
        # rank 0's dev F1 (0.9 then 0.1: patience 2 stops after epoch 3) on every rank
        assert r["early"] == {"epochs_run": 3, "best_epoch": 1, "curve": [0.9, 0.1, 0.1]}
        assert r["ddp_depth"] == [1, 1, 1] and r["wrappers"] == 1 and r["inner_is_model"]
        # the stop flag was set on rank 1 only: both stop at the same point (the agreed flag
        # is read every 16 batches and at an epoch's last batch: here batch 3/3 of epoch 1)
    assert ranks[0]["stopped"] == ranks[1]["stopped"] == "stopped in epoch 1 after batch 3/3"
