"""Hard layer freezing and post-hoc weight reversion: their defining properties."""

from __future__ import annotations

import pytest
import torch
from _strategy_runs import run_strategy, scores

from hpc_forget.errors import ConfigError
from hpc_forget.run.hooks import StepContext
from hpc_forget.run.weights import Freeze, Revert, select_parameters, trainable_copy
from hpc_forget.study.config import TrainConfig
from hpc_forget.study.methods import step_hyper


class _Net(torch.nn.Module):
    """Names like XLM-R's: embeddings, encoder.layer.N, classifier."""

    def __init__(self):
        super().__init__()
        self.embeddings = torch.nn.Linear(2, 2)
        self.encoder = torch.nn.Module()
        self.encoder.layer = torch.nn.ModuleList(torch.nn.Linear(2, 2) for _ in range(3))
        self.classifier = torch.nn.Linear(2, 2)


def _names(sel):
    return sorted(n for n, _ in sel)


def test_selection_by_part():
    net = _Net()
    assert _names(select_parameters(net, "embeddings")) == ["embeddings.bias", "embeddings.weight"]
    assert _names(select_parameters(net, "bottom", 1)) == [
        "encoder.layer.0.bias",
        "encoder.layer.0.weight",
    ]
    assert _names(select_parameters(net, "top", 2))[0] == "encoder.layer.1.bias"
    assert _names(select_parameters(net, "listed", listed=("classifier",))) == [
        "classifier.bias",
        "classifier.weight",
    ]
    assert select_parameters(net, "top", 0) == []
    with pytest.raises(ConfigError, match="matches no parameter"):
        select_parameters(net, "listed", listed=("nope",))


def _ctx(step=0):
    return StepContext("r", step, 2, ("x",), step_hyper("vanilla", 0, TrainConfig()), 0)


@pytest.mark.parametrize("alpha", [0.0, 1.0, 0.25])
def test_reversion_alpha_one_gives_back_the_previous_weights_zero_changes_nothing(alpha):
    net, ctx = _Net(), _ctx()
    strategy = Revert(alpha=alpha)
    strategy.before_step(net, None, ctx)
    before = trainable_copy(net)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    after = trainable_copy(net)
    strategy.after_step(net, ctx)
    for n, p in net.named_parameters():
        if alpha == 1.0:
            assert torch.equal(p, before[n])
        elif alpha == 0.0:
            assert torch.equal(p, after[n])
        else:
            assert torch.allclose(p, after[n] - 0.25)


def test_reversion_toward_initial_weights_uses_the_engine_snapshot():
    net, ctx = _Net(), _ctx(1)
    ctx.state["initial"] = {n: torch.zeros_like(p) for n, p in net.named_parameters()}
    strategy = Revert(alpha=1.0, anchor="initial", part="listed", listed=("classifier",))
    assert strategy.needs_initial
    strategy.after_step(net, ctx)
    assert not net.classifier.weight.any() and net.embeddings.weight.any()


def test_frozen_layers_are_bit_identical_after_each_step(tmp_path, tiny_model_dir):
    kept = {}

    class Watch(Freeze):
        def before_step(self, model, data, ctx):
            data = super().before_step(model, data, ctx)
            for n, p in select_parameters(model, self.part, self.k, self.listed):
                kept.setdefault(n, p.detach().clone())
            return data

        def after_step(self, model, ctx):
            now = dict(model.named_parameters())
            assert all(torch.equal(now[n], v) for n, v in kept.items())
            ctx.state["checked"] = ctx.state.get("checked", 0) + 1

    from hpc_forget.run import strategies

    strategies.STRATEGIES["freeze"], orig = Watch, strategies.STRATEGIES["freeze"]
    try:
        _, rec, _ = run_strategy(
            tmp_path, tiny_model_dir, {"name": "freeze", "part": "bottom", "k": 1}
        )
    finally:
        strategies.STRATEGIES["freeze"] = orig
    assert kept and all("layer.0." in n for n in kept)
    _, plain, _ = run_strategy(tmp_path / "p", tiny_model_dir)
    n_frozen = sum(v.numel() for v in kept.values())
    assert rec.step_meta[0]["trainable_params"] == plain.step_meta[0]["trainable_params"] - n_frozen
    assert rec.key["strategy"] == "freeze(k=1,listed=,part=bottom)"


def test_revert_zero_equals_none_end_to_end(tmp_path, tiny_model_dir):
    store_a, a, _ = run_strategy(tmp_path / "a", tiny_model_dir)
    store_b, b, _ = run_strategy(tmp_path / "b", tiny_model_dir, {"name": "revert", "alpha": 0.0})
    assert scores(store_a, a) == scores(store_b, b)
