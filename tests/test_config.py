"""Config loading and validation: every bad input names the file and key."""

from __future__ import annotations

import pytest

from hpc_forget.config import (
    ConfigError,
    config_from_dict,
    config_to_dict,
    dump_yaml,
    load_config,
)


def _write(tmp_path, text, name="study.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


BASE = """
name: t
store: {store}
data: {{source: samples, languages: [en-US, de-DE]}}
models: [tiny]
methods: [vanilla, shared_lora, multi]
orders: [1]
"""


@pytest.mark.parametrize("name", ["demo", "paper"])
def test_builtin_configs_load_and_round_trip(name):
    cfg = load_config(name)
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_demo_is_small_real_study():
    cfg = load_config("demo")
    assert set(cfg.data.languages) == {"en-US", "th-TH", "de-DE", "sw-KE"}
    assert {m.name for m in cfg.methods} == {
        "multi",
        "mono",
        "vanilla",
        "shared_lora",
        "nonshared_lora",
    }
    assert len(cfg.orders) == 2


def test_yaml_and_toml_give_the_same_config(tmp_path):
    y = _write(tmp_path, BASE.format(store="s"))
    t = _write(
        tmp_path,
        'name = "t"\nstore = "s"\nmodels = ["tiny"]\nmethods = ["vanilla", "shared_lora", "multi"]\n'
        'orders = [1]\n[data]\nsource = "samples"\nlanguages = ["en-US", "de-DE"]\n',
        "study.toml",
    )
    assert load_config(y) == load_config(t)


def test_defaults_are_the_papers():
    cfg = load_config("paper")
    t = cfg.train
    assert (t.lr_full, t.lr_lora) == (5e-5, 5e-6)
    assert (t.max_epochs_full, t.max_epochs_lora) == (50, 100)
    assert (t.patience_full, t.patience_lora) == (5, 15)
    assert cfg.ranks == (32, 64, 256)


def test_overrides(tmp_path):
    cfg = load_config(_write(tmp_path, BASE.format(store="s")), overrides={"train.batch_size": 7})
    assert cfg.train.batch_size == 7


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda s: s.replace("name: t\n", ""), "study.yaml: name: missing"),
        (lambda s: s + "colour: red\n", "study.yaml: colour: unknown key"),
        (
            lambda s: s + "train: {batch_size: 0}\n",
            "study.yaml: train.batch_size: must be an integer >= 1",
        ),
        (lambda s: s + "train: {lr_full: -1}\n", "study.yaml: train.lr_full: must be in"),
        (
            lambda s: s + "train: {precision: fp8}\n",
            "study.yaml: train.precision: must be auto, bf16 or fp32",
        ),
        (
            lambda s: s + "train: {warmpu_ratio: 0.1}\n",
            "study.yaml: train.warmpu_ratio: unknown key",
        ),
        (
            lambda s: s.replace("vanilla,", "vanila,"),
            "study.yaml: methods[0].name: unknown method 'vanila'",
        ),
        (
            lambda s: s.replace("orders: [1]", "orders: [7]"),
            "study.yaml: orders[0]: the paper has orders 1-5",
        ),
        (
            lambda s: s.replace("orders: [1]", "orders: []"),
            "study.yaml: orders: sequential methods",
        ),
        (
            lambda s: s.replace("orders: [1]", "orders: [[en-US, fr-FR]]"),
            "study.yaml: orders[0]: not a permutation of data.languages (missing de-DE; not in data.languages: fr-FR)",
        ),
        (
            lambda s: s.replace("orders: [1]", "orders: [[en-US, en-US]]"),
            "study.yaml: orders[0]: not a permutation",
        ),
        (
            lambda s: s.replace("[en-US, de-DE]", "[en-US, xx-XX]"),
            "study.yaml: orders[0]: paper order 1 has no xx-XX",
        ),
        (
            lambda s: s.replace("[en-US, de-DE]", "[en-US, en-US]"),
            "study.yaml: data.languages: en-US is listed twice",
        ),
        (
            lambda s: s.replace("methods: [", "methods: [{name: mono, ranks: [8]}, "),
            "study.yaml: methods[0].ranks: mono is full fine-tuning",
        ),
        (
            lambda s: s.replace("shared_lora,", "{name: shared_lora, ranks: [0]},"),
            "study.yaml: methods[1].ranks: shared_lora needs LoRA ranks >= 1",
        ),
        (lambda s: s + "seeds: [-1]\n", "study.yaml: seeds[0]: must be an integer >= 0"),
        (
            lambda s: s.replace("data: {", "data: {missing_train: maybe, "),
            "study.yaml: data.missing_train: must be 'error' or 'split-dev'",
        ),
        (
            lambda s: s.replace("data: {", "data: {train_fraction: 0, "),
            "study.yaml: data.train_fraction: must be in (0.0, 1.0]",
        ),
        (lambda s: s + "  - [oops\n", "study.yaml:"),
    ],
)
def test_bad_configs_name_file_and_key(tmp_path, edit, expected):
    p = _write(tmp_path, edit(BASE.format(store="s")))
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert msg.startswith(expected.replace("study.yaml", str(p), 1)), msg
    assert "\n" not in msg


def test_missing_file_and_unknown_builtin(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"not a config file .* nor a built-in config"):
        load_config("demoo")


def test_dump_yaml_reloads(tmp_path):
    cfg = load_config("demo")
    p = _write(tmp_path, dump_yaml(config_to_dict(cfg)))
    assert load_config(p) == cfg
