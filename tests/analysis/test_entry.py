"""analyze() end to end on a small store written with the real Store writer API (metrics.json,
tables, figures, report.html), the analysis/ scripts and `hpc-forget analyze`."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from _analysis_runs import small_runs, store_runs, two_settings_runs

from hpc_forget.analysis import entry, reduce
from hpc_forget.analysis.options import AnalysisOptions


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_analyze_end_to_end(store_path, tmp_path, workers):
    out = tmp_path / "analysis"
    m = entry.analyze(
        store_path, out, AnalysisOptions(bootstrap=100), params=lambda k, n: 1.5, workers=workers
    )
    assert (out / "metrics.json").is_file() and (out / "report.html").is_file()
    for name in (
        "table1",
        "table2",
        "headline",
        "conventions",
        "groupings",
        "per_language_f1",
        "missing",
    ):
        for ext in ("csv", "md", "tex"):
            assert (out / "tables" / f"{name}.{ext}").is_file(), (name, ext)
    figs = out / "figures"
    pngs = sorted(p.name for p in figs.glob("*.png"))
    pdfs = sorted(p.name for p in figs.glob("*.pdf"))
    for prefix in ("fig2", "fig3", "fig4", "fig5", "fig6", "fig7"):
        assert any(p.startswith(prefix) for p in pngs), prefix
        assert any(p.startswith(prefix) for p in pdfs), prefix
    assert "fig7_R_all_runs.pdf" in pdfs
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == len(pngs)
    assert "<img" in html and "src='figures/" not in html  # self-contained
    for rid in (r.run_id for r in small_runs()):
        assert rid in html
    assert "abc123" in html and "Table 1" in html and "Table 2" in html
    assert "Missing cells" in html
    # metrics.json: strict JSON, missing cells null (never 0), params attached
    mj = json.loads((out / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert mj == json.loads(json.dumps(m))
    inc = next(r for r in mj["runs"] if r["key"]["method"] == "shared_lora")
    assert set(inc["metrics"]["per_language"].values()) == {None}
    assert all(g["params_m"] == 1.5 for g in mj["groups"])
    assert entry.read_metrics(out / "metrics.json")["schema_version"] == reduce.SCHEMA_VERSION
    table1 = (out / "tables" / "table1.md").read_text()
    assert "| VANILLA | 1.50 | 66.67 ± 4.71 |" in table1


def _script(name: str):
    path = Path(__file__).resolve().parents[2] / "analysis" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"analysis_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_analysis_scripts(store_path, tmp_path, capsys):
    out = tmp_path / "o"
    assert _script("metrics").main([str(store_path), "--out", str(out), "--bootstrap", "50"]) == 0
    assert (out / "metrics.json").is_file()
    assert _script("tables").main([str(store_path), "--out", str(out), "--no-params"]) == 0
    assert (out / "tables" / "table2.tex").is_file()
    assert _script("figures").main([str(store_path), "--out", str(out), "--workers", "1"]) == 0
    assert (out / "figures" / "fig2_avg_f1.png").is_file()
    capsys.readouterr()
    assert _script("report").main([str(tmp_path / "missing"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "no such store" in err and "\n" not in err


ANALYZE_NO_TORCH = """
import sys
from hpc_forget.cli import cli
try:
    cli(["analyze", sys.argv[1], "--out", sys.argv[2], "--bootstrap", "20", "--workers", "1"])
except SystemExit as e:
    code = e.code
else:
    code = 0
heavy = [m for m in ("torch", "transformers", "peft", "accelerate") if m in sys.modules]
print("HEAVY", heavy, "CODE", code)
"""


def test_analyze_cli_imports_no_torch_and_says_what_it_did(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "results"
    store_runs(path, two_settings_runs(), config=lambda run: {})
    # a damaged step file: skipped, and said so
    step_files = sorted(path.rglob("*.h5"))
    step_files[-1].write_bytes(b"not hdf5")
    out = tmp_path / "analysis"
    p = subprocess.run(
        [sys.executable, "-c", ANALYZE_NO_TORCH, str(path), str(out)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=120,
    )
    assert "HEAVY [] CODE 0" in p.stdout, p.stdout + p.stderr
    assert f"open {out / 'report.html'}" in p.stdout
    err = [x for x in p.stderr.splitlines() if x.strip()]
    assert any(x.startswith("note: the store holds runs of 2 settings") for x in err), err
    assert any(x.startswith("warning: skipped 1 damaged") for x in err), err
    mj = json.loads((out / "metrics.json").read_text())
    assert len([g for g in mj["groups"] if g["key"]["method"] == "vanilla"]) == 2
    assert all(g["params_m"] is not None for g in mj["groups"])  # arithmetic, no network
