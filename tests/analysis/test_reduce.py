"""Metrics of in-memory runs (hand-checked): groups, bootstrap, settings, params."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from _analysis_runs import (
    LANGS,
    ORDER1,
    ORDER2,
    R1,
    R2,
    SETTINGS_A,
    group,
    key,
    nan,
    run_record,
    small_runs,
    to_store_columns,
    two_settings_runs,
)

from hpc_forget.analysis import load, reduce, tables
from hpc_forget.analysis.options import AnalysisOptions
from hpc_forget.errors import AnalysisError
from hpc_forget.study.planning import RunKey


def test_language_scores_per_kind():
    runs = small_runs()
    assert reduce.language_scores(runs[0]) == pytest.approx(
        {"de-DE": 0.5, "af-ZA": 0.7, "am-ET": 0.7}
    )
    assert reduce.language_scores(runs[2]) == pytest.approx(
        {"af-ZA": 0.8, "am-ET": 0.7, "de-DE": 0.75}
    )
    assert reduce.language_scores(runs[3]) == pytest.approx(
        {"af-ZA": 0.78, "am-ET": 0.6, "de-DE": 0.72}
    )


def test_groups_average_over_orders(metrics):
    v = group(metrics, "vanilla")
    assert len(v["runs"]) == 2 and v["orders"] == ["1", "2"]
    h = v["headline"]
    # final F1: R1 -> 1.9/3, R2 -> 0.7
    assert h["f1"]["mean"] == pytest.approx((1.9 / 3 + 0.7) / 2)
    assert h["f1"]["std"] == pytest.approx(np.std([1.9 / 3, 0.7], ddof=1))
    assert h["cbt"]["mean"] == pytest.approx(-0.2)  # mean(-0.25, -0.15)
    assert h["cbt"]["std"] == pytest.approx(math.sqrt(0.005))
    assert h["cft"]["mean"] == pytest.approx(0.375)  # mean(0.325, 0.425)
    assert h["p_avg"]["mean"] == pytest.approx((0.175 + 0.1) / 2)
    # vitality groups: de-DE High (0.5, 0.6), af-ZA Mid (0.7, 0.9), am-ET Low (0.7, 0.6)
    assert h["f1_High"]["mean"] == pytest.approx(0.55)
    assert h["f1_Mid"]["mean"] == pytest.approx(0.8)
    assert h["f1_Low"]["mean"] == pytest.approx(0.65)
    for s in h.values():  # two orders: too few units for an interval (not [min, max])
        assert s["ci_low"] is None and s["ci_high"] is None and s["ci_units"] == 2
    # Fig. 3 per language over orders: de (-, -0.1), af (-0.2, -0.1), am (-0.15, -)
    ch = v["perf_change"]
    assert ch["de-DE"]["mean"] == pytest.approx(-0.1) and ch["de-DE"]["n"] == 1
    assert ch["af-ZA"]["mean"] == pytest.approx(-0.15) and ch["af-ZA"]["n"] == 2
    assert ch["am-ET"]["mean"] == pytest.approx(-0.15)
    # eq. 13-14 read P as the average over the languages seen (the default): af-ZA is at
    # position 1 in order 1 (A_1 - A_0 = 0.75 - 0.8) and 2 in order 2 (A_2 - A_1 = 0.7 - 0.7)
    assert v["mbt"]["af-ZA"]["by_hop"][0] == pytest.approx(-0.025)
    # every convention is in metrics.json
    assert v["transfer"]["gem"]["backward"]["mean"] == pytest.approx((-0.5 / 3 - 0.1) / 2)
    # Fig. 2 curve: mean over orders of the learned-language average
    assert v["curves"]["avg_f1"]["mean"][1] == pytest.approx((0.75 + 0.7) / 2)


def test_non_sequential_groups(metrics):
    assert group(metrics, "multi")["headline"]["f1"]["mean"] == pytest.approx(0.75)
    mono = group(metrics, "mono")
    assert mono["headline"]["f1"]["mean"] == pytest.approx(0.7)
    assert mono["headline"]["f1"]["std"] is None  # one run: no spread, no CI
    assert "cbt" not in mono["headline"]
    # Fig. 2 for MONO: F1 over the first k languages of the orders 1 and 2, averaged
    first = (0.72 + 0.6) / 2  # de-DE (order 1), am-ET (order 2)
    assert mono["curves"]["avg_f1"]["mean"][0] == pytest.approx(first)
    assert mono["curves"]["avg_f1"]["mean"][2] == pytest.approx(0.7)


def test_incomplete_runs_are_listed_and_never_zero(metrics):
    inc = group(metrics, "shared_lora", 8)
    h = inc["headline"]
    assert h["f1"]["mean"] is None and h["f1"]["n"] == 0
    assert h["cbt"]["mean"] is None  # needs the last row
    assert h["cft"]["mean"] == pytest.approx(0.325)  # rows 0 and 1 are there
    run = next(r for r in metrics["runs"] if r["group"] == inc["id"])
    assert run["missing"] == [[2, lang] for lang in LANGS]
    assert run["complete"] is False and run["cells_present"] == 6
    assert run["metrics"]["per_language"] == {"af-ZA": None, "am-ET": None, "de-DE": None}
    assert run["metrics"]["avg_f1_curve"][2] is None
    assert metrics["missing"] == {run["run_id"]: run["missing"]}
    json.dumps(metrics, allow_nan=False)  # NaN is null, never a number


def test_groupings(metrics):
    g = group(metrics, "vanilla")["groupings"]
    assert g["script"]["Latin"]["languages"] == ["af-ZA", "de-DE"]
    assert g["script"]["Latin"]["f1"] == pytest.approx((0.8 + 0.55) / 2)
    assert g["script"]["non-Latin"]["f1"] == pytest.approx(0.65)
    assert list(g["vitality"]) == ["Low", "Mid", "High"]
    assert set(g["family"]) == {"Indo-European", "Afro-Asiatic"}
    assert g["vitality"]["Mid"]["perf_change"] == pytest.approx(-0.15)


def test_custom_vitality_and_convention():
    m = reduce.compute_metrics(
        load.StoreData("mem", small_runs()),
        AnalysisOptions(vitality="Top=5,Rest=0-4", convention="gem", bootstrap=0),
    )
    v = group(m, "vanilla")
    assert set(k for k in v["headline"] if k.startswith("f1_")) == {"f1_Top", "f1_Rest"}
    assert v["headline"]["cbt"]["mean"] == pytest.approx((-0.5 / 3 - 0.1) / 2)
    assert v["headline"]["cbt"]["ci_low"] is None  # bootstrap=0: no CI
    assert tables.table1(m).columns[-2:] == ["Top", "Rest"]
    with pytest.raises(AnalysisError, match="--vitality"):
        reduce.compute_metrics(load.StoreData("mem", []), AnalysisOptions(vitality="High=4-5"))
    with pytest.raises(AnalysisError, match="--convention 'x'"):
        reduce.compute_metrics(load.StoreData("mem", []), AnalysisOptions(convention="x"))


def test_bootstrap_determinism():
    data = load.StoreData("mem", small_runs())
    a = reduce.compute_metrics(data, AnalysisOptions(bootstrap=300, seed=5))
    b = reduce.compute_metrics(data, AnalysisOptions(bootstrap=300, seed=5))
    c = reduce.compute_metrics(data, AnalysisOptions(bootstrap=300, seed=6))
    ha, hb, hc = (group(x, "vanilla")["headline"]["cft"] for x in (a, b, c))
    assert ha == hb
    assert a["groups"] == b["groups"]
    assert ha["mean"] == hc["mean"]


def test_attach_params_sources(metrics):
    data = load.StoreData("mem", small_runs())
    m = json.loads(json.dumps(metrics))
    reduce.attach_params(m, data, lambda k, n: 5.36 if k["rank"] == 8 else None)
    assert group(m, "shared_lora", 8)["params_m"] == 5.36
    assert group(m, "vanilla")["params_m"] is None
    # fallback: trainable_params recorded by the engine, summed over per-language models
    for r in data.runs:
        if r.kind == "per-language":
            r.step_meta = {i: {"trainable_params": 2_000_000} for i in range(3)}
    reduce.attach_params(m, data, lambda k, n: None)
    assert group(m, "mono")["params_m"] == pytest.approx(6.0)
    reduce.attach_params(m, data, lambda k, n: 1 / 0)  # a broken source does not stop the analysis
    assert group(m, "mono")["params_m"] == pytest.approx(6.0)


def test_preset_params_by_arithmetic_match_the_paper():
    # the paper's Table 1 (XLM-R base, 52 languages); NON-SHARED r=32 prints MULTI's 278.04
    # (a typo: 52 x 5.36 = 278.59)
    for (method, rank), paper in {
        ("multi", 0): 278.04,
        ("multi", 32): 5.36,
        ("vanilla", 0): 278.04,
        ("shared_lora", 64): 10.72,
        ("shared_lora", 256): 42.86,
        ("mono", 0): 14458.27,
        ("nonshared_lora", 64): 557.19,
        ("nonshared_lora", 256): 2228.75,
    }.items():
        key = {"model": "xlm-roberta-base", "method": method, "rank": rank}
        assert round(reduce.default_params(key, 52), 2) == paper, (method, rank)
    key = {"model": "intfloat/multilingual-e5-base", "method": "shared_lora", "rank": 32}
    assert reduce.default_params(key, 52) == pytest.approx(5.357568)
    # a large preset counts with its own shape (24 layers, hidden 1024), by name or hub id
    for model in ("multilingual-e5-large-instruct", "intfloat/multilingual-e5-large-instruct@abc"):
        key = {"model": model, "method": "multi", "rank": 0}
        assert reduce.default_params(key, 52) == pytest.approx(559.890432)
    assert reduce.default_params({"model": "tiny", "method": "multi", "rank": 0}, 3) is None


@pytest.mark.slow
def test_preset_params_agree_with_models():
    from hpc_forget.models import counts

    for row in counts.params_table("xlm-roberta-base", 7, (8, 32)):
        key = {"model": "xlm-roberta-base", "method": row.method, "rank": row.rank}
        assert reduce.default_params(key, 7) == pytest.approx(row.paper / 1e6), row


def test_models_follow_the_config_order():
    runs = []
    for model in ("b-model", "a-model"):
        k = RunKey(method="multi", model=model, rank=0, order="", seed=0)
        runs.append(
            run_record(
                k.run_id,
                k.as_dict(),
                "joint",
                LANGS,
                ["all"],
                np.array([[0.5, 0.5, 0.5]]),
                config={"models": ["b-model", "a-model"]},
            )
        )
    m = reduce.compute_metrics(load.StoreData("mem", sorted(runs, key=lambda r: r.run_id)))
    assert [g["key"]["model"] for g in m["groups"]] == ["b-model", "a-model"]
    assert tables.table1(m).columns[0] == "Model"


def test_runs_of_different_settings_are_never_averaged():
    m = reduce.compute_metrics(
        load.StoreData("mem", two_settings_runs()), AnalysisOptions(bootstrap=0)
    )
    vanilla = [g for g in m["groups"] if g["key"]["method"] == "vanilla"]
    assert len(vanilla) == 2
    by_label = {g["settings_label"]: g for g in vanilla}
    assert set(by_label) == {
        "data.max_train=400, train.max_epochs_full=5",
        "data.max_train=800, train.max_epochs_full=10",
    }
    a = by_label["data.max_train=800, train.max_epochs_full=10"]
    b = by_label["data.max_train=400, train.max_epochs_full=5"]
    assert a["headline"]["f1"]["mean"] == pytest.approx((1.9 / 3 + 0.7) / 2)
    assert b["headline"]["f1"]["mean"] == pytest.approx((1.9 / 3 + 0.7) / 2 - 0.1)
    assert a["settings"] == SETTINGS_A and len(a["runs"]) == 2
    assert a["label"] == "VANILLA {data.max_train=800, train.max_epochs_full=10}"
    assert a["id"] != b["id"]
    # MULTI has one settings in the store: no label, no note about it
    multi = next(g for g in m["groups"] if g["key"]["method"] == "multi")
    assert multi["label"] == "MULTI" and multi["settings_label"] == ""
    assert m["settings_note"] == (
        "note: the store holds runs of 2 settings, differing in data.max_train, "
        "train.max_epochs_full; each is analysed as its own group"
    )
    rows = [r[0] for r in tables.table1(m).rows]
    assert "VANILLA {data.max_train=400, train.max_epochs_full=5}" in rows
    assert reduce.compute_metrics(load.StoreData("mem", small_runs()))["settings_note"] is None


def test_sequential_f1_is_the_order_aligned_final_f1():
    # the run also evaluates de-DE, never trained in its order: Table 1 F1 is the mean of the
    # last row over the trained languages only (metrics.final_f1 of the aligned R)
    k = key("vanilla", 0, "x")
    m = np.array([[0.8, nan, 0.1], [0.6, 0.9, 0.2]])  # columns: LANGS (af, am, de)
    run = run_record(k.run_id, k.as_dict(), "sequential", LANGS, ["af-ZA", "am-ET"], m)
    out = reduce.compute_metrics(load.StoreData("mem", [run]), AnalysisOptions(bootstrap=0))
    rec = out["runs"][0]["metrics"]
    assert rec["f1"] == pytest.approx(0.75)  # not (0.6 + 0.9 + 0.2) / 3
    assert rec["per_language"]["de-DE"] == pytest.approx(0.2)  # still reported per language
    assert rec["f1_by_vitality"]["High"] is None  # de-DE is High but was not trained


def test_per_language_cells_follow_the_store_rule():
    # steps listed in another order than languages: step i is languages[i]'s model
    k = key("mono")
    m = np.full((3, 3), nan)
    np.fill_diagonal(m, [0.78, 0.6, 0.72])
    run = run_record(k.run_id, k.as_dict(), "per-language", LANGS, ORDER1, m)
    assert run.expected_cells() == [(0, "af-ZA"), (1, "am-ET"), (2, "de-DE")]
    assert reduce.language_scores(run) == pytest.approx(
        {"af-ZA": 0.78, "am-ET": 0.6, "de-DE": 0.72}
    )
    rec = reduce.compute_metrics(load.StoreData("mem", [run]))["runs"][0]
    assert rec["cells_expected"] == 3 and rec["cells_present"] == 3


def test_bootstrap_units_are_orders():
    # 3 orders x 2 seeds of VANILLA: a CI from 3 units
    runs = []
    for o, R in (("1", R1), ("2", R2), ("3", R1 * 0.9)):
        for seed in (0, 1):
            k = RunKey(method="vanilla", model="xlm-roberta-base", rank=0, order=o, seed=seed)
            order = {"1": ORDER1, "2": ORDER2, "3": ORDER1}[o]
            runs.append(
                run_record(
                    k.run_id,
                    k.as_dict(),
                    "sequential",
                    LANGS,
                    order,
                    to_store_columns(R + 0.01 * seed, order),
                )
            )
    m = reduce.compute_metrics(load.StoreData("mem", runs), AnalysisOptions(bootstrap=500))
    h = group(m, "vanilla")["headline"]["cbt"]
    assert h["n"] == 6 and h["ci_units"] == 3 and h["ci_low"] <= h["mean"] <= h["ci_high"]
    assert m["settings"]["bootstrap"]["min_units"] == 3
