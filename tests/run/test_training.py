"""The training loop's pure parts: data-parallel sharding and precision choice."""

from __future__ import annotations

import json

import pytest

from hpc_forget.run.training import _shard, mixed_precision


def test_single_process_takes_every_batch():
    assert list(_shard(5, 1, 0)) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(("n", "world"), [(10, 2), (11, 2), (7, 3), (2, 4)])
def test_processes_take_disjoint_equal_shares(n, world):
    shares = [list(_shard(n, world, r)) for r in range(world)]
    assert len({len(s) for s in shares}) == 1  # DDP needs equal step counts
    flat = [x for s in shares for x in s]
    assert all(0 <= x < n for x in flat)
    if n >= world:  # disjoint, at most world - 1 dropped
        assert len(flat) == len(set(flat)) and len(flat) > n - world
    else:  # fewer batches than processes: every batch is used
        assert set(flat) == set(range(n))


def test_precision_on_cpu_is_fp32_unless_asked():
    assert mixed_precision("fp32") == "no"
    assert mixed_precision("bf16") == "bf16"
    assert mixed_precision("auto") in ("no", "bf16")


# ------------------------------------------------------------------ mid-step checkpoints


class _Died(Exception):
    """A job killed without a warning (no checkpoint written on the way out)."""


def _toy_step(
    tmp_path, *, should_stop=lambda: False, clock=None, interval_s=0.0, n=26, monkeypatch
):
    """One toy step of 4 epochs x 7 batches, started as the engine starts one (seeded), with
    a dev F1 that depends on the weights (so early stopping and the best epoch are real)."""
    from dataclasses import replace
    from types import SimpleNamespace

    import torch

    from hpc_forget.run import training
    from hpc_forget.run.checkpoints import MidStep
    from hpc_forget.run.training import StepData, make_accelerator, train_step
    from hpc_forget.study.config import TrainConfig
    from hpc_forget.study.methods import step_hyper
    from tests.run._toy import Toy, toy_encoded

    monkeypatch.setattr(
        training,
        "predict_words",
        lambda model, *a, **k: float(model.classifier.weight.detach().sum()),
    )
    monkeypatch.setattr(training, "score_examples", lambda ex, pred, labels: (pred % 1.0, 0))
    torch.manual_seed(0)
    model = Toy()
    enc = toy_encoded(n)
    hyper = replace(
        step_hyper("vanilla", 0, TrainConfig()),
        max_epochs=4,
        batch_size=4,
        patience=2,
        warmup_ratio=0.2,
        lr=0.05,
    )
    midstep = MidStep(
        SimpleNamespace(store=str(tmp_path)),
        "run",
        0,
        interval_s=interval_s,
        **({"clock": clock} if clock else {}),
    )
    torch.manual_seed(11)  # the engine's seed_everything(step seed)
    result = train_step(
        model,
        StepData(train=enc, dev=enc, dev_examples=[]),
        hyper,
        accelerator=make_accelerator("fp32", cpu_threads=1),
        labels=[],
        pad_id=0,
        seed=11,
        should_stop=should_stop,
        midstep=midstep,
    )
    return result, {n: p.detach().clone() for n, p in model.named_parameters()}, midstep


def _calls(n: int, then=True):
    """A should_stop that is false for its first n - 1 calls, then ``then`` (or raises it)."""
    count = [0]

    def stop() -> bool:
        count[0] += 1
        if count[0] >= n:
            if isinstance(then, type):
                raise then()
            return then
        return False

    return stop


def _same_result(a, b) -> None:
    import torch

    (ra, wa), (rb, wb) = a, b
    assert ra.dev_curve == rb.dev_curve and ra.train_loss == rb.train_loss
    assert ra.lr_curve == rb.lr_curve
    assert (ra.best_epoch, ra.epochs_run, ra.best_dev_f1) == (
        rb.best_epoch,
        rb.epochs_run,
        rb.best_dev_f1,
    )
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("at", [3, 7 + 1 + 3, 2 * 7 + 2])  # epoch 1 batch 2; epoch 2 batch 2; 2/7
def test_a_step_stopped_between_batches_continues_bit_for_bit(tmp_path, monkeypatch, at):
    from hpc_forget.run.training import Preempted

    ref, ref_w, _ = _toy_step(tmp_path / "ref", monkeypatch=monkeypatch)
    assert ref.epochs_run >= 3
    with pytest.raises(Preempted, match=r"stopped in epoch \d after batch \d/7 \(checkpointed\)"):
        _toy_step(tmp_path / "x", should_stop=_calls(at), monkeypatch=monkeypatch)
    assert (tmp_path / "x" / "checkpoints" / "run" / "midstep-000000.json").is_file()
    res, w, midstep = _toy_step(tmp_path / "x", monkeypatch=monkeypatch)
    _same_result((ref, ref_w), (res, w))
    assert midstep.path.is_file()  # the engine removes it once the step is stored


def test_a_stop_at_an_epoch_boundary_checkpoints_too(tmp_path, monkeypatch):
    from hpc_forget.run.training import Preempted

    ref = _toy_step(tmp_path / "ref", monkeypatch=monkeypatch)[:2]
    # call 1: before epoch 1; 2..8: after its batches; 9: before epoch 2
    with pytest.raises(Preempted, match="stopped before epoch 2"):
        _toy_step(tmp_path / "x", should_stop=_calls(9), monkeypatch=monkeypatch)
    _same_result(ref, _toy_step(tmp_path / "x", monkeypatch=monkeypatch)[:2])


def test_periodic_checkpoints_cover_a_job_killed_without_warning(tmp_path, monkeypatch):
    ref = _toy_step(tmp_path / "ref", monkeypatch=monkeypatch)[:2]
    now = [0.0]

    def clock() -> float:  # one minute per call
        now[0] += 60.0
        return now[0]

    # killed (no checkpoint on the way out) in epoch 3; periodic checkpoints every 5 minutes
    with pytest.raises(_Died):
        _toy_step(
            tmp_path / "x",
            should_stop=_calls(2 * 8 + 5, then=_Died),
            clock=clock,
            interval_s=300.0,
            monkeypatch=monkeypatch,
        )
    saved = json.loads((tmp_path / "x/checkpoints/run/midstep-000000.json").read_text())
    assert (saved["epoch"], saved["batch"]) < (3, 4)  # an earlier batch than the kill
    res = _toy_step(tmp_path / "x", clock=clock, interval_s=300.0, monkeypatch=monkeypatch)
    _same_result(ref, res[:2])
    assert res[2].saves > 0


@pytest.mark.parametrize("how", ["flipped", "truncated", "no-record", "other-step"])
def test_a_damaged_mid_step_checkpoint_is_one_line_and_the_step_restarts(
    tmp_path, monkeypatch, caplog, how
):
    import logging

    from hpc_forget.run.training import Preempted

    ref = _toy_step(tmp_path / "ref", monkeypatch=monkeypatch)[:2]
    with pytest.raises(Preempted):  # other-step: the checkpoint of a step with more data
        n = 30 if how == "other-step" else 26
        _toy_step(tmp_path / "x", should_stop=_calls(12), n=n, monkeypatch=monkeypatch)
    path = tmp_path / "x/checkpoints/run/midstep-000000.pt"
    data = bytearray(path.read_bytes())
    if how == "flipped":
        data[len(data) // 2] ^= 1
        path.write_bytes(bytes(data))
    elif how == "truncated":
        path.write_bytes(bytes(data[:1000]))
    elif how == "no-record":
        path.with_suffix(".json").unlink()
    with caplog.at_level(logging.INFO, logger="hpc_forget"):
        res = _toy_step(tmp_path / "x", monkeypatch=monkeypatch)[:2]
    damaged = [r for r in caplog.records if "is damaged" in r.getMessage()]
    assert len(damaged) == 1 and "the step restarts from its start" in damaged[0].getMessage()
    _same_result(ref, res)
