"""Checkpoints: atomic writes, full disks, damaged files, temp files, and a resumed chain."""

from __future__ import annotations

import errno
import json
import logging
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import hpc_forget.run.checkpoints as ck
from hpc_forget import files
from hpc_forget.errors import StoreError


def _model(seed: int = 0, width: int = 4) -> torch.nn.Module:
    torch.manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Linear(width, 3), torch.nn.Linear(3, 2))
    m[1].bias.requires_grad_(False)  # frozen weights are not saved
    return m


def _cfg(tmp_path: Path) -> SimpleNamespace:
    return SimpleNamespace(store=str(tmp_path / "store"))


def _weights(m: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in m.named_parameters()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_save_and_load_round_trip_keeps_only_the_newest_and_no_temp_files(tmp_path):
    cfg = _cfg(tmp_path)
    for step in range(4):
        ck.midstep_path(cfg, "r1", step).parent.mkdir(parents=True, exist_ok=True)
        ck.midstep_path(cfg, "r1", step).write_bytes(b"x")  # this step's, interrupted once
        ck.save_checkpoint(_model(step), cfg, "r1", step, n_steps=4)
    folder = ck.checkpoint_dir(cfg, "r1")
    assert sorted(p.name for p in folder.iterdir()) == ["step-000003.json", "step-000003.pt"]
    record = json.loads((folder / "step-000003.json").read_text())
    assert record == {"sha256": files.sha256_file(folder / "step-000003.pt")}
    m = _model(9)
    assert ck.latest_checkpoint(cfg, "r1", 4) == (3, folder / "step-000003.pt")
    ck.load_checkpoint(m, folder / "step-000003.pt")
    assert _same(_weights(m), _weights(_model(3)) | {"1.bias": _weights(_model(9))["1.bias"]})


def _tensor_data(path: Path) -> list[tuple[int, int]]:
    """(offset, size) in the file of each tensor's bytes (a torch zip's ``data/<i>``)."""
    out = []
    with zipfile.ZipFile(path) as z, open(path, "rb") as f:
        for info in z.infolist():
            if "/data/" in info.filename:
                f.seek(info.header_offset + 26)
                name_len, extra_len = struct.unpack("<HH", f.read(4))
                out.append((info.header_offset + 30 + name_len + extra_len, info.file_size))
    return out


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "flipped":  # one bit in the middle of a tensor's bytes: torch.load reads it
        offset, size = _tensor_data(path)[0]
        flipped = bytearray(data)
        flipped[offset + size // 2] ^= 0x10
        path.write_bytes(bytes(flipped))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(b"not a checkpoint\n" * 10)
    elif how == "pickle":
        path.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    elif how == "not-a-dict":
        torch.save([torch.zeros(2)], path)
    elif how == "wrong-keys":
        torch.save({"other.weight": torch.zeros(3, 4)}, path)
    elif how == "wrong-shapes":
        ck.save_checkpoint(_model(0, width=5), SimpleNamespace(store=str(path.parent)), "x", 0)
        path.write_bytes((path.parent / "checkpoints" / "x" / "step-000000.pt").read_bytes())
    elif how == "other-step":  # a usable checkpoint, but not the one its record names
        ck.save_checkpoint(_model(5), SimpleNamespace(store=str(path.parent)), "x", 0)
        path.write_bytes((path.parent / "checkpoints" / "x" / "step-000000.pt").read_bytes())
    else:
        raise AssertionError(how)


DAMAGES = ["truncated", "flipped", "empty", "garbage", "pickle", "not-a-dict", "wrong-keys"]
DAMAGES += ["wrong-shapes", "other-step"]


@pytest.mark.parametrize("record", ["record", "no-record"])
@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_checkpoint_is_detected_and_the_previous_one_used(tmp_path, how, record, caplog):
    if how == "other-step" and record == "no-record":
        pytest.skip("a usable checkpoint without a record is used: nothing names another one")
    cfg = _cfg(tmp_path)
    older = ck.save_checkpoint(_model(1), cfg, "r1", 1, n_steps=4)
    kept = older.read_bytes()
    newest = ck.save_checkpoint(_model(2), cfg, "r1", 2, n_steps=4)
    assert not older.exists() and not ck.record_path(older).exists()  # only the newest ...
    older.write_bytes(kept)  # ... but one left by an earlier version (no record) is still used
    if record == "no-record":  # the newest an earlier version's too: its zip CRCs are checked
        ck.record_path(newest).unlink()
    _damage(newest, how)
    m = _model(7)
    before = _weights(m)
    with pytest.raises(ck.CheckpointDamaged) as excinfo:
        ck.load_checkpoint(m, newest)
    if record == "record":
        assert str(excinfo.value) == "its sha256 does not match its record step-000002.json"
    assert _same(_weights(m), before)  # nothing was copied from the damaged file
    with caplog.at_level(logging.INFO, logger="hpc_forget"):
        start = ck.resume_from_checkpoint(m, cfg, "r1", 3, n_steps=4, label="task")
    assert start == 2  # step index 1 loaded: continue with index 2
    lines = [r.getMessage() for r in caplog.records]
    (line,) = [x for x in lines if " is damaged (" in x]
    assert line.startswith(f"task: checkpoint of step 3/4 ({newest}) is damaged (")
    assert line.endswith("); recomputing from step 3/4 on the checkpoint of step 2/4")
    assert "\n" not in line and "Traceback" not in caplog.text
    (legacy,) = [x for x in lines if "no sha256 record" in x and "so it is used" in x]
    assert legacy.startswith(f"task: checkpoint of step 2/4 ({older}) has no sha256 record")
    assert torch.equal(m[0].weight, _model(1)[0].weight)


def test_every_checkpoint_damaged_means_recompute_from_scratch(tmp_path, caplog):
    cfg = _cfg(tmp_path)
    for step in (0, 1):
        path = ck.save_checkpoint(_model(step), cfg, "r1", step)
        if step == 0:
            kept = (path.read_bytes(), ck.record_path(path).read_bytes())
    path.with_name("step-000000.pt").write_bytes(kept[0])
    path.with_name("step-000000.json").write_bytes(kept[1])
    _damage(path, "flipped")
    _damage(path.with_name("step-000000.pt"), "truncated")
    m = _model(7)
    before = _weights(m)
    with caplog.at_level(logging.INFO, logger="hpc_forget"):
        assert ck.resume_from_checkpoint(m, cfg, "r1", 2, n_steps=3, label="t") == 0
    assert _same(_weights(m), before)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and all("is damaged" in x for x in lines)
    assert all(x.endswith("; recomputing from step 1/3") for x in lines)


def test_a_missing_checkpoint_is_one_info_line(tmp_path, caplog):
    cfg = _cfg(tmp_path)
    ck.save_checkpoint(_model(0), cfg, "r1", 0)
    with caplog.at_level(logging.INFO, logger="hpc_forget"):
        assert ck.resume_from_checkpoint(_model(7), cfg, "r1", 3, n_steps=4, label="t") == 1
    (line,) = [r.getMessage() for r in caplog.records]
    assert line == (
        "t: no usable checkpoint after step 3/4, recomputing from step 2/4 on the checkpoint"
        " of step 1/4"
    )


@pytest.mark.parametrize("record", ["record", "no-record"])
def test_no_flipped_byte_gives_other_weights(tmp_path, record):
    """Every byte of the tensors' data and every 7th byte of the rest flipped in turn:
    detected, or the weights are the same (a byte no reader uses); never other weights. With
    a record every flip is detected."""
    cfg = _cfg(tmp_path)
    path = ck.save_checkpoint(_model(3), cfg, "r1", 0)
    if record == "no-record":
        ck.record_path(path).unlink()
    data = path.read_bytes()
    where = set(range(0, len(data), 7))
    for start, size in _tensor_data(path):
        where |= set(range(start, start + size))
    want = _weights(_model(3))
    detected = 0
    for pos in sorted(where):
        flipped = bytearray(data)
        flipped[pos] ^= 0x01
        path.write_bytes(bytes(flipped))
        m = _model(7)
        try:
            ck.load_checkpoint(m, path)
        except ck.CheckpointDamaged:
            detected += 1
            continue
        assert record == "no-record", pos
        assert _same(_weights(m), want | {"1.bias": _weights(_model(7))["1.bias"]}), pos
    assert detected == len(where) if record == "record" else detected > len(where) // 2


# ------------------------------------------------------------------ a post-hoc merge's languages


@pytest.mark.parametrize("record", ["record", "no-record"])
@pytest.mark.parametrize("how", [None, "truncated", "flipped", "garbage", "wrong-shapes"])
def test_a_language_state_is_checked_and_a_damaged_one_trained_again(tmp_path, how, record, caplog):
    cfg = _cfg(tmp_path)
    meta = {"epochs_run": 3, "best_dev_f1": 0.5}
    path = ck.save_language_state(_model(4), cfg, "r1", 0, "en-US", meta)
    rec = json.loads(ck.record_path(path).read_text())
    assert rec == meta | {"sha256": files.sha256_file(path)}
    if record == "no-record":  # an earlier version's record: the training record alone
        ck.record_path(path).write_text(json.dumps(meta))
    if how:
        _damage(path, how)
    with caplog.at_level(logging.INFO, logger="hpc_forget"):
        got = ck.load_language_state(_model(7), cfg, "r1", 0, "en-US")
    lines = [r.getMessage() for r in caplog.records]
    if how is None:
        state, got_meta = got
        assert got_meta == meta
        assert _same(state, {k: v for k, v in _weights(_model(4)).items() if k != "1.bias"})
        assert len(lines) == (record == "no-record")
        return
    assert got is None
    (line,) = lines
    assert line.startswith(f"r1: saved weights of en-US ({path}) are damaged (")
    assert line.endswith("); en-US is trained again") and "\n" not in line


# ------------------------------------------------------------------ a mid-step checkpoint


def test_a_mid_step_checkpoint_shares_the_recorded_writer(tmp_path, caplog):
    cfg = _cfg(tmp_path)
    mid = ck.MidStep(cfg, "r1", 0, label="t")
    mid.save({"epoch": 1, "batch": 2, "w": torch.ones(3)})
    rec = json.loads(mid.record.read_text())
    assert rec == {"epoch": 1, "batch": 2, "sha256": files.sha256_file(mid.path)}
    assert torch.equal(mid.load()["w"], torch.ones(3))
    mid.record.unlink()  # required for a mid-step checkpoint: there are no earlier ones
    with caplog.at_level(logging.WARNING, logger="hpc_forget"):
        assert mid.load() is None
    (line,) = [r.getMessage() for r in caplog.records]
    assert line == (
        f"t: mid-step checkpoint {mid.path} is damaged (its record midstep-000000.json is"
        " missing); the step restarts from its start"
    )


class _FullDisk:
    """A file whose writes fail with ENOSPC after `room` bytes."""

    def __init__(self, path, mode, room: int = 300):
        self.f = open(path, mode)  # noqa: SIM115
        self.room = room

    def write(self, b):
        if len(b) > self.room:
            self.f.write(bytes(b)[: self.room])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(b)
        return self.f.write(b)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_disk_full_writing_a_checkpoint_is_one_line_and_leaves_no_temp_file(
    tmp_path, monkeypatch, where
):
    cfg = _cfg(tmp_path)
    first = ck.save_checkpoint(_model(1), cfg, "r1", 0, n_steps=3)
    good = first.read_bytes()
    if where == "write":
        monkeypatch.setattr(ck, "open", _FullDisk, raising=False)
    else:

        def fail(fd):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(StoreError) as e:
        ck.save_checkpoint(_model(2), cfg, "r1", 1, n_steps=3)
    msg = str(e.value)
    path = ck.checkpoint_path(cfg, "r1", 1)
    assert msg.startswith(f"{path}: disk full while writing the checkpoint of step 2/3 of r1;")
    assert "earlier results are intact" in msg and "\n" not in msg
    monkeypatch.undo()
    assert sorted(p.name for p in first.parent.iterdir()) == ["step-000000.json", "step-000000.pt"]
    assert first.read_bytes() == good


def test_temp_files_of_dead_writers_of_this_run_are_removed_not_others(tmp_path):
    cfg = _cfg(tmp_path)
    mine, other = ck.checkpoint_dir(cfg, "r1"), ck.checkpoint_dir(cfg, "r2")
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    paths = {}
    for folder, pid, tag in (
        (mine, proc.pid, "dead"),
        (mine, os.getpid(), "live"),
        (other, proc.pid, "other"),
    ):
        folder.mkdir(parents=True, exist_ok=True)
        paths[tag] = folder / f".step-000001.pt.{files.HOST}.{pid}.0a0b.tmp"
        paths[tag].write_bytes(b"half")
    ck.save_checkpoint(_model(1), cfg, "r1", 1)
    assert not paths["dead"].exists() and paths["live"].exists() and paths["other"].exists()


# ------------------------------------------------------------------ a resumed chain, end to end


def _chain_cfg(store: Path, model_dir: Path):
    from hpc_forget.study.config import config_from_dict

    return config_from_dict(
        {
            "name": "ck",
            "store": str(store),
            "data": {
                "source": "samples",
                "languages": ["en-US", "th-TH", "de-DE"],
                "max_train": 24,
                "max_eval": 12,
                "missing_train": "split-dev",
            },
            "models": [str(model_dir)],
            "methods": ["vanilla"],
            "orders": [1],
            "seeds": [0],
            "train": {
                "lr_full": 2e-3,
                "max_epochs_full": 1,
                "patience_full": 1,
                "batch_size": 12,
                "cpu_threads": 1,
            },
        }
    )


@pytest.mark.parametrize("how", ["truncated", "flipped"])
def test_resumed_chain_with_a_damaged_newest_checkpoint_gives_the_same_scores(
    tmp_path, tiny_model_dir, caplog, how
):
    from hpc_forget.run.engine import Preempted, Workspace, run_task
    from hpc_forget.store.store import Store
    from hpc_forget.study.planning import plan

    ref_cfg = _chain_cfg(tmp_path / "ref", tiny_model_dir)
    (task,) = plan(ref_cfg)
    ws = Workspace(ref_cfg)
    run_task(task, ref_cfg, Store(ref_cfg.store), workspace=ws)
    reference = Store(ref_cfg.store).matrix(task.run_id)

    cfg = _chain_cfg(tmp_path / "resumed", tiny_model_dir)
    store = Store(cfg.store)
    ws = Workspace(cfg)
    with pytest.raises(Preempted, match=r"stopped before step 3/3"):
        run_task(task, cfg, store, should_stop=lambda: store.has_step(task.run_id, 1), workspace=ws)
    newest = ck.checkpoint_path(cfg, task.run_id, 1)
    _damage(newest, how)  # e.g. the node died while it was copied, or a bit flipped on disk
    with caplog.at_level(logging.INFO, logger="hpc_forget"):
        ran = run_task(task, cfg, store, workspace=ws)
    assert ran == 3  # only the newest checkpoint is kept: recomputed from step 1
    text = caplog.text
    (line,) = [r.getMessage() for r in caplog.records if " is damaged (" in r.getMessage()]
    assert line == (
        f"{task.task_id}: checkpoint of step 2/3 ({newest}) is damaged (its sha256 does not"
        " match its record step-000001.json); recomputing from step 1/3"
    )
    assert "Traceback" not in text and "no usable checkpoint" not in text
    np.testing.assert_array_equal(store.matrix(task.run_id), reference)
    ck.load_checkpoint(_fresh(ws, task), ck.checkpoint_path(cfg, task.run_id, 2))  # usable


def _fresh(ws, task):
    from hpc_forget.run.engine import _fresh_model

    return _fresh_model(ws, task, 0)[0]


# ------------------------------------------------------------------ inside a step, end to end


def _midstep_cfg(store: Path, model_dir: Path, method: str, strategy: str = "none"):
    from hpc_forget.study.config import config_from_dict

    return config_from_dict(
        {
            "name": "mid",
            "store": str(store),
            "data": {
                "source": "samples",
                "languages": ["en-US", "de-DE"],
                "max_train": 16,
                "max_eval": 8,
                "missing_train": "split-dev",
            },
            "models": [str(model_dir)],
            "methods": [method],
            "ranks": [4],
            "orders": [1],
            "seeds": [0],
            "strategies": [strategy],
            "train": {
                "lr_full": 2e-3,
                "lr_lora": 5e-3,
                "max_epochs_full": 3,
                "max_epochs_lora": 3,
                "patience_full": 3,
                "patience_lora": 3,
                "batch_size": 4,
                "cpu_threads": 1,
                "checkpoint_minutes": 0,
            },
        }
    )


def _stop_at(n: int):
    count = [0]

    def stop() -> bool:
        count[0] += 1
        return count[0] >= n

    return stop


@pytest.mark.parametrize(
    ("method", "strategy", "at"),
    [
        # 4 batches an epoch (8 for multi), 3 epochs; should_stop's calls: once before each
        # step, then once before each epoch and after each of its batches
        ("vanilla", "none", 1 + 15 + 1 + 1 + 2),  # full: step 2, epoch 1, batch 2/4
        ("vanilla", "align", 1 + 15 + 1 + 5 + 1 + 2),  # step 2, epoch 2 (align's own rng)
        ("shared_lora", "none", 1 + 15 + 1 + 5 + 1 + 3),  # LoRA: step 2, epoch 2, batch 3/4
        ("multi", "none", 1 + 9 + 1 + 4),  # joint: epoch 2, batch 4/8
        ("mono", "none", 16 + 1 + 5 + 1 + 3),  # per-language, the second: epoch 2, batch 3/4
    ],
)
def test_a_task_stopped_inside_a_step_resumes_to_the_same_scores(
    tmp_path, tiny_model_dir, method, strategy, at
):
    """A stop request between two batches of a step: the step checkpoints and is requeued;
    the rerun continues from that batch, and scores, dev curves and train losses equal an
    uninterrupted run's bit for bit."""
    from hpc_forget.run.engine import Preempted, Workspace, run_task
    from hpc_forget.store.store import Store
    from hpc_forget.study.planning import plan

    def run(cfg, **kw):
        store = Store(cfg.store)
        for task in plan(cfg):
            run_task(task, cfg, store, workspace=Workspace(cfg), **kw)
        return store

    ref = run(_midstep_cfg(tmp_path / "ref", tiny_model_dir, method, strategy))
    cfg = _midstep_cfg(tmp_path / "resumed", tiny_model_dir, method, strategy)
    with pytest.raises(Preempted, match=r"after batch \d/\d \(checkpointed\)") as excinfo:
        run(cfg, should_stop=_stop_at(at))
    assert excinfo.value.args[0].startswith(f"stopped in epoch {1 if at == 20 else 2} after")
    folder = Path(cfg.store) / "checkpoints"
    assert list(folder.rglob("midstep-*.json"))
    store = run(cfg)
    for rec in ref.runs():
        got = store.run(rec.run_id)
        np.testing.assert_array_equal(store.matrix(rec.run_id), ref.matrix(rec.run_id))
        assert got.dev_curves == rec.dev_curves
        assert {s: m["train_loss"] for s, m in got.step_meta.items()} == {
            s: m["train_loss"] for s, m in rec.step_meta.items()
        }
    assert not list(folder.rglob("midstep-*"))  # removed once the steps were kept
