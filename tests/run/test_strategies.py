"""The seam for anti-forgetting strategies: where the engine calls each hook, and what a
strategy acting there changes (and that the default changes nothing)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from hpc_forget.errors import ConfigError
from hpc_forget.run import strategies
from hpc_forget.run.engine import run_task
from hpc_forget.run.strategies import NoStrategy, Strategy, get_strategy
from hpc_forget.run.training import StepData
from hpc_forget.store.store import Store
from hpc_forget.study.config import config_from_dict
from hpc_forget.study.planning import plan


def _cfg(tmp_path, model_dir, method="vanilla", **train):
    return config_from_dict(
        {
            "name": "s",
            "store": str(tmp_path / "store"),
            "data": {
                "source": "samples",
                "languages": ["en-US", "th-TH"],
                "max_train": 32,
                "max_eval": 16,
            },
            "models": [str(model_dir)],
            "methods": [method],
            "ranks": [4],
            "orders": [1],
            "train": {
                "lr_full": 2e-3,
                "lr_lora": 5e-3,
                "max_epochs_full": 2,
                "max_epochs_lora": 2,
                "patience_full": 1,
                "patience_lora": 1,
                "batch_size": 16,
                "cpu_threads": 1,
                **train,
            },
        }
    )


def _run(tmp_path, model_dir, strategy: type[Strategy] | None, monkeypatch, method="vanilla"):
    """Run the config's first task with ``strategy`` (registered as "probe"); its record."""
    cfg = _cfg(tmp_path, model_dir, method)
    task = plan(cfg)[0]
    if strategy is not None:
        monkeypatch.setitem(strategies.STRATEGIES, "probe", strategy)
        task = dataclasses.replace(task, key=dataclasses.replace(task.key, strategy="probe"))
    store = Store(cfg.store)
    assert run_task(task, cfg, store) == len(task.step_indices)
    return store, store.run(task.run_id)


def _scores(store, rec):
    return store.matrix(rec.run_id).tolist()


def test_hooks_are_called_in_order_and_batch_loss_only_when_asked(
    tmp_path, tiny_model_dir, monkeypatch
):
    calls: list[tuple] = []

    class Recorder(Strategy):
        def before_step(self, model, data, ctx):
            calls.append(("before", ctx.step, ctx.trained, ctx.n_steps))
            ctx.state.setdefault("seen", []).append(ctx.step)
            return data

        def batch_loss(self, model, batch, loss, ctx):  # adds_loss is False: never called
            calls.append(("batch", ctx.step))
            return loss

        def after_step(self, model, ctx):
            calls.append(("after", ctx.step, tuple(ctx.state["seen"])))

        def after_run(self, model, ctx):
            calls.append(("run", ctx.step))

    _run(tmp_path, tiny_model_dir, Recorder, monkeypatch)
    assert calls == [
        ("before", 0, ("en-US",), 2),
        ("after", 0, (0,)),
        ("before", 1, ("th-TH",), 2),
        ("after", 1, (0, 1)),
        ("run", 1),
    ]


def test_none_and_a_no_op_loss_hook_leave_scores_bit_identical(
    tmp_path, tiny_model_dir, monkeypatch
):
    store_a, a = _run(tmp_path / "a", tiny_model_dir, None, monkeypatch)
    assert a.key["strategy"] == "none"

    class Identity(Strategy):
        adds_loss = True

        def batch_loss(self, model, batch, loss, ctx):
            return loss

    store_b, b = _run(tmp_path / "b", tiny_model_dir, Identity, monkeypatch)
    assert _scores(store_a, a) == _scores(store_b, b)
    assert a.dev_curves == b.dev_curves


def test_an_extra_loss_term_changes_the_scores(tmp_path, tiny_model_dir, monkeypatch):
    store_a, a = _run(tmp_path / "a", tiny_model_dir, None, monkeypatch)

    class Penalty(Strategy):
        adds_loss = True

        def batch_loss(self, model, batch, loss, ctx):
            ctx.state["batches"] = ctx.state.get("batches", 0) + 1
            return loss + 50.0 * sum((p**2).sum() for p in model.parameters() if p.requires_grad)

    store_b, b = _run(tmp_path / "b", tiny_model_dir, Penalty, monkeypatch)
    assert a.dev_curves != b.dev_curves or _scores(store_a, a) != _scores(store_b, b)


def test_freezing_before_a_step_keeps_weights_and_is_recorded(
    tmp_path, tiny_model_dir, monkeypatch
):
    kept: dict[str, torch.Tensor] = {}

    class FreezeEmbeddings(Strategy):
        def before_step(self, model, data, ctx):
            for n, p in model.named_parameters():
                if "embeddings" in n:
                    p.requires_grad_(False)
                    kept.setdefault(n, p.detach().clone())
            return data

        def after_run(self, model, ctx):
            now = dict(model.named_parameters())
            ctx.state["unchanged"] = all(torch.equal(now[n], v) for n, v in kept.items())
            assert ctx.state["unchanged"]

    _, full = _run(tmp_path / "a", tiny_model_dir, None, monkeypatch)
    _, frozen = _run(tmp_path / "b", tiny_model_dir, FreezeEmbeddings, monkeypatch)
    assert kept
    n_frozen = sum(v.numel() for v in kept.values())
    for step in (0, 1):
        assert frozen.step_meta[step]["trainable_params"] == (
            full.step_meta[step]["trainable_params"] - n_frozen
        )


def test_examples_mixed_in_before_a_step_are_trained_on(tmp_path, tiny_model_dir, monkeypatch):
    class Replay(Strategy):
        def before_step(self, model, data, ctx):
            t = data.train
            doubled = dataclasses.replace(
                t,
                input_ids=list(t.input_ids) * 2,
                labels=list(t.labels) * 2,
                n_words=list(t.n_words) * 2,
            )
            return StepData(train=doubled, dev=data.dev, dev_examples=data.dev_examples)

    _, plain = _run(tmp_path / "a", tiny_model_dir, None, monkeypatch)
    _, mixed = _run(tmp_path / "b", tiny_model_dir, Replay, monkeypatch)
    for step in (0, 1):
        assert (
            mixed.step_meta[step]["train_examples"] == 2 * plain.step_meta[step]["train_examples"]
        )


def test_trainable_params_in_the_store_for_full_and_lora_runs(
    tmp_path, tiny_model_dir, monkeypatch
):
    from hpc_forget.models.hub import load_model

    _, full = _run(tmp_path / "a", tiny_model_dir, None, monkeypatch)
    _, lora = _run(tmp_path / "b", tiny_model_dir, None, monkeypatch, method="shared_lora")
    from hpc_forget.data.labels import LABELS

    every = sum(p.numel() for p in load_model(str(tiny_model_dir), list(LABELS)).parameters())
    assert {m["trainable_params"] for m in full.step_meta.values()} == {every}
    assert 0 < lora.step_meta[0]["trainable_params"] < every


def test_unknown_strategy_is_a_one_line_config_error():
    assert isinstance(get_strategy("none"), NoStrategy)
    with pytest.raises(ConfigError, match=r"^strategy 'nosuch'.name: unknown strategy 'nosuch'"):
        get_strategy("nosuch")
