"""The order advisor on synthetic stores whose forgetting follows a known rule: it must find
the truly best order (checked by brute force over every order under the true rule), predict
the rule's numbers, and say so on the command line and in JSON; `{advised: STORE}` in a config
plans that order and round-trips pinned."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from _analysis_runs import run_record, store_runs
from click.testing import CliRunner

from hpc_forget.analysis import advice
from hpc_forget.cli import cli
from hpc_forget.errors import AnalysisError, ConfigError
from hpc_forget.study.config import config_from_dict, config_to_dict, dump_yaml, load_config
from hpc_forget.study.orders import PAPER_ORDERS, advised_name
from hpc_forget.study.planning import RunKey, plan

LANGS = ("en-US", "de-DE", "th-TH", "sw-KE", "am-ET")
LEARNED = {"en-US": 0.90, "de-DE": 0.80, "th-TH": 0.70, "sw-KE": 0.75, "am-ET": 0.60}
FORGET = {"en-US": 0.010, "de-DE": 0.050, "th-TH": 0.030, "sw-KE": 0.070, "am-ET": 0.020}
DAMAGE = {"en-US": 0.040, "de-DE": 0.005, "th-TH": 0.065, "sw-KE": 0.015, "am-ET": 0.025}
NO_DAMAGE = dict.fromkeys(LANGS, 0.0)
STORE_ORDERS = {  # none of them the best order of either rule
    "1": ("en-US", "de-DE", "th-TH", "sw-KE", "am-ET"),
    "2": ("sw-KE", "th-TH", "am-ET", "en-US", "de-DE"),
    "custom-x": ("de-DE", "am-ET", "en-US", "th-TH", "sw-KE"),
}


def rule_R(order, learned, forget, damage) -> np.ndarray:
    """The order-aligned R of the known rule: each learned language l loses forget[l] plus
    damage[m] at every later step that trains m; languages not trained yet score 0.05."""
    T = len(order)
    R = np.full((T, T), 0.05)
    for j, lang in enumerate(order):
        R[j, j] = learned[lang]
        for i in range(j + 1, T):
            R[i, j] = R[i - 1, j] - forget[lang] - damage[order[i]]
    return R


def true_average(order, learned=LEARNED, forget=FORGET, damage=DAMAGE) -> float:
    """The rule's final average F1, written independently of the advisor."""
    return float(np.mean(rule_R(order, learned, forget, damage)[-1]))


def true_best(langs, **rule) -> tuple[tuple[str, ...], float]:
    scored = [(true_average(p, **rule), p) for p in itertools.permutations(langs)]
    best = max(s for s, _ in scored)
    winners = [p for s, p in scored if math.isclose(s, best, abs_tol=1e-12)]
    assert len(winners) == 1  # the rule's numbers make the best order unique
    return winners[0], best


def seq_record(order, name, R, *, method="vanilla", rank=0, model="tiny", seed=0, langs=None):
    langs = list(langs or sorted(order))
    k = RunKey(method=method, model=model, rank=rank, order=name, seed=seed)
    m = np.full((len(order), len(langs)), np.nan)
    for j, lang in enumerate(order):
        m[:, langs.index(lang)] = R[:, j]
    return run_record(k.run_id, k.as_dict(), "sequential", langs, order, m)


def write_runs(path, runs) -> None:
    store_runs(path, runs, dev_curve=[0.5])


def rule_store(path, damage=DAMAGE, orders=STORE_ORDERS, extra=()):
    runs = [
        seq_record(order, name, rule_R(order, LEARNED, FORGET, damage))
        for name, order in orders.items()
    ]
    write_runs(path, [*runs, *extra])
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    pytest.importorskip("h5py")
    return rule_store(tmp_path_factory.mktemp("advice") / "store")


@pytest.mark.parametrize("damage", [NO_DAMAGE, DAMAGE], ids=["forget-only", "forget+damage"])
def test_the_advisor_finds_the_truly_best_order(tmp_path, damage):
    path = rule_store(tmp_path / "s", damage=damage)
    best, best_value = true_best(LANGS, damage=damage)
    assert best not in STORE_ORDERS.values()
    a = advice.advise(str(path))
    assert a.languages == tuple(sorted(LANGS))
    assert a.order == best
    assert "brute force over all 120 orders" in a.search
    assert a.predicted == pytest.approx(best_value, abs=1e-9)
    truth = rule_R(best, LEARNED, FORGET, damage)[-1]
    assert [a.predicted_final[x] for x in best] == pytest.approx(list(truth), abs=1e-9)
    # the model fits the rule exactly: every store order's prediction is its measurement
    assert a.model.drop_rmse == pytest.approx(0, abs=1e-9) and a.final_rmse < 1e-9
    for o in a.store_orders:
        assert o.order == STORE_ORDERS[o.name]
        assert o.predicted == pytest.approx(true_average(o.order, damage=damage), abs=1e-9)
        assert o.measured == pytest.approx(o.predicted, abs=1e-9) and o.measured_runs == 1
    values = [true_average(o, damage=damage) for o in STORE_ORDERS.values()]
    assert a.gain_over_best == pytest.approx(best_value - max(values), abs=1e-9)
    assert a.gain_over_mean == pytest.approx(best_value - np.mean(values), abs=1e-9)
    assert a.gain_over_best > 0 and not a.notes  # an exact fit: nothing to warn about
    # learned is the rule's; forget + damage of every pair is the rule's (the split is free)
    for lang in LANGS:
        assert a.model.learned[lang] == pytest.approx(LEARNED[lang])
        for m in LANGS:
            fitted = a.model.forget[lang] + a.model.damage[m]
            assert fitted == pytest.approx(FORGET[lang] + damage[m], abs=1e-9)


def test_a_subset_of_languages_is_ordered_from_the_same_fit(store):
    subset = ("de-DE", "sw-KE", "en-US")
    a = advice.advise(str(store), subset)
    best, value = true_best(subset)
    assert a.order == best and a.predicted == pytest.approx(value, abs=1e-9)
    # the store's orders restricted to the subset: predicted, but not measured on it
    assert {o.order for o in a.store_orders} == {
        tuple(x for x in order if x in subset) for order in STORE_ORDERS.values()
    }
    assert all(o.measured is None for o in a.store_orders)


def test_beyond_brute_force_the_exact_sort_finds_the_best_order(tmp_path):
    rng = np.random.default_rng(3)
    langs = ("en-US", "de-DE", "th-TH", "sw-KE", "am-ET", "fr-FR", "ja-JP", "hi-IN", "fi-FI")
    learned = dict(zip(langs, rng.uniform(0.6, 0.9, len(langs)), strict=True))
    forget = dict(zip(langs, rng.uniform(0.0, 0.04, len(langs)), strict=True))
    damage = dict(zip(langs, rng.uniform(0.0, 0.03, len(langs)), strict=True))
    orders = {str(i): tuple(rng.permutation(langs)) for i in range(3)}
    runs = [seq_record(o, n, rule_R(o, learned, forget, damage)) for n, o in orders.items()]
    write_runs(tmp_path / "s", runs)
    a = advice.advise(str(tmp_path / "s"))
    assert "sort of 9 languages" in a.search
    # brute force over all 9! orders under the true rule (numpy, independent of the advisor)
    idx = np.array(list(itertools.permutations(range(len(langs)))), dtype=np.int8)
    L, F, D = (np.array([d[x] for x in langs]) for d in (learned, forget, damage))
    T = len(langs)
    later = np.cumsum(D[idx][:, ::-1], axis=1)[:, ::-1] - D[idx]
    averages = (L[idx] - F[idx] * (T - 1 - np.arange(T)) - later).mean(axis=1)
    best = tuple(langs[i] for i in idx[int(np.argmax(averages))])
    assert a.order == best
    assert a.predicted == pytest.approx(averages.max(), abs=1e-9)
    assert a.predicted == pytest.approx(true_average(best, learned, forget, damage), abs=1e-9)


def test_brute_force_and_sort_agree(monkeypatch):
    rng = np.random.default_rng(0)
    langs = [f"l{i}" for i in range(7)]
    for _ in range(20):
        m = advice.ForgettingModel(
            learned=dict(zip(langs, rng.uniform(0, 1, 7), strict=True)),
            forget=dict(zip(langs, rng.normal(0, 0.05, 7), strict=True)),
            damage=dict(zip(langs, rng.normal(0, 0.05, 7), strict=True)),
            learned_runs={},
            forget_drops={},
            damage_drops={},
            drops=0,
            drop_rmse=0.0,
        )
        brute, how = advice.best_order(m, langs)
        assert how.startswith("brute force")
        monkeypatch.setattr(advice, "BRUTE_FORCE_MAX", 0)
        sort, how = advice.best_order(m, langs)
        monkeypatch.undo()
        assert how.startswith("sort")
        assert advice.predicted_average(m, sort) == pytest.approx(
            advice.predicted_average(m, brute), abs=1e-12
        )


def test_default_runs_are_vanilla_none_and_others_are_named(tmp_path):
    lora = [
        seq_record(o, n, rule_R(o, LEARNED, NO_DAMAGE, NO_DAMAGE), method="shared_lora", rank=8)
        for n, o in STORE_ORDERS.items()
    ]
    path = rule_store(tmp_path / "s", extra=lora)
    a = advice.advise(str(path))
    assert a.selection.method == "vanilla" and a.selection.strategy == "none"
    assert len(a.selection.run_ids) == 3
    assert any("method shared_lora: 3 run(s) not used" in x for x in a.selection.others)
    b = advice.advise(str(path), method="shared_lora")
    assert b.selection.rank == 8 and b.model.forget["en-US"] == pytest.approx(0, abs=1e-9)
    with pytest.raises(AnalysisError, match="no sequential runs with method multi"):
        advice.advise(str(path), method="multi")


def test_an_unfinished_run_is_fitted_on_its_cells_and_not_measured(tmp_path):
    runs = [seq_record(o, n, rule_R(o, LEARNED, FORGET, DAMAGE)) for n, o in STORE_ORDERS.items()]
    runs[0].R[-1, :] = np.nan  # order 1's last step not written yet
    write_runs(tmp_path / "s", runs)
    a = advice.advise(str(tmp_path / "s"))
    assert a.order == true_best(LANGS)[0]
    by_name = {o.name: o for o in a.store_orders}
    assert by_name["1"].measured is None and by_name["2"].measured is not None
    assert by_name["1"].predicted == pytest.approx(true_average(STORE_ORDERS["1"]), abs=1e-9)
    assert json.loads(json.dumps(a.as_json(), allow_nan=False))["model"]["final_rmse"] < 1e-9


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_cli_text_states_the_model_and_the_gain(store):
    r = run("advise-order", str(store))
    assert r.exit_code == 0, r.output
    best, value = true_best(LANGS)
    out = r.output
    assert "learned[l] - sum over the later steps k of (forget[l] + damage[order[k]])" in out
    assert "runs used: 3 sequential run(s) of VANILLA [tiny, strategy none], orders 1, 2," in out
    assert "brute force over all 120 orders of 5 languages (exact)" in out
    assert f"advised order ({advised_name(best)}): {', '.join(best)}" in out
    assert f"predicted final average F1: {100 * value:.2f}" in out
    for name, order in STORE_ORDERS.items():
        v = 100 * true_average(order)
        assert f"predicted {v:.2f}  measured {v:.2f} (1 run(s))" in out, name
    gain = 100 * (value - max(true_average(o) for o in STORE_ORDERS.values()))
    assert f"predicted gain: +{gain:.2f} F1 points over the best" in out
    assert f"orders: [{{advised: {store}}}]" in out


def test_cli_json_and_languages_option(store):
    r = run(
        "advise-order", str(store), "--languages", "de-DE,sw-KE", "--languages", "en-US", "--json"
    )
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    best, value = true_best(("de-DE", "sw-KE", "en-US"))
    assert d["languages"] == ["de-DE", "sw-KE", "en-US"]
    assert d["advised"]["order"] == list(best)
    assert d["advised"]["name"] == advised_name(best)
    assert d["advised"]["predicted_final_avg_f1"] == pytest.approx(value, abs=1e-9)
    assert d["runs_used"]["method"] == "vanilla" and len(d["runs_used"]["run_ids"]) == 3
    assert d["model"]["formula"].startswith("final F1 of language l")
    assert d["model"]["languages"]["sw-KE"]["learned"] == pytest.approx(0.75)
    assert d["gain"]["over_best"] >= 0 and d["gain"]["orders"] == 3
    assert all(o["measured_final_avg_f1"] is None for o in d["store_orders"])


def _main(*args):
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    return subprocess.run(
        [sys.executable, "-c", "from hpc_forget.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )


def test_bad_inputs_are_one_line_errors(store, tmp_path):
    joint = RunKey(method="multi", model="tiny", rank=0, order="", seed=0)
    only_joint = tmp_path / "joint"
    write_runs(
        only_joint,
        [run_record(joint.run_id, joint.as_dict(), "joint", LANGS, ["all"], np.full((1, 5), 0.5))],
    )
    cases = [
        ((str(tmp_path / "nope"),), "no such store"),
        ((str(store), "--languages", "en-US,fr-FR,xx-YY"), "no measurement for fr-FR, xx-YY"),
        ((str(store), "--languages", "en-US,en-US"), "languages listed twice: en-US"),
        ((str(only_joint),), "no sequential runs (vanilla, shared_lora)"),
    ]
    for args, needle in cases:
        p = _main("advise-order", *args)
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        lines = p.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines


CONFIG = """\
name: adv
store: {out}
data: {{source: samples, languages: [{langs}]}}
models: [tiny]
methods: [vanilla]
orders: [1, {{advised: {store}}}]
"""


def _config(tmp_path, store, langs=LANGS):
    p = tmp_path / "study.yaml"
    p.write_text(CONFIG.format(out=tmp_path / "out", langs=", ".join(langs), store=store))
    return p


def test_advised_order_in_a_config_plans_and_round_trips_pinned(store, tmp_path):
    cfg = load_config(_config(tmp_path, store), advise=advice.advised_order)
    best, _ = true_best(LANGS)
    tasks = [t for t in plan(cfg) if t.kind == "sequential"]
    paper1 = tuple(x for x in PAPER_ORDERS[1] if x in LANGS)
    assert [t.steps for t in tasks] == [paper1, best]
    assert [t.key.order for t in tasks] == ["1", advised_name(best)]
    d = config_to_dict(cfg)
    assert d["orders"][1] == {"advised": str(store), "order": list(best)}
    assert config_from_dict(d) == cfg  # no store read: the order is pinned
    again = tmp_path / "again.yaml"
    again.write_text(dump_yaml(d))
    assert load_config(again) == cfg
    # the CLI resolves it too
    r = run("plan", str(_config(tmp_path, store)), "--json")
    assert r.exit_code == 0, r.output
    seq = [t for t in json.loads(r.output) if t["kind"] == "sequential"]
    assert seq[1]["steps"] == list(best) and seq[1]["key"]["order"] == advised_name(best)
    r = run("config", "check", str(_config(tmp_path, store)))
    assert f"advised: {store}" in r.output and "order:" in r.output


def test_a_pinned_advised_order_ignores_a_changed_store(store, tmp_path):
    cfg = load_config(_config(tmp_path, store), advise=advice.advised_order)
    other = rule_store(tmp_path / "other", damage=NO_DAMAGE)  # another rule, another best order
    d = config_to_dict(cfg)
    d["orders"][1]["advised"] = str(other)
    pinned = config_from_dict(d, advise=advice.advised_order)
    assert pinned.orders[1].custom == cfg.orders[1].custom
    fresh = load_config(_config(tmp_path, other), advise=advice.advised_order)
    assert fresh.orders[1].custom == true_best(LANGS, damage=NO_DAMAGE)[0]
    assert fresh.orders[1].custom != cfg.orders[1].custom


def test_advised_config_errors_name_the_file_and_option(store, tmp_path):
    joint = RunKey(method="multi", model="tiny", rank=0, order="", seed=0)
    only_joint = tmp_path / "joint"
    write_runs(
        only_joint,
        [run_record(joint.run_id, joint.as_dict(), "joint", LANGS, ["all"], np.full((1, 5), 0.5))],
    )
    cases = [
        (tmp_path / "missing", LANGS, "no such store"),
        (store, (*LANGS, "fr-FR"), "no measurement for fr-FR"),
        (only_joint, LANGS, "no sequential runs"),
    ]
    for where, langs, needle in cases:
        p = _config(tmp_path, where, langs)
        with pytest.raises(ConfigError) as exc:
            load_config(p, advise=advice.advised_order)
        msg = str(exc.value)
        assert msg.startswith(f"{p}:6: orders[1].advised: ") and needle in msg, msg
        assert "\n" not in msg
