"""report.html from in-memory runs: every table, every run, the problems, no figures needed."""

from __future__ import annotations

from _analysis_runs import small_runs

from hpc_forget.analysis import load, reduce, report, tables
from hpc_forget.analysis.options import AnalysisOptions


def test_report_holds_every_table_and_run(tmp_path):
    data = load.StoreData("mem", small_runs(), problems=["x.h5: damaged <file>"])
    m = reduce.compute_metrics(data, AnalysisOptions(bootstrap=0))
    ts = tables.build_tables(m)
    path = report.write_report(data, m, ts, [], tmp_path)
    assert path == tmp_path / "report.html"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    for t in ts:
        assert f"id='{t.name}'" in text, t.name
    for run in data.runs:
        assert run.run_id in text
    assert "damaged &lt;file&gt;" in text  # problems are listed, escaped
