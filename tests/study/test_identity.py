"""What identifies a run: every setting that can change a score, and nothing else."""

from __future__ import annotations

import pytest

from hpc_forget.study.config import load_config
from hpc_forget.study.identity import (
    differing_keys,
    other_settings_note,
    run_settings,
    settings_digest,
    settings_labels,
)
from hpc_forget.study.planning import plan


def _ids(**sets) -> set[str]:
    return {t.run_id for t in plan(load_config("demo", overrides=sets))}


@pytest.mark.parametrize(
    "key, value",
    [
        ("data.max_train", 400),
        ("data.max_eval", 150),
        ("data.source", "/elsewhere/massive"),
        ("data.skip_invalid", True),
        ("data.dev_fraction_for_train", 0.4),
        ("data.train_fraction", 0.5),
        ("data.languages", ["en-US", "th-TH", "de-DE"]),
        ("train.batch_size", 8),
        ("train.max_length", 64),
        ("train.warmup_ratio", 0.1),
        ("train.weight_decay", 0.01),
        ("train.max_grad_norm", 0.5),
        ("train.precision", "fp32"),
        ("train.pad_multiple", 1),
        ("train.eval_batch_size", 64),
        ("train.processes", 2),
    ],
)
def test_every_score_setting_changes_every_run_id(key, value):
    before, after = _ids(), _ids(**{key: value})
    assert before.isdisjoint(after), key


@pytest.mark.parametrize(
    "key, value",
    [
        ("name", "renamed"),
        ("store", "/some/other/spelling/../store"),
        ("cache_dir", "/scratch/cache"),
        ("train.cpu_threads", 1),
        ("train.checkpoint_minutes", 0),  # checkpoints inside a step: bit for bit the same
        ("train.checkpoint_minutes", 7.5),
        ("train.processes", 1),  # the default: single-process runs keep their ids
    ],
)
def test_settings_that_cannot_change_a_score_keep_the_run_ids(key, value):
    assert _ids() == _ids(**{key: value})


def test_lora_keys_change_only_lora_runs_and_full_keys_only_full_runs():
    def by_method(**sets):
        return {(t.key.method, t.key.rank, t.key.order): t.run_id for t in plan(
            load_config("demo", overrides=sets))}  # fmt: skip

    base = by_method()
    for key, value, changes in [
        ("train.lr_lora", 1e-3, lambda m, r: r > 0),
        ("train.max_epochs_full", 3, lambda m, r: r == 0),
        ("train.patience_lora", 2, lambda m, r: r > 0),
    ]:
        new = by_method(**{key: value})
        for (m, r, o), rid in base.items():
            assert (new[m, r, o] != rid) == changes(m, r), (key, m, r)


def test_head_lr_null_means_lr_lora():
    cfg = load_config("demo", overrides={"train.lr_head_lora": None})
    same = load_config("demo", overrides={"train.lr_head_lora": cfg.train.lr_lora})
    assert run_settings(cfg, "shared_lora", 4) == run_settings(same, "shared_lora", 4)


def test_settings_hold_data_train_and_labels_with_the_config_names():
    s = run_settings(load_config("demo"), "vanilla", 0)
    assert set(s) == {"data", "train", "labels"}
    assert "max_train" in s["data"] and "train_fraction" not in s["data"]  # that is the key's
    assert "lr_full" in s["train"] and "lr_lora" not in s["train"]
    assert "cpu_threads" not in s["train"] and "checkpoint_minutes" not in s["train"]
    assert len(settings_digest(s)) == 12


def test_differing_keys_and_labels():
    a = {"data": {"max_train": 800, "source": "samples"}, "train": {"lr_full": 1e-4}}
    b = {"data": {"max_train": 400, "source": "samples"}, "train": {"lr_full": 1e-4}}
    c = {"data": {"max_train": 400, "source": "samples"}, "train": {"lr_full": 1e-3}}
    assert differing_keys([a, b]) == ["data.max_train"]
    assert differing_keys([a, b, c]) == ["data.max_train", "train.lr_full"]
    assert differing_keys([a, a]) == []
    assert settings_labels([a, b]) == ["data.max_train=800", "data.max_train=400"]
    assert settings_labels([a, a]) == ["", ""]


def test_other_settings_note_names_the_differing_keys():
    key = {"method": "vanilla", "model": "tiny", "rank": 0, "order": "1", "seed": 0}
    new = {"data": {"max_train": 400}, "train": {"max_epochs_full": 3}}
    old = {"data": {"max_train": 800}, "train": {"max_epochs_full": 10}}
    planned = {"new": ({**key, "settings": "n"}, new)}
    stored = {"new": ({**key, "settings": "n"}, new), "old": ({**key, "settings": "o"}, old)}
    note = other_settings_note(planned, stored)
    assert note is not None and "\n" not in note
    assert "1 run(s)" in note and "data.max_train, train.max_epochs_full" in note
    assert other_settings_note(planned, {"new": stored["new"]}) is None
    other_cell = {"x": ({**key, "method": "mono", "settings": "o"}, old)}
    assert other_settings_note(planned, other_cell) is None  # another cell, not other settings


def test_world_size_enters_the_settings_only_beyond_one_process():
    cfg = load_config("demo")
    assert "processes" not in run_settings(cfg, "vanilla", 0)["train"]
    two = load_config("demo", overrides={"train.processes": 2})
    assert run_settings(two, "vanilla", 0)["train"]["processes"] == 2
