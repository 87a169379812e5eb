"""L2-SP, EWC and alignment: their defining properties."""

from __future__ import annotations

import torch
from _strategy_runs import run_strategy, scores

from hpc_forget.run.penalties import alignment_loss, diagonal_fisher, l2_penalty


def test_l2_penalty_and_its_gradient_are_zero_at_the_anchor():
    p = {"w": torch.tensor([1.0, -2.0], requires_grad=True)}
    anchor = {"w": torch.tensor([1.0, -2.0])}
    value = l2_penalty(p, anchor)
    value.backward()
    assert value.item() == 0.0 and torch.equal(p["w"].grad, torch.zeros(2))
    off = l2_penalty({"w": torch.tensor([2.0, 0.0])}, anchor, {"w": torch.tensor([3.0, 0.5])})
    assert off.item() == 3.0 * 1.0 + 0.5 * 4.0


def test_alignment_loss_is_zero_for_identical_representations():
    a = torch.randn(4, 8)
    assert alignment_loss(a, a.clone()).abs().item() < 1e-6
    assert alignment_loss(a, -a).item() == 2.0


def test_diagonal_fisher_is_the_mean_squared_gradient_and_clears_gradients(tiny_model_dir):
    from hpc_forget.data.labels import LABELS
    from hpc_forget.models.hub import load_model

    model = load_model(str(tiny_model_dir), list(LABELS))
    ids, labels = [[0, 5, 6, 2], [0, 7, 2]], [[-100, 1, 0, -100], [-100, 3, -100]]
    fisher = diagonal_fisher(model, ids, labels)
    assert all(p.grad is None for p in model.parameters())
    assert all((f >= 0).all() for f in fisher.values())
    assert any(f.sum() > 0 for f in fisher.values())


def test_ewc_with_lambda_zero_equals_none(tmp_path, tiny_model_dir):
    store_a, a, _ = run_strategy(tmp_path / "a", tiny_model_dir)
    for variant in ("online", "separate"):
        spec = {"name": "ewc", "lam": 0.0, "fisher_examples": 8, "variant": variant}
        store_b, b, _ = run_strategy(tmp_path / variant, tiny_model_dir, spec)
        assert scores(store_a, a) == scores(store_b, b), variant
        assert a.dev_curves == b.dev_curves


def test_ewc_and_l2sp_with_strength_change_the_chain(tmp_path, tiny_model_dir):
    store_a, a, _ = run_strategy(tmp_path / "a", tiny_model_dir)
    for spec in ({"name": "ewc", "lam": 1e6, "fisher_examples": 8}, {"name": "l2sp", "lam": 10.0}):
        store_b, b, _ = run_strategy(tmp_path / spec["name"], tiny_model_dir, spec)
        if spec["name"] == "ewc":  # no earlier language at step 1: no Fisher, no penalty
            assert a.step_meta[0]["train_loss"] == b.step_meta[0]["train_loss"]
        assert a.step_meta[1]["train_loss"] != b.step_meta[1]["train_loss"]  # the penalty acts


def test_alignment_with_beta_zero_equals_none(tmp_path, tiny_model_dir):
    store_a, a, _ = run_strategy(tmp_path / "a", tiny_model_dir)
    store_b, b, _ = run_strategy(tmp_path / "b", tiny_model_dir, {"name": "align", "beta": 0.0})
    assert scores(store_a, a) == scores(store_b, b)
    assert a.step_meta[1]["train_loss"] == b.step_meta[1]["train_loss"]
    _, c, _ = run_strategy(tmp_path / "c", tiny_model_dir, {"name": "align", "beta": 10.0})
    assert a.step_meta[1]["train_loss"] != c.step_meta[1]["train_loss"]  # pairs were found


def test_ewc_state_round_trips_through_checkpoint_tensors():
    from hpc_forget.run.penalties import Ewc

    state = {
        "ewc": [
            ({"w": torch.ones(2)}, {"w": torch.zeros(2)}),
            ({"w": torch.full((2,), 2.0)}, {"w": torch.ones(2)}),
        ]
    }
    e = Ewc(variant="separate")
    back: dict = {}
    e.load_state_tensors(e.state_tensors(state), back)
    assert len(back["ewc"]) == 2
    for (f1, a1), (f2, a2) in zip(state["ewc"], back["ewc"], strict=True):
        assert torch.equal(f1["w"], f2["w"]) and torch.equal(a1["w"], a2["w"])
