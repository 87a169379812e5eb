"""study/strategies.py (named apart from tests/run/test_strategies.py): the strategies table, config entries, canonical run-key text, the grid axis."""

from __future__ import annotations

import pytest

from hpc_forget.errors import ConfigError
from hpc_forget.study import strategies as S
from hpc_forget.study.config import config_from_dict, config_to_dict
from hpc_forget.study.planning import plan


def test_every_parameter_is_filled_in_and_sorted():
    spec = S.strategy_spec({"name": "ewc", "lam": 50})
    assert spec.canonical == "ewc(fisher_examples=200,gamma=1.0,lam=50.0,variant=online)"
    assert S.strategy_spec("none").canonical == "none"
    assert S.parse_canonical(spec.canonical) == spec
    f = S.strategy_spec(
        {"name": "freeze", "part": "listed", "listed": ["embeddings", "encoder.layer.0"]}
    )
    assert f.canonical == "freeze(k=2,listed=embeddings+encoder.layer.0,part=listed)"
    assert S.parse_canonical(f.canonical) == f


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ("nope", "strategies[0].name: unknown strategy 'nope'"),
        ({"name": "ewc", "lambda": 1}, "strategies[0].lambda: ewc has no parameter 'lambda'"),
        ({"name": "ewc", "lam": -1}, "strategies[0].lam: must be in [0, 1e+12]"),
        ({"name": "ewc", "variant": "x"}, "strategies[0].variant: must be one of separate, online"),
        ({"name": "replay", "k": 2.5}, "strategies[0].k: must be an integer"),
        ({"name": "revert", "alpha": True}, "strategies[0].alpha: must be a number"),
        ({"lam": 1}, "strategies[0]: must be a strategy name or a mapping with 'name'"),
    ],
)
def test_bad_entries_are_one_line_errors(raw, needle):
    with pytest.raises(ConfigError) as err:
        S.strategy_spec(raw)
    assert str(err.value).startswith(needle), str(err.value)


def _cfg(**extra):
    raw = {
        "name": "x",
        "store": "s",
        "data": {"languages": ["en-US", "th-TH"]},
        "models": ["tiny"],
        "methods": ["multi", "mono", "vanilla"],
        "orders": [1],
    }
    raw.update(extra)
    return config_from_dict(raw, origin="c.yaml")


def test_each_method_runs_with_the_strategies_it_composes_with():
    cfg = _cfg(strategies=["none", {"name": "ewc"}, {"name": "merge"}])
    keys = {(t.key.method, t.key.strategy.partition("(")[0], t.kind) for t in plan(cfg)}
    assert keys == {
        ("multi", "none", "joint"),
        ("mono", "none", "per-language"),
        ("mono", "merge", "joint"),  # per-language models merged: one task, every language
        ("vanilla", "none", "sequential"),
        ("vanilla", "ewc", "sequential"),
        ("vanilla", "merge", "sequential"),
    }
    again = config_from_dict(config_to_dict(cfg))
    assert again.strategies == cfg.strategies


def test_the_default_is_none_and_run_ids_do_not_change():
    a, b = _cfg(), _cfg(strategies=["none"])
    assert [t.task_id for t in plan(a)] == [t.task_id for t in plan(b)]
    assert config_to_dict(a)["strategies"] == ["none"]


def test_a_method_no_strategy_composes_with_is_an_error():
    with pytest.raises(ConfigError, match=r"^c.yaml: methods\[0\]: multi composes with none"):
        _cfg(strategies=["ewc"])
    with pytest.raises(ConfigError, match="lists the same strategy twice"):
        _cfg(strategies=["ewc", {"name": "ewc", "lam": 100}])


def test_train_fraction_list_is_a_sweep_axis():
    cfg = _cfg(data={"languages": ["en-US", "th-TH"], "train_fraction": [0.5, 1.0]})
    scales = sorted({t.key.data_scale for t in plan(cfg)})
    assert scales == [0.5, 1.0]
    assert len(plan(cfg)) == 2 * len(plan(_cfg()))
    assert config_to_dict(cfg)["data"]["train_fraction"] == [0.5, 1.0]
    assert config_to_dict(_cfg())["data"]["train_fraction"] == 1.0
    with pytest.raises(ConfigError, match=r"data.train_fraction\[1\]: must be in"):
        _cfg(data={"languages": ["en-US"], "train_fraction": [0.5, 0]})


def test_lora_head_policy_is_a_setting_only_when_not_the_default():
    from hpc_forget.study.identity import run_settings

    default = run_settings(_cfg(), "shared_lora", 4)
    frozen = run_settings(_cfg(train={"lora_head": "frozen"}), "shared_lora", 4)
    assert "lora_head" not in default["train"] and frozen["train"]["lora_head"] == "frozen"
    assert (
        "lora_head" not in run_settings(_cfg(train={"lora_head": "frozen"}), "vanilla", 0)["train"]
    )
    with pytest.raises(ConfigError, match="train.lora_head: must be train or frozen"):
        _cfg(train={"lora_head": "x"})


def test_docs_describe_every_strategy_and_parameter_with_its_default():
    """docs/strategies.md has a section per strategy, and a table row per parameter with the
    default the table holds (the doc cannot drift from study/strategies.py unnoticed)."""
    import re
    from pathlib import Path

    from hpc_forget.study.strategies import STRATEGY_TABLE

    text = (Path(__file__).parents[2] / "docs" / "strategies.md").read_text()
    sections = dict(
        (m.group(1), m.group(2))
        for m in re.finditer(r"^## (\w+)\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    )
    for info in STRATEGY_TABLE:
        assert info.name in sections, f"docs/strategies.md: no section '## {info.name}'"
        for p in info.params:
            default = "[]" if p.default == () else str(p.default)
            row = f"| `{p.name}` | `{default}` |"
            assert row in sections[info.name], f"{info.name}: no row {row!r}"


def test_the_builtin_strategies_config_runs_every_strategy_against_none():
    from hpc_forget.study.config import load_config

    cfg = load_config("strategies")
    assert {s.name for s in cfg.strategies} == set(S.STRATEGY_NAMES)
    assert list(cfg.models) == ["tiny"]
    tasks = plan(cfg)
    # every strategy on every order, VANILLA only: a paired comparison on three orders
    assert len(tasks) == len(S.STRATEGY_NAMES) * len(cfg.orders) and len(cfg.orders) >= 3
    assert {t.key.strategy.split("(")[0] for t in tasks} == set(S.STRATEGY_NAMES)
