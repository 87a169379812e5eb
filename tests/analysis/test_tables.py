"""Tables from the metrics of in-memory runs: layout, Markdown, LaTeX."""

from __future__ import annotations

import numpy as np
import pytest
from _analysis_runs import group, small_runs

from hpc_forget.analysis import load, reduce, tables
from hpc_forget.analysis.options import AnalysisOptions
from hpc_forget.errors import AnalysisError


def test_table1_paper_layout(metrics):
    t = tables.table1(metrics)
    assert t.columns == ["Method", "Params (M)", "F1 (%)", "Low", "Mid", "High"]
    labels = [r[0] for r in t.rows]
    assert labels == ["MULTI", "MONO", "VANILLA", "SHARED LoRA", "r = 8"]
    assert t.section_rows == {3}
    vanilla = t.rows[2]
    assert vanilla[2] == "66.67 ± 4.71"
    assert vanilla[3] == "65.00 ± 7.07"  # Low: am-ET 0.7 / 0.6
    assert t.rows[4][2] == "-"  # the incomplete run has no final F1
    md = tables.table_markdown(t)
    assert "| VANILLA | - | 66.67 ± 4.71 |" in md
    tex = tables.table_latex(t)
    assert r"66.67 $\pm$ 4.71" in tex and r"\multicolumn{6}{l}{\textsc{SHARED LoRA}}" in tex
    assert r"$r = 8$" in tex and r"F1 (\%)" in tex


def test_table2_and_headline(metrics):
    t = tables.table2(metrics)
    rows = {r[0]: r for r in t.rows}
    assert rows["VANILLA"][1:] == ["-0.200 ± 0.071", "0.375 ± 0.071"]
    assert rows["r = 8"][1] == "-" and rows["r = 8"][2] == "0.325"
    h = tables.headline_table(metrics)
    v = [r for r in h.rows if r[0] == group(metrics, "vanilla")["id"] and r[1] == "cbt"][0]
    assert v[2:4] == ["-0.200", "0.071"] and v[4] == "- (2 units)" and v[5] == "2 / 2"


def test_hop_scalars_in_metrics_and_table(metrics):
    v = group(metrics, "vanilla")
    # per run, 1/|L| sum over the languages: seen reading, A1 = [0.8, 0.75, 1.9/3],
    # A2 = [0.7, 0.7, 0.7]; MFT_0 = mean(A_1 - A_0, A_2 - A_1)
    r1 = (0.75 - 0.8 + 1.9 / 3 - 0.75) / 2
    r2 = 0.0
    mft0 = v["hop_scalars"]["mft"][0]
    assert mft0["mean"] == pytest.approx((r1 + r2) / 2) and mft0["n"] == 2
    assert v["hop_scalars"]["mft"][1]["mean"] == pytest.approx((1.9 / 3 - 0.8 + 0.0) / 2)
    assert v["hop_scalars"]["mbt"][2]["mean"] is None  # no window of 3 steps back
    run = next(r for r in metrics["runs"] if r["group"] == v["id"] and r["key"]["order"] == "1")
    assert run["metrics"]["mft_h"][0] == pytest.approx(r1)
    t = tables.hop_table(metrics)
    first = next(r for r in t.rows if r[0] == v["id"] and r[1] == "0")
    assert first[2] == f"{100 * (r1 + r2) / 2:.2f} ± {100 * np.std([r1, r2], ddof=1):.2f}"
    assert first[3] == "- (2 units)"
    assert metrics["settings"]["hop_p_set"] == "seen" and metrics["settings"]["p_set"] == "common"
    common = reduce.compute_metrics(
        load.StoreData("mem", small_runs()), AnalysisOptions(hop_p_set="common")
    )
    assert group(common, "vanilla")["mbt"]["af-ZA"]["by_hop"][0] == pytest.approx(-0.15)
    with pytest.raises(AnalysisError, match="--hop-p-set 'x'"):
        reduce.compute_metrics(load.StoreData("mem", []), AnalysisOptions(hop_p_set="x"))
