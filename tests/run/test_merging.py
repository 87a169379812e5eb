"""Model merging (run/merging.py) and the engine's post-hoc merge: their defining properties."""

from __future__ import annotations

import pytest
import torch
from _strategy_runs import run_strategy, scores, strategy_cfg

from hpc_forget.errors import ConfigError, ModelError
from hpc_forget.run import merging as M
from hpc_forget.run.checkpoints import checkpoint_dir, checkpoint_path
from hpc_forget.run.engine import Preempted, run_task
from hpc_forget.run.hooks import StepContext
from hpc_forget.run.strategies import get_strategy
from hpc_forget.run.weights import trainable_copy
from hpc_forget.store.store import Store
from hpc_forget.study.config import TrainConfig
from hpc_forget.study.methods import step_hyper
from hpc_forget.study.planning import plan

# --------------------------------------------------------------------------------------------
# pure tensor functions


def _state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(5, 7, generator=g), "b": torch.randn(7, generator=g)}


def _hows():
    # the parameters under which n identical models are, by definition, that model
    return [
        ("linear", {}),
        ("task_arithmetic", {"scale": 1 / 3}),
        ("ties", {"scale": 1.0, "density": 1.0}),
    ]


@pytest.mark.parametrize(("how", "kw"), _hows())
def test_merging_identical_models_gives_the_same_model(how, kw):
    s, base = _state(1), _state(2)
    merged = M.merge_states(how, [s, s, s], base, **kw)
    for n, t in s.items():
        assert merged[n].dtype == t.dtype
        if how == "linear":
            assert torch.equal(merged[n], t)  # exactly, whatever the weights
        else:
            torch.testing.assert_close(merged[n], t, rtol=1e-6, atol=1e-6)
    lin = M.merge_states("linear", [s, s], weights=(0.3, 0.7))
    assert all(torch.equal(lin[n], s[n]) for n in s)


@pytest.mark.parametrize("hot", [0, 1, 2])
def test_weight_one_on_one_model_gives_that_model_exactly(hot):
    states = [_state(i) for i in range(3)]
    weights = [1.0 if i == hot else 0.0 for i in range(3)]
    merged = M.merge_states("linear", states, weights=weights)
    assert all(torch.equal(merged[n], states[hot][n]) for n in merged)
    # one task vector, scale 1, all of it kept: that model again
    base = _state(9)
    for how, kw in (("task_arithmetic", {}), ("ties", {"density": 1.0})):
        one = M.merge_states(how, [states[hot]], base, **kw)
        for n in one:
            torch.testing.assert_close(one[n], states[hot][n], rtol=1e-6, atol=1e-6)


def test_linear_is_the_weighted_average_and_task_arithmetic_the_scaled_sum():
    a, b, base = _state(1), _state(2), _state(3)
    lin = M.merge_states("linear", [a, b], weights=(1.0, 3.0))
    ta = M.merge_states("task_arithmetic", [a, b], base, scale=0.5)
    for n in a:
        torch.testing.assert_close(lin[n], 0.25 * a[n] + 0.75 * b[n])
        torch.testing.assert_close(ta[n], base[n] + 0.5 * ((a[n] - base[n]) + (b[n] - base[n])))


def test_ties_on_hand_computed_tensors():
    base = torch.ones(4)
    taus = [
        torch.tensor([3.0, -1.0, 0.5, 2.0]),  # trimmed (density 0.5): [3, 0, 0, 2]
        torch.tensor([-2.0, -4.0, 1.0, -0.1]),  # [-2, -4, 0, 0]
        torch.tensor([1.0, 2.0, -3.0, 0.2]),  # [0, 2, -3, 0]
    ]
    # summed [1, -2, -3, 2]: signs + - - +; disjoint mean of the agreeing entries [3, -4, -3, 2]
    got = M.ties([base + t for t in taus], base, scale=0.5, density=0.5)
    torch.testing.assert_close(got, base + 0.5 * torch.tensor([3.0, -4.0, -3.0, 2.0]))
    # all kept: disjoint mean over agreeing signs, a tie in sign gives 0
    b2 = torch.ones(2)
    got = M.ties([b2 + torch.tensor([2.0, 1.0]), b2 + torch.tensor([4.0, -1.0])], b2, density=1)
    torch.testing.assert_close(got, b2 + torch.tensor([3.0, 0.0]))
    # nothing kept: the base
    assert torch.equal(M.ties([base + taus[0]], base, density=0.0), base)


def test_trim_keeps_the_largest_magnitudes():
    tau = torch.tensor([0.1, -5.0, 3.0, -0.2, 4.0])
    assert M.trim(tau, 0.4).tolist() == [0.0, -5.0, 0.0, 0.0, 4.0]
    assert torch.equal(M.trim(tau, 1.0), tau)
    assert not M.trim(tau, 0.0).any()


def test_merge_errors_are_one_line():
    a = _state(1)
    with pytest.raises(ModelError, match="shape"):
        M.merge_states("linear", [a, {"w": torch.zeros(2), "b": a["b"]}])
    with pytest.raises(ModelError, match="different weights"):
        M.merge_states("linear", [a, {"w": a["w"]}])
    with pytest.raises(ConfigError, match="needs the base"):
        M.merge_states("ties", [a, a])
    with pytest.raises(ConfigError, match="use one of"):
        M.merge_states("dare", [a, a], a)
    with pytest.raises(ConfigError, match="non-negative"):
        M.merge_states("linear", [a, a], weights=(0.0, 0.0))


# --------------------------------------------------------------------------------------------
# LoRA: effective weights, the head, the strategy's hooks


@pytest.fixture
def lora_model(tiny_model_dir):
    from hpc_forget.data.labels import LABELS
    from hpc_forget.models.hub import load_model
    from hpc_forget.models.lora import add_lora

    def make(seed: int = 0):
        torch.manual_seed(seed)
        return add_lora(load_model(str(tiny_model_dir), list(LABELS), seed=0), 2, dropout=0.0)

    return make


def _perturb(model, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn(p.shape, generator=g))


def _effective(model) -> dict[str, torch.Tensor]:
    mods = M.lora_modules(model)
    return dict(M.MergeView(mods, M.live_trained(model), M.live_bases(model, mods)))


def test_lora_linear_merge_is_the_average_of_delta_w_and_merges_the_head(lora_model):
    a, b, target = lora_model(), lora_model(), lora_model()
    _perturb(a, 1)
    _perturb(b, 2)
    mods = M.lora_modules(target)
    assert mods
    views = [M.MergeView(mods, M.live_trained(x), M.live_bases(x, mods)) for x in (a, b)]
    M.merge_into(target, "linear", views)
    pa, pb, pt = (dict(x.named_parameters()) for x in (a, b, target))
    for info in mods.values():
        w0 = pa[info.base].double()  # the frozen base, common to every model
        assert torch.equal(pa[info.base], pb[info.base])
        dw = [info.scaling * (p[info.b].double() @ p[info.a].double()) for p in (pa, pb)]
        want = w0 + 0.5 * (dw[0] + dw[1])  # by hand: the average of the two ΔW = s·B@A
        got = pt[info.base].double() + info.scaling * (pt[info.b].double() @ pt[info.a].double())
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
        # PEFT's "linear" (A and B averaged separately) has cross terms: a different weight
        peft_like = w0 + info.scaling * (
            (0.5 * (pa[info.b] + pb[info.b])).double() @ (0.5 * (pa[info.a] + pb[info.a])).double()
        )
        assert (peft_like - want).abs().max() > 1e-4
    heads = [n for n in pt if "classifier" in n and pt[n].requires_grad]
    assert heads
    for n in heads:
        torch.testing.assert_close(pt[n], 0.5 * (pa[n] + pb[n]))
        assert not torch.equal(pt[n], pa[n])


def _ctx(state=None):
    return StepContext(
        "r", 1, 2, ("x",), step_hyper("vanilla", 0, TrainConfig()), 0, state=state or {}
    )


def test_sequential_lora_merge_keeps_the_adapter_and_moves_the_difference_into_the_base(
    lora_model,
):
    model = lora_model()
    ctx = _ctx()
    strategy = M.Merge(how="linear", weight=0.25)
    strategy.before_step(model, None, ctx)
    before = {k: v.clone() for k, v in _effective(model).items()}
    _perturb(model, 3)  # "training"
    trained = trainable_copy(model)
    after = {k: v.clone() for k, v in _effective(model).items()}
    strategy.after_step(model, ctx)
    now = _effective(model)
    for k in before:
        torch.testing.assert_close(now[k], 0.75 * before[k] + 0.25 * after[k], rtol=0, atol=1e-6)
    params = dict(model.named_parameters())
    for info in M.lora_modules(model).values():
        assert torch.equal(params[info.a], trained[info.a])  # the adapter as trained
        assert torch.equal(params[info.b], trained[info.b])
    saved = strategy.state_tensors(ctx.state)  # the merged bases go into the checkpoint
    mods = M.lora_modules(model)
    assert set(saved) == {"base/" + m for m in mods}
    assert all(torch.equal(saved["base/" + m], params[i.base]) for m, i in mods.items())


def test_sequential_merge_weight_one_and_identical_models_change_nothing(lora_model):
    for how, kw in (("linear", {"weight": 1.0}), ("linear", {"weight": 0.3})):
        model = lora_model()
        strategy, ctx = M.Merge(how=how, **kw), _ctx()
        strategy.before_step(model, None, ctx)
        if kw["weight"] == 1.0:
            _perturb(model, 4)
        kept = {n: p.detach().clone() for n, p in model.named_parameters()}
        strategy.after_step(model, ctx)
        assert all(torch.equal(p, kept[n]) for n, p in model.named_parameters())
    model = lora_model()
    ctx = _ctx({"initial": trainable_copy(model)})
    strategy = M.Merge(how="ties", density=1.0, scale=1.0)
    strategy.before_step(model, None, ctx)
    _perturb(model, 5)  # before (as the previous step left it) == after: identical models
    ctx.state["previous"] = trainable_copy(model)
    kept = _effective(model)
    kept = {k: v.clone() for k, v in kept.items()}
    strategy.after_step(model, ctx)
    for k, v in _effective(model).items():
        torch.testing.assert_close(v, kept[k], rtol=0, atol=1e-6)


def test_the_strategy_is_registered_with_its_parameters():
    s = get_strategy("merge(density=0.2,how=ties,scale=1.0,weight=0.5)")
    assert isinstance(s, M.Merge) and s.how == "ties" and s.needs_initial
    assert not get_strategy("merge(density=0.2,how=linear,scale=1.0,weight=0.5)").needs_initial


# --------------------------------------------------------------------------------------------
# end to end through the engine


def test_sequential_merge_weight_one_equals_none_bit_for_bit(tmp_path, tiny_model_dir):
    store_a, a, _ = run_strategy(tmp_path / "a", tiny_model_dir)
    store_b, b, _ = run_strategy(tmp_path / "b", tiny_model_dir, {"name": "merge", "weight": 1.0})
    assert scores(store_a, a) == scores(store_b, b)
    store_c, c, _ = run_strategy(tmp_path / "c", tiny_model_dir, {"name": "merge", "weight": 0.5})
    assert scores(store_c, c) != scores(store_a, a)


@pytest.mark.parametrize("how", ["linear", "ties"])
def test_interrupted_shared_lora_merge_chain_resumes_to_the_same_scores(
    tmp_path, tiny_model_dir, how
):
    strategy = {"name": "merge", "how": how, "weight": 0.5, "density": 0.5}
    whole, rec, _ = run_strategy(tmp_path / "whole", tiny_model_dir, strategy, "shared_lora")
    cfg = strategy_cfg(tmp_path / "cut", tiny_model_dir, strategy, "shared_lora")
    (task,) = plan(cfg)
    store = Store(cfg.store)
    with pytest.raises(Preempted):
        run_task(task, cfg, store, should_stop=lambda: store.has_step(task.run_id, 0))
    assert store.done_steps(task.run_id) == {0}
    assert run_task(task, cfg, store) == 1
    assert scores(store, store.run(task.run_id)) == scores(whole, rec)
    # and the weights themselves: adapters, head and the merged base weights (strategy/base/)
    last = [
        torch.load(checkpoint_path(c, task.run_id, 1), weights_only=True)
        for c in (cfg, strategy_cfg(tmp_path / "whole", tiny_model_dir, strategy, "shared_lora"))
    ]
    assert any(k.startswith("strategy/base/") for k in last[0])
    assert last[0].keys() == last[1].keys()
    assert all(torch.equal(last[0][k], last[1][k]) for k in last[0])


@pytest.mark.parametrize(
    ("method", "how"), [("mono", "linear"), ("nonshared_lora", "ties"), ("mono", "task_arithmetic")]
)
def test_per_language_models_are_merged_and_tested_on_every_language(
    tmp_path, tiny_model_dir, method, how
):
    strategy = {"name": "merge", "how": how, "scale": 0.5}
    store, rec, task = run_strategy(tmp_path, tiny_model_dir, strategy, method)
    assert task.kind == "joint" and rec.kind == "joint" and rec.steps == ["merged"]
    assert store.done_steps(rec.run_id) == {0}
    row = scores(store, rec)[0]
    assert len(row) == 2 and all(0.0 <= x <= 1.0 for x in row)
    meta = rec.step_meta[0]
    assert meta["merge"] == how and set(meta["language_epochs"]) == {"en-US", "th-TH"}
    assert all(e >= 1 for e in meta["language_epochs"].values())
    assert meta["epochs_run"] == sum(meta["language_epochs"].values())
    assert not list(
        checkpoint_dir(strategy_cfg(tmp_path, tiny_model_dir), rec.run_id).glob("language-*")
    )


def test_a_preempted_merge_continues_with_the_next_language(tmp_path, tiny_model_dir, monkeypatch):
    strategy = {"name": "merge", "how": "linear"}
    whole, rec, _ = run_strategy(tmp_path / "whole", tiny_model_dir, strategy, "nonshared_lora")
    cfg = strategy_cfg(tmp_path / "cut", tiny_model_dir, strategy, "nonshared_lora")
    (task,) = plan(cfg)
    store = Store(cfg.store)
    folder = checkpoint_dir(cfg, task.run_id)
    with pytest.raises(Preempted, match="language 2/2"):
        run_task(task, cfg, store, should_stop=lambda: any(folder.glob("language-000-*.json")))
    assert not store.done_steps(task.run_id)
    from hpc_forget.run import engine

    trained = []
    orig = engine._train
    monkeypatch.setattr(engine, "_train", lambda *a, **k: trained.append(a[5]) or orig(*a, **k))
    assert run_task(task, cfg, store) == 1
    assert trained == [("th-TH",)]  # en-US came from its saved state
    assert scores(store, store.run(task.run_id)) == scores(whole, rec)


def test_the_analysis_reads_a_store_with_merged_runs(tmp_path, tiny_model_dir):
    from hpc_forget.analysis.entry import analyze
    from hpc_forget.analysis.options import AnalysisOptions

    store, rec, _ = run_strategy(tmp_path, tiny_model_dir, "merge", "mono")
    cfg = strategy_cfg(tmp_path, tiny_model_dir, "merge", "vanilla")
    run_task(plan(cfg)[0], cfg, store)
    m = analyze(cfg.store, tmp_path / "out", AnalysisOptions(bootstrap=10), workers=1)
    labels = {g["label"] for g in m["groups"]} if "label" in m["groups"][0] else set()
    assert len(m["groups"]) == 2, labels
    assert (tmp_path / "out" / "report.html").is_file()
