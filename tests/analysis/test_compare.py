"""Strategies against none (analysis/compare.py): hand-computed values and differences, the
paired bootstrap, the rows that cannot be paired, and the table / figure / report."""

from __future__ import annotations

import numpy as np
import pytest
from _analysis_runs import (
    LANGS,
    ORDER1,
    ORDER2,
    R1,
    R2,
    run_record,
    store_runs,
    to_store_columns,
)

from hpc_forget.analysis import compare, load, reduce, report, tables
from hpc_forget.analysis.options import AnalysisOptions
from hpc_forget.study.planning import RunKey

nan = float("nan")
EWC = "ewc(fisher_examples=200,gamma=1.0,lam=1000.0,variant=online)"
MERGE = "merge(density=0.2,how=linear,scale=1.0,weight=0.5)"

# the strategy's order-aligned R matrices on orders 1 and 2 (the none runs: R1, R2)
S1 = np.array([[0.8, 0.3, 0.2], [0.7, 0.9, 0.4], [0.7, 0.8, 0.6]])
S2 = np.array([[0.7, 0.4, 0.3], [0.7, 0.8, 0.5], [0.7, 0.7, 0.8]])


def _key(method="vanilla", rank=0, order="", seed=0, strategy="none") -> RunKey:
    return RunKey(
        method=method,
        model="xlm-roberta-base",
        rank=rank,
        order=order,
        seed=seed,
        strategy=strategy,
    )


def seq(R, order, o, strategy="none", method="vanilla", rank=0, seed=0):
    k = _key(method, rank, o, seed, strategy)
    return run_record(k.run_id, k.as_dict(), "sequential", LANGS, order, to_store_columns(R, order))


def mono(diag, strategy="none", seed=0):
    k = _key("mono", seed=seed, strategy=strategy)
    if strategy == "none":
        m = np.full((3, 3), nan)
        np.fill_diagonal(m, diag)
        return run_record(k.run_id, k.as_dict(), "per-language", LANGS, LANGS, m)
    return run_record(k.run_id, k.as_dict(), "joint", LANGS, ["merged"], np.array([diag]))


def analyse(runs, **opts):
    return reduce.compute_metrics(load.StoreData("mem", runs), AnalysisOptions(**opts))


def entry(m, strategy=EWC, method="vanilla"):
    return next(
        e
        for e in m["strategy_comparison"]
        if e["key"]["strategy"] == strategy and e["key"]["method"] == method
    )


def two_order_runs():
    # the strategy runs listed in the other order than none's: pairing is by order, not position
    return [
        seq(R1, ORDER1, "1"),
        seq(R2, ORDER2, "2"),
        seq(S2, ORDER2, "2", EWC),
        seq(S1, ORDER1, "1", EWC),
    ]


def test_hand_computed_values_and_differences():
    e = entry(analyse(two_order_runs(), bootstrap=200))
    assert e["none_group"] and e["status"] is None and e["unit"] == "order"
    assert sorted(map(tuple, e["paired"])) == [("1", 0), ("2", 0)] and e["unpaired"] == []
    # by hand (docs/metrics.md; CBT/CFT paper convention, MBT_0 over the seen languages):
    #   none   o1: F1 1.9/3, CBT mean(-.3, -.2) = -.25, CFT mean(.25, .4) = .325,
    #              A = [.8, .75, 1.9/3] -> MBT_0 = (1.9/3 - .8) / 2
    #          o2: F1 .7, CBT -.15, CFT .425, A = [.7, .7, .7] -> MBT_0 = 0
    #   ewc    o1: F1 .7, CBT mean(-.1, -.1) = -.1, CFT .325, A = [.8, .8, .7] -> -.05
    #          o2: F1 2.2/3, CBT mean(0, -.1) = -.05, CFT .425, A = [.7, .75, 2.2/3]
    #              -> MBT_0 = (2.2/3 - .7) / 2
    want = {
        "f1": ((0.7 + 2.2 / 3) / 2, (1.9 / 3 + 0.7) / 2),
        "cbt": ((-0.1 - 0.05) / 2, (-0.25 - 0.15) / 2),
        "cft": (0.375, 0.375),
        "mbt_0": ((-0.05 + (2.2 / 3 - 0.7) / 2) / 2, ((1.9 / 3 - 0.8) / 2 + 0.0) / 2),
    }
    diffs = {
        "f1": [0.7 - 1.9 / 3, 2.2 / 3 - 0.7],
        "cbt": [0.15, 0.10],
        "cft": [0.0, 0.0],
        "mbt_0": [-0.05 - (1.9 / 3 - 0.8) / 2, (2.2 / 3 - 0.7) / 2],
    }
    assert list(e["metrics"]) == [name for name, _ in compare.COMPARED]
    for name, (s, n) in want.items():
        c = e["metrics"][name]
        assert c["status"] is None and c["pairs"] == 2, name
        assert c["strategy"]["mean"] == pytest.approx(s), name
        assert c["none"]["mean"] == pytest.approx(n), name
        assert c["difference"]["mean"] == pytest.approx(np.mean(diffs[name]), abs=1e-12), name
        assert c["difference"]["std"] == pytest.approx(np.std(diffs[name], ddof=1), abs=1e-12)
        # two orders: too few units for an interval, and it says so
        assert c["difference"]["ci_low"] is None and c["difference"]["ci_units"] == 2
    assert e["metrics"]["cbt"]["difference"]["mean"] == pytest.approx(0.125)
    # the none side equals Table 2 / the headline of the none group (same runs, same values)
    g = next(g for g in analyse(two_order_runs())["groups"] if g["id"] == e["none_group"])
    assert g["headline"]["cbt"]["mean"] == pytest.approx(want["cbt"][1])


def test_convention_follows_the_analysis():
    e = entry(analyse(two_order_runs(), convention="gem", bootstrap=0))
    # gem divides by T and includes the last task (term 0): CBT o1 = (-.3 - .2 + 0) / 3
    assert e["metrics"]["cbt"]["none"]["mean"] == pytest.approx(((-0.5) / 3 + (-0.3) / 3) / 2)


def _shifted_runs(shift, orders=4):
    """``orders`` random 3 x 3 orders; the strategy's R is none's plus ``shift`` (per order)."""
    rng = np.random.default_rng(7)
    runs = []
    for k in range(orders):
        order = [ORDER1, ORDER2][k % 2]
        R = rng.uniform(0.3, 0.7, size=(3, 3))
        runs.append(seq(R, order, str(k + 1)))
        runs.append(seq(R + shift[k], order, str(k + 1), EWC))
    return runs


def test_paired_ci_zero_width_when_every_difference_is_equal():
    e = entry(analyse(_shifted_runs([0.05] * 4), bootstrap=500, seed=3))
    f1 = e["metrics"]["f1"]
    d = f1["difference"]
    assert d["mean"] == pytest.approx(0.05) and d["ci_units"] == 4
    assert d["ci_low"] == d["ci_high"] == pytest.approx(0.05)
    # the values themselves vary over orders: their own CIs are not zero-width
    assert f1["strategy"]["ci_high"] - f1["strategy"]["ci_low"] > 0.01
    # CBT: the shift cancels in R[T-1, i] - R[i, i]
    assert e["metrics"]["cbt"]["difference"]["ci_low"] == pytest.approx(0.0, abs=1e-12)
    assert e["metrics"]["cbt"]["difference"]["ci_high"] == pytest.approx(0.0, abs=1e-12)


def test_paired_ci_contains_the_estimate_and_is_deterministic():
    shift = list(np.random.default_rng(0).normal(0.03, 0.03, size=6))
    a = entry(analyse(_shifted_runs(shift, 6), bootstrap=300, seed=1))
    b = entry(analyse(_shifted_runs(shift, 6), bootstrap=300, seed=1))
    c = entry(analyse(_shifted_runs(shift, 6), bootstrap=300, seed=2))
    for name in ("f1", "cft"):
        d = a["metrics"][name]["difference"]
        assert d["mean"] == pytest.approx(np.mean(shift))
        assert d["ci_low"] < d["mean"] < d["ci_high"]
        assert d == b["metrics"][name]["difference"]
    assert a["metrics"]["f1"]["difference"] != c["metrics"]["f1"]["difference"]  # the seed counts
    # paired: narrower than the unpaired difference of the two values' intervals
    f1 = a["metrics"]["f1"]
    d = f1["difference"]
    assert d["ci_high"] - d["ci_low"] < f1["strategy"]["ci_high"] - f1["strategy"]["ci_low"]


def test_rows_that_cannot_be_paired_say_why():
    runs = two_order_runs() + [
        seq(S1, ORDER1, "1", EWC, "shared_lora", 8),  # no none SHARED LoRA r=8 at all
        seq(S1, ORDER1, "3", "replay(k=20)"),  # a none VANILLA, but not on order 3
        seq(S1, ORDER1, "1", "l2sp(anchor=previous,lam=0.01)", seed=5),  # none has seed 0 only
    ]
    m = analyse(runs, bootstrap=0)
    lora = entry(m, EWC, "shared_lora")
    assert lora["status"] == compare.NO_NONE_GROUP and lora["none_group"] is None
    f1 = lora["metrics"]["f1"]
    assert f1["status"] == compare.NO_NONE_GROUP and f1["difference"] is None
    assert f1["strategy"]["mean"] == pytest.approx(0.7)  # its own value is still reported
    rep = entry(m, "replay(k=20)")
    assert rep["status"] == "no none run on the same orders"
    assert rep["unpaired"] == ["order 3 seed 0: no none run"]
    assert all(c["difference"] is None for c in rep["metrics"].values())
    l2 = entry(m, "l2sp(anchor=previous,lam=0.01)")
    assert l2["status"] == compare.NO_SAME_SEEDS
    t = tables.strategy_comparison_table(m)
    notes = [r[-1] for r in t.rows]
    assert notes.count(compare.NO_NONE_GROUP) == 4 and notes.count(compare.NO_SAME_ORDERS) == 4
    rows = [r for r in t.rows if r[-1] == compare.NO_SAME_ORDERS]
    assert all(r[3] == r[4] == "-" and r[5] == "0" for r in rows)  # never 0


def test_partial_pairing_is_noted():
    runs = [seq(R1, ORDER1, "1"), seq(S1, ORDER1, "1", EWC), seq(S2, ORDER2, "2", EWC)]
    m = analyse(runs, bootstrap=0)
    e = entry(m)
    assert e["status"] is None and e["metrics"]["f1"]["pairs"] == 1
    assert e["unpaired"] == ["order 2 seed 0: no none run"]
    assert e["metrics"]["f1"]["strategy"]["mean"] == pytest.approx(0.7)  # the paired run only
    row = tables.strategy_comparison_table(m).rows[0]
    assert row[-1] == "unpaired: order 2 seed 0: no none run"


def test_another_sequence_under_the_same_order_name_is_not_paired():
    m = analyse([seq(R1, ORDER1, "1"), seq(S2, ORDER2, "1", EWC)], bootstrap=0)
    e = entry(m)
    assert e["status"] == compare.NO_SAME_ORDERS
    assert e["unpaired"] == ["order 1 seed 0: the none run trained another sequence"]


def test_merged_per_language_method_against_its_own_models():
    runs = [mono([0.78, 0.6, 0.72]), mono([0.7, 0.5, 0.72], MERGE)]
    m = analyse(runs, bootstrap=300, seed=0)
    e = entry(m, MERGE, "mono")
    assert e["unit"] == "language" and e["kind"] == "joint" and e["paired"] == [0]
    f1 = e["metrics"]["f1"]
    assert f1["pairs"] == 3
    assert f1["strategy"]["mean"] == pytest.approx(1.92 / 3)
    assert f1["none"]["mean"] == pytest.approx(2.1 / 3)
    d = f1["difference"]
    assert d["mean"] == pytest.approx(-0.06) and d["ci_units"] == 3
    assert d["ci_low"] <= d["mean"] <= d["ci_high"]
    assert -0.1 - 1e-12 <= d["ci_low"] and d["ci_high"] <= 1e-12  # within [min, max] of the pairs
    for name in ("cbt", "cft", "mbt_0"):
        assert e["metrics"][name]["status"] == compare.NOT_SEQUENTIAL
        assert e["metrics"][name]["strategy"] is None
    row = next(r for r in tables.strategy_comparison_table(m).rows if r[1].startswith("CBT"))
    assert row[2:5] == ["-", "-", "-"] and row[-1].startswith("n/a")


def test_no_strategy_no_comparison(metrics):
    assert metrics["strategy_comparison"] == []
    assert "strategy_comparison" not in {t.name for t in tables.build_tables(metrics)}
    # a metrics.json written before the comparison existed: computed from its runs
    m = analyse(two_order_runs(), bootstrap=0)
    old = {k: v for k, v in m.items() if k != "strategy_comparison"}
    assert tables.comparison_entries(old) == m["strategy_comparison"]


def several_strategies():
    return two_order_runs() + [
        seq(S1 - 0.1, ORDER1, "1", "replay(k=20)"),
        seq(S2 - 0.1, ORDER2, "2", "replay(k=20)"),
        seq(S1, ORDER1, "1", EWC, "shared_lora", 8),
        mono([0.78, 0.6, 0.72]),
        mono([0.7, 0.5, 0.72], MERGE),
    ]


def test_table_figure_and_report(tmp_path):
    from hpc_forget.analysis import figures

    data = load.StoreData("mem", several_strategies())
    m = reduce.compute_metrics(data, AnalysisOptions(bootstrap=50))
    ts = tables.write_tables(m, tmp_path)
    t = next(t for t in ts if t.name == "strategy_comparison")
    assert len(t.rows) == 4 * 4  # four strategy groups x four metrics
    ewc_f1 = next(
        r for r in t.rows if r[0] == f"VANILLA [{EWC}]" and r[1] == "final average F1 (%)"
    )
    assert ewc_f1[2].startswith("71.67 ") and ewc_f1[3].startswith("66.67 ")
    assert ewc_f1[4] == "5.00 (2 units, no CI)" and ewc_f1[5] == "2 (orders)"
    for ext in ("csv", "md", "tex"):
        assert (tmp_path / "tables" / f"strategy_comparison.{ext}").is_file()
    md = (tmp_path / "tables" / "strategy_comparison.md").read_text(encoding="utf-8")
    assert "no none run of the same method" in md
    figs = figures.write_figures(data, m, tmp_path, workers=1, fig7_png_limit=1)
    fig = next(f for f in figs if f.name == "strategy_comparison")
    assert fig.png.is_file() and fig.pdf.is_file()
    path = report.write_report(data, m, ts, figs, tmp_path)
    text = path.read_text(encoding="utf-8")
    assert "<h2 id='strategies'>Strategies against none</h2>" in text
    assert "id='strategy_comparison'" in text and "alt='strategy_comparison'" in text
    assert text.count("id='strategy_comparison'") == 2  # the table and the figure, once each
    # a later analysis without strategies removes the earlier comparison's files
    none_only = load.StoreData("mem", two_order_runs()[:2])
    plain = reduce.compute_metrics(none_only, AnalysisOptions(bootstrap=0))
    tables.write_tables(plain, tmp_path)
    figs = figures.write_figures(none_only, plain, tmp_path, workers=1)
    assert not (tmp_path / "tables" / "strategy_comparison.md").exists()
    assert not (tmp_path / "figures" / "strategy_comparison.png").exists()
    assert "strategy_comparison" not in {f.name for f in figs}
    text = report.write_report(none_only, plain, tables.build_tables(plain), figs, tmp_path)
    text = text.read_text(encoding="utf-8")
    assert "Strategies against none" not in text


LONG_FREEZE = (
    "freeze(k=2,listed=" + "+".join(f"encoder.layer.{i}" for i in range(12)) + ",part=listed)"
)


@pytest.mark.filterwarnings("error:constrained_layout not applied")  # long labels are cut
def test_several_strategies_through_a_store_and_every_table_and_figure(tmp_path):
    """Each strategy is its own row / series in every table and figure; nothing crashes
    (a long canonical text, a merged per-language run, a strategy with no none pair)."""
    pytest.importorskip("hpc_forget.store.store")
    from hpc_forget.analysis import entry

    runs = several_strategies() + [
        seq(S1, ORDER1, "1", LONG_FREEZE),
        seq(S2, ORDER2, "2", LONG_FREEZE),
    ]
    store_runs(tmp_path / "results", runs)
    out = tmp_path / "analysis"
    m = entry.analyze(tmp_path / "results", out, AnalysisOptions(bootstrap=20), workers=1)
    groups = m["groups"]
    assert len(groups) == 7 and len({g["id"] for g in groups}) == 7
    assert all(len(g["id"]) <= reduce.GROUP_ID_MAX for g in groups)
    labels = {g["label"] for g in groups}
    assert len(labels) == 7 and f"VANILLA [{LONG_FREEZE}]" in labels
    ts = {t.name: t for t in tables.build_tables(m)}
    seq_labels = {g["label"] for g in groups if g["kind"] == "sequential"}
    # Table 1 and 2: one row per group (rank-0 rows by label, LoRA rows under a section)
    t1 = [r[0] for i, r in enumerate(ts["table1"].rows) if i not in ts["table1"].section_rows]
    assert len(t1) == 7
    assert {x for x in t1 if not x.startswith("r = ")} == {
        g["label"] for g in groups if not g["key"]["rank"]
    }
    t2 = [r[0] for i, r in enumerate(ts["table2"].rows) if i not in ts["table2"].section_rows]
    assert len(t2) == len(seq_labels)
    assert {r[1] for r in ts["conventions"].rows} == seq_labels
    assert set(ts["per_language_f1"].columns[6:]) == labels
    for name in ("headline", "groupings"):
        assert {r[0] for r in ts[name].rows} == {g["id"] for g in groups}, name
    for name in ("hop_transfer", "per_language_transfer"):
        assert {r[0] for r in ts[name].rows} == {
            g["id"] for g in groups if g["kind"] == "sequential"
        }, name
    compared = {r[0] for r in ts["strategy_comparison"].rows}
    assert compared == {g["label"] for g in groups if g["key"]["strategy"] != "none"}
    figs = out / "figures"
    for g in groups:
        if g["kind"] == "sequential":
            for prefix in ("fig3_change", "fig5_mbt", "fig6_mft"):
                assert (figs / f"{prefix}_{g['id']}.png").is_file(), (prefix, g["id"])
    assert (figs / "strategy_comparison.png").is_file()
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Strategies against none" in html
    for lab in labels:
        assert lab.replace("&", "&amp;") in html
