"""Config loading and validation: every bad input names the file and key."""

from __future__ import annotations

import re

import pytest

from hpc_forget.study.config import (
    ConfigError,
    config_from_dict,
    config_to_dict,
    dump_yaml,
    load_config,
    parse_sets,
    split_revision,
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


def test_paper_compares_xlmr_base_with_e5_large_instruct():
    """The paper's "E5 instruct (Wang et al., 2024)" is that report's only instruct model."""
    from hpc_forget.models.params import PRESETS, preset_config
    from hpc_forget.study.planning import plan

    cfg = load_config("paper")
    assert cfg.models == ("xlm-roberta-base", "multilingual-e5-large-instruct")
    assert PRESETS[cfg.models[1]] == "intfloat/multilingual-e5-large-instruct"
    assert preset_config(cfg.models[1])["num_hidden_layers"] == 24  # the XLM-R large shape
    tasks = plan(cfg)
    by_model = {m: [t for t in tasks if t.key.model == m] for m in cfg.models}
    assert set(by_model) == {t.key.model for t in tasks}
    # the same grid for both models: multi 4 ranks + mono 52 + vanilla 5 + shared 15 + nonshared 156
    assert [len(v) for v in by_model.values()] == [232, 232]
    assert "multilingual-e5-base" in PRESETS  # kept as a preset, not in the paper config


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
        (lambda s: s + "colour: red\n", "study.yaml:8: colour: unknown key"),
        (
            lambda s: s + "train: {batch_size: 0}\n",
            "study.yaml:8: train.batch_size: must be an integer >= 1",
        ),
        (lambda s: s + "train: {lr_full: -1}\n", "study.yaml:8: train.lr_full: must be in"),
        (
            lambda s: s + "train: {checkpoint_minutes: -5}\n",
            "study.yaml:8: train.checkpoint_minutes: must be in [0.0, 1000000.0]",
        ),
        (
            lambda s: s + "train: {precision: fp8}\n",
            "study.yaml:8: train.precision: must be auto, bf16, fp16 or fp32",
        ),
        (
            lambda s: s + "train: {warmpu_ratio: 0.1}\n",
            "study.yaml:8: train.warmpu_ratio: unknown key",
        ),
        (
            lambda s: s.replace("vanilla,", "vanila,"),
            "study.yaml:6: methods[0].name: unknown method 'vanila'",
        ),
        (
            lambda s: s.replace("orders: [1]", "orders: [7]"),
            "study.yaml:7: orders[0]: the paper has orders 1-5",
        ),
        (
            lambda s: s.replace("orders: [1]", "orders: []"),
            "study.yaml:7: orders: sequential methods",
        ),
        (
            lambda s: s.replace("orders: [1]", "orders: [[en-US, fr-FR]]"),
            "study.yaml:7: orders[0]: not a permutation of data.languages (missing de-DE; not in data.languages: fr-FR)",
        ),
        (
            lambda s: s.replace("orders: [1]", "orders: [[en-US, en-US]]"),
            "study.yaml:7: orders[0]: not a permutation",
        ),
        (
            lambda s: s.replace("[en-US, de-DE]", "[en-US, xx-XX]"),
            "study.yaml:7: orders[0]: paper order 1 has no xx-XX",
        ),
        (
            lambda s: s.replace("[en-US, de-DE]", "[en-US, en-US]"),
            "study.yaml:4: data.languages: en-US is listed twice",
        ),
        (
            lambda s: s.replace("methods: [", "methods: [{name: mono, ranks: [8]}, "),
            "study.yaml:6: methods[0].ranks: mono is full fine-tuning",
        ),
        (
            lambda s: s.replace("shared_lora,", "{name: shared_lora, ranks: [0]},"),
            "study.yaml:6: methods[1].ranks: shared_lora needs LoRA ranks >= 1",
        ),
        (lambda s: s + "seeds: [-1]\n", "study.yaml:8: seeds[0]: must be an integer >= 0"),
        (
            lambda s: s.replace("data: {", "data: {missing_train: maybe, "),
            "study.yaml:4: data.missing_train: must be 'error' or 'split-dev'",
        ),
        (
            lambda s: s.replace("data: {", "data: {train_fraction: 0, "),
            "study.yaml:4: data.train_fraction: must be in (0.0, 1.0]",
        ),
        (lambda s: s + "  - [oops\n", "study.yaml:8: cannot parse the config"),
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


# ------------------------------------------------------------------ numbers: finite, no bools

NUMBER_KEYS = [
    "train.lr_full",
    "train.lr_lora",
    "train.lr_head_lora",
    "train.warmup_ratio",
    "train.weight_decay",
    "train.max_grad_norm",
    "train.checkpoint_minutes",
    "train.lora_dropout",
    "data.train_fraction",
    "data.dev_fraction_for_train",
]
INT_KEYS = ["train.batch_size", "train.max_epochs_full", "train.patience_lora", "data.max_train"]


def _cfg(*, name="t", store="s", source="samples", models="[tiny]", data="", extra=""):
    """BASE with single values replaced (same lines: name 2, store 3, data 4, models 5)."""
    return (
        f"\nname: {name}\nstore: {store}\n"
        f"data: {{source: {source}, languages: [en-US, de-DE]{data}}}\n"
        f"models: {models}\nmethods: [vanilla, shared_lora, multi]\norders: [1]\n{extra}"
    )


def _with(key, value):
    section, name = key.split(".")
    if section == "data":
        return _cfg(data=f", {name}: {value}")
    return _cfg(extra=f"train: {{{name}: {value}}}\n")


@pytest.mark.parametrize("key", NUMBER_KEYS)
@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", ".NaN", "nan", "'nan'", "inf", "true"])
def test_number_keys_reject_nan_inf_strings_and_booleans(tmp_path, key, value):
    p = _write(tmp_path, _with(key, value))
    with pytest.raises(ConfigError, match=rf"^{p}:\d+: {key}: must be a (finite )?number"):
        load_config(p)
    with pytest.raises(ConfigError, match=rf"^--set {key}=.*: must be a (finite )?number"):
        load_config(
            _write(tmp_path, BASE.format(store="s")), overrides=parse_sets([f"{key}={value}"])
        )


@pytest.mark.parametrize("key", INT_KEYS)
@pytest.mark.parametrize("value", [".nan", ".inf", "true", "2.0", "'8'", "99999999999999999999"])
def test_integer_keys_reject_non_integers(tmp_path, key, value):
    p = _write(tmp_path, _with(key, value))
    with pytest.raises(ConfigError, match=rf"^{p}:\d+: {key}: must be an integer"):
        load_config(p)


def test_exponent_without_a_dot_is_a_number(tmp_path):
    # YAML 1.1 reads 1e-5 as the string "1e-5"; a learning rate written so must still work.
    p = _write(tmp_path, BASE.format(store="s") + "train: {lr_full: 1e-5, lr_lora: 2E-6}\n")
    cfg = load_config(p, overrides=parse_sets(["train.weight_decay=1e-2"]))
    assert (cfg.train.lr_full, cfg.train.lr_lora, cfg.train.weight_decay) == (1e-5, 2e-6, 0.01)


def test_toml_nan_and_toml_syntax_errors_are_one_line(tmp_path):
    head = 'name = "t"\nstore = "s"\nmodels = ["tiny"]\nmethods = ["multi"]\n'
    data = '[data]\nlanguages = ["en-US"]\n'
    p = _write(tmp_path, head + data + "[train]\nlr_full = nan\n", "a.toml")
    with pytest.raises(ConfigError, match=rf"^{p}: train.lr_full: must be a finite number"):
        load_config(p)
    for text in (head + 'name = "u"\n' + data, head + data + "[data]\n", head + "x = [1,\n"):
        p = _write(tmp_path, text, "b.toml")
        with pytest.raises(ConfigError) as err:
            load_config(p)
        assert str(err.value).startswith(f"{p}: cannot parse the config (")
        assert "\n" not in str(err.value)


# ------------------------------------------------------------------ duplicate keys


@pytest.mark.parametrize(
    ("extra", "where"),
    [
        ("name: u\n", "8: name: duplicate key (first at line 2)"),
        ("train:\n  batch_size: 4\n  lr_full: 0.1\n  batch_size: 8\n", "11: train.batch_size"),
        ("train: {batch_size: 4, batch_size: 8}\n", "8: train.batch_size: duplicate key"),
        ("seeds: [0]\nseeds: [1]\n", "9: seeds: duplicate key (first at line 8)"),
    ],
)
def test_duplicate_keys_are_errors_with_file_and_line(tmp_path, extra, where):
    p = _write(tmp_path, BASE.format(store="s") + extra)
    with pytest.raises(ConfigError, match=rf"^{p}:{re.escape(where)}"):
        load_config(p)


def test_duplicate_key_inside_a_list_item(tmp_path):
    text = BASE.format(store="s").replace(
        "methods: [vanilla, shared_lora, multi]",
        "methods:\n  - vanilla\n  - {name: shared_lora, ranks: [8], ranks: [16]}",
    )
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=rf"^{p}:8: methods\[1\]\.ranks: duplicate key"):
        load_config(p)


def test_yaml_anchors_and_merge_keys_still_work(tmp_path):
    text = BASE.format(store="s") + "x_common: &c {batch_size: 4}\n"
    p = _write(tmp_path, text.replace("x_common", "train") + "")
    assert load_config(p).train.batch_size == 4
    p = _write(tmp_path, BASE.format(store="s") + "train:\n  <<: {batch_size: 4}\n  lr_full: 0.1\n")
    assert load_config(p).train.batch_size == 4


# ------------------------------------------------------------------ --set


@pytest.mark.parametrize(
    ("pair", "needle"),
    [
        ("x", "--set 'x': use KEY=VALUE, e.g. train.batch_size=64 (see hpc-forget --help)"),
        ("=5", "--set '=5': the key before '=' is empty"),
        ("a..b=1", "--set a..b=1: empty key name"),
        (".x=1", "--set .x=1: empty key name"),
        ("x.=1", "--set x.=1: empty key name"),
        ("seeds[0]=1", "--set seeds[0]=1: 'seeds[0]' is not a key name"),
        ("train.batch_size=[1,", "--set train.batch_size=[1,: not a valid YAML value"),
        ("name={a: 1, a: 2}", "--set name={a: 1, a: 2}:1: a: duplicate key"),
        ("name=a: b: c", "--set name=a: b: c: not a valid YAML value"),
    ],
)
def test_bad_set_options_name_the_option(pair, needle):
    with pytest.raises(ConfigError) as err:
        parse_sets([pair])
    assert str(err.value).startswith(needle), str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("pairs", "needle"),
    [
        (["train.batch_size=0"], "--set train.batch_size=0: must be an integer >= 1, got 0"),
        (
            ["train.batch_size.x=5"],
            "--set train.batch_size.x=5: train.batch_size is 4, not a section",
        ),
        (["data.source.x=5"], "--set data.source.x=5: data.source is 'samples', not a section"),
        (["train.lr_full.x=5"], "--set train.lr_full.x=5: train.lr_full: must be a number"),
        (["train.batchsize=3"], "--set train.batchsize=3: unknown key; allowed:"),
        (["colour.x=3"], "--set colour.x=3: colour: unknown key"),
        (["train.batch_size={a: 1}"], "--set train.batch_size={a: 1}: must be an integer >= 1"),
        (["name=[a, b]"], "--set name=[a, b]: must be a non-empty string, got [a, b]"),
        (["store={x: 1}"], "--set store={x: 1}: must be a non-empty string"),
        (["name="], "--set name=null: must be a non-empty string, got null"),
        (["train={batch_size: 0}"], "--set train={batch_size: 0}: train.batch_size: must be"),
        (["train=5"], "--set train=5: must be a mapping of hyper-parameters, got 5"),
        (["ranks=[0]"], "--set ranks=[0]: ranks[0]: 0 (no LoRA) is given to shared_lora"),
        (["orders=[]"], "--set orders=[]: sequential methods"),
    ],
)
def test_set_errors_name_set_not_the_file(tmp_path, pairs, needle):
    p = _write(tmp_path, BASE.format(store="s") + "train: {batch_size: 4}\n")
    with pytest.raises(ConfigError) as err:
        load_config(p, overrides=parse_sets(pairs))
    assert str(err.value).startswith(needle), str(err.value)
    assert str(p) not in str(err.value)


def test_set_replaces_a_null_section_and_later_set_wins(tmp_path):
    p = _write(tmp_path, BASE.format(store="s") + "train:\n")
    cfg = load_config(p, overrides=parse_sets(["train.batch_size=3", "train.batch_size=5"]))
    assert cfg.train.batch_size == 5


def test_labels_name_other_options(tmp_path):
    p = _write(tmp_path, BASE.format(store="s"))
    with pytest.raises(ConfigError, match=r"^--cache /a\\nb: must not contain control"):
        load_config(p, overrides={"cache_dir": "/a\nb"}, labels={"cache_dir": "--cache /a\nb"})


# ------------------------------------------------------------------ strings reach paths


@pytest.mark.parametrize("key", ["name", "store", "cache_dir", "data.source", "models"])
@pytest.mark.parametrize("char", ["\\n", "\\r", "\\0", "\\t", "\\x1b", "\\u2028"])
def test_control_characters_are_rejected(tmp_path, key, char):
    value = f'"a{char}b"'
    kw = {"name": "name", "store": "store", "data.source": "source", "models": "models"}
    text = _cfg(**{kw[key]: value}) if key in kw else _cfg(extra=f"{key}: {value}\n")
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert re.match(rf"^{p}:\d+: {re.escape(key)}(\[0\])?: must not contain control", msg), msg
    assert "\n" not in msg and "\r" not in msg and "\0" not in msg
    with pytest.raises(
        ConfigError, match=rf"^--set {key}=a.*b: (models\[0\]: )?must not contain control"
    ):
        load_config(
            _write(tmp_path, _cfg()), overrides={key: f"a{char}b".encode().decode("unicode_escape")}
        )


def test_non_strings_are_not_turned_into_paths(tmp_path):
    p = _write(tmp_path, BASE.format(store="{a: 1}"))
    with pytest.raises(ConfigError, match=rf"^{p}:3: store: must be a non-empty string"):
        load_config(p)
    cfg = load_config(_write(tmp_path, BASE.format(store="2024")))
    assert cfg.store == "2024"  # a number is a fine folder name


# ------------------------------------------------------------------ ranks


def test_rank_zero_from_top_level_ranks_names_top_level_ranks(tmp_path):
    p = _write(tmp_path, BASE.format(store="s") + "ranks: [8, 0]\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert str(err.value).startswith(f"{p}:8: ranks[1]: 0 (no LoRA) is given to shared_lora")
    assert "methods[1]" in str(err.value)


def test_top_level_rank_zero_is_fine_without_lora_methods(tmp_path):
    text = BASE.format(store="s").replace("[vanilla, shared_lora, multi]", "[vanilla]")
    assert load_config(_write(tmp_path, text + "ranks: [0]\n")).ranks == (0,)


# ------------------------------------------------------------------ model revisions


def test_model_revision_mapping_is_stored_as_name_at_revision(tmp_path):
    text = BASE.format(store="s").replace(
        "models: [tiny]",
        "models: [{name: FacebookAI/xlm-roberta-base, revision: e73636d}, org/m@refs/pr/1, tiny]",
    )
    cfg = load_config(_write(tmp_path, text))
    assert cfg.models == ("FacebookAI/xlm-roberta-base@e73636d", "org/m@refs/pr/1", "tiny")
    assert config_from_dict(config_to_dict(cfg)) == cfg
    assert load_config(_write(tmp_path, dump_yaml(config_to_dict(cfg)), "again.yaml")) == cfg


@pytest.mark.parametrize(
    ("models", "needle"),
    [
        ("[{name: m, revision: 'a b'}]", "models[0].revision: revision 'a b' must be"),
        ("[{name: m, revision: 'a@b'}]", "models[0].revision: revision 'a@b' must be"),
        ("[{name: m, revision: ''}]", "models[0].revision: revision '' must be"),
        ("[{name: m, revision: ../x}]", "models[0].revision: revision '../x' must be"),
        ("[{name: m, revision: 0123}]", "models[0].revision: a revision must be text"),
        ("[{name: m, revison: abc}]", "models[0].revison: unknown key"),
        ("[{revision: abc}]", "models[0]: a model mapping needs 'name'"),
        ("[{name: m@x, revision: abc}]", "models[0].name: 'm@x' already pins a revision"),
        ("[{name: ./local, revision: abc}]", "models[0].revision: './local' is a local path"),
        ("['m@a b']", "models[0]: revision 'a b' must be"),
        ("['m@']", "models[0]: 'm@': empty revision"),
        ("[tiny, tiny]", "models: tiny is listed twice"),
        ("[' tiny']", "models[0]: ' tiny' starts or ends with a space"),
        ("[]", "models: must be a non-empty list"),
        ("[[tiny]]", "models[0]: must be a non-empty string"),
    ],
)
def test_bad_models_name_the_entry(tmp_path, models, needle):
    p = _write(tmp_path, BASE.format(store="s").replace("models: [tiny]", f"models: {models}"))
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert str(err.value).startswith(f"{p}:5: {needle}"), str(err.value)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("xlm-roberta-base@e73636d", ("xlm-roberta-base", "e73636d")),
        ("org/m@refs/pr/1", ("org/m", "refs/pr/1")),
        ("org/m", ("org/m", None)),
        ("/data/me@work/model", ("/data/me@work/model", None)),
        ("./ckpt@v2", ("./ckpt@v2", None)),
        ("m@", ("m@", None)),
    ],
)
def test_split_revision(spec, expected):
    assert split_revision(spec) == expected


# ------------------------------------------------------------------ files


def test_unreadable_files_are_one_line(tmp_path):
    p = tmp_path / "bin.yaml"
    p.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(ConfigError, match=rf"^{p}: not UTF-8 text \(byte 6\)"):
        load_config(p)
    d = tmp_path / "dir.yaml"
    d.mkdir()
    with pytest.raises(ConfigError, match=rf"^{d}: not a file"):
        load_config(d)
    p = _write(tmp_path, "name: a\0b\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert str(err.value).startswith(f"{p}: cannot parse the config (") and "\n" not in str(
        err.value
    )


def test_odd_keys_do_not_crash(tmp_path):
    p = _write(tmp_path, BASE.format(store="s") + "1: a\n~: b\n'x\\ny': c\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert ": unknown key; allowed:" in str(err.value) and "\n" not in str(err.value)
    for text in ("", "- a\n", "just text\n"):
        with pytest.raises(ConfigError, match="must be a mapping of keys to values"):
            load_config(_write(tmp_path, text))


def test_config_from_dict_names_its_origin():
    with pytest.raises(ConfigError, match=r"^manifest.json: name: missing"):
        config_from_dict({}, origin="manifest.json")


ADVISED = BASE.replace("orders: [1]", "orders: [{{advised: adv-store}}, 1]")


def test_an_advised_order_is_resolved_by_the_advise_callable_and_pinned(tmp_path):
    from hpc_forget.study.orders import advised_name
    from hpc_forget.study.planning import plan

    calls = []

    def advise(store, languages):
        calls.append((store, languages))
        return tuple(reversed(languages))

    p = _write(tmp_path, ADVISED.format(store="s"))
    cfg = load_config(p, advise=advise)
    assert calls == [("adv-store", ("en-US", "de-DE"))]
    assert cfg.orders[0].custom == ("de-DE", "en-US") and cfg.orders[0].advised == "adv-store"
    seq = [t for t in plan(cfg) if t.kind == "sequential" and t.key.order.startswith("advised")]
    assert {t.key.order for t in seq} == {advised_name(("de-DE", "en-US"))}
    assert all(t.steps == ("de-DE", "en-US") for t in seq)
    d = config_to_dict(cfg)
    assert d["orders"][0] == {"advised": "adv-store", "order": ["de-DE", "en-US"]}
    assert config_from_dict(d) == cfg  # pinned: no advise needed, the store is not read
    again = _write(tmp_path, dump_yaml(d), "again.yaml")
    assert load_config(again) == cfg and len(calls) == 1
    # an advised order is named apart from the same list given as a custom order
    custom = _write(tmp_path, BASE.format(store="s").replace("[1]", "[[de-DE, en-US]]"), "c.yaml")
    assert plan(load_config(custom))[0].key.order.startswith("custom-")


def test_advised_order_errors_name_the_file_and_option(tmp_path):
    from hpc_forget.errors import AnalysisError

    p = _write(tmp_path, ADVISED.format(store="s"))
    with pytest.raises(ConfigError, match=r"study.yaml:7: orders\[0\].advised: an advised order"):
        load_config(p)

    def failing(store, languages):
        raise AnalysisError(f"{store}: no such store; pass the folder")

    with pytest.raises(ConfigError, match=r"study.yaml:7: orders\[0\].advised: adv-store: no such"):
        load_config(p, advise=failing)
    bad = [
        ("{advised: adv-store, seed: 1}", r"orders\[0\].seed: unknown key"),
        ("{advised: adv-store, order: [en-US]}", r"orders\[0\]: not a permutation"),
        ("{advised: ''}", r"orders\[0\].advised: must be a non-empty string"),
    ]
    for item, needle in bad:
        q = _write(tmp_path, BASE.format(store="s").replace("[1]", f"[{item}]"), "bad.yaml")
        with pytest.raises(ConfigError, match=needle):
            load_config(q, advise=lambda s, langs: langs)
    # the callable's order is checked like any other
    with pytest.raises(ConfigError, match=r"orders\[0\]: not a permutation"):
        load_config(p, advise=lambda s, langs: ("en-US",))
