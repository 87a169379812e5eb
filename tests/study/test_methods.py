"""The methods table: one row per method, every other view derived from it."""

from __future__ import annotations

import pytest

from hpc_forget.study import methods as M
from hpc_forget.study.config import TrainConfig, load_config


def test_the_table_is_the_papers_five_methods_in_the_papers_order():
    assert M.METHOD_NAMES == ("multi", "mono", "vanilla", "shared_lora", "nonshared_lora")
    assert [M.DISPLAY_NAME[n] for n in M.METHOD_NAMES] == [
        "MULTI",
        "MONO",
        "VANILLA",
        "SHARED LoRA",
        "NON-SHARED LoRA",
    ]
    assert M.METHOD_KIND == {
        "multi": "joint",
        "mono": "per-language",
        "vanilla": "sequential",
        "shared_lora": "sequential",
        "nonshared_lora": "per-language",
    }
    assert M.LORA_METHODS == ("shared_lora", "nonshared_lora")
    assert M.FULL_ONLY_METHODS == ("mono", "vanilla")


def test_rank_zero_is_full_fine_tuning():
    assert M.is_full(0) and not M.is_full(8)


def test_step_hyper_takes_the_full_or_lora_keys_and_every_shared_one():
    tc = TrainConfig(lr_lora=1e-4, lr_head_lora=1e-3, batch_size=8, pad_multiple=4)
    full = M.step_hyper("vanilla", 0, tc)
    assert (full.lr, full.max_epochs, full.patience, full.head_lr) == (5e-5, 50, 5, None)
    assert full.full and full.batch_size == 8 and full.pad_multiple == 4
    lora = M.step_hyper("shared_lora", 16, tc)
    assert (lora.lr, lora.max_epochs, lora.patience, lora.head_lr) == (1e-4, 100, 15, 1e-3)
    assert not lora.full and lora.lora_rank == 16
    assert lora.eval_batch_size == tc.eval_batch_size and lora.max_grad_norm == tc.max_grad_norm


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="unknown method 'ewc'"):
        M.step_hyper("ewc", 0, TrainConfig())


@pytest.mark.parametrize(
    ("method", "ranks", "message"),
    [
        ("shared_lora", [0], "shared_lora"),
        ("vanilla", [8], "vanilla"),
    ],
)
def test_config_validation_follows_the_table(tmp_path, method, ranks, message):
    from hpc_forget.errors import ConfigError

    path = tmp_path / "c.yaml"
    path.write_text(
        "name: x\nstore: s\ndata: {languages: [en-US]}\nmodels: [tiny]\n"
        f"methods: [{{name: {method}, ranks: {ranks}}}]\n"
    )
    with pytest.raises(ConfigError, match=message):
        load_config(str(path))
