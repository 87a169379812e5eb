"""Reporting: metrics of in-memory runs (hand-checked), tables, and analyze() end to end on a
small store written with the real Store writer API."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from hpc_forget.analysis import entry, figures, load, reduce, tables
from hpc_forget.errors import AnalysisError
from hpc_forget.store.store import RunRecord
from hpc_forget.study.planning import RunKey

nan = float("nan")
LANGS = ["af-ZA", "am-ET", "de-DE"]  # store columns; Mid / Low / High vitality
ORDER1 = ["de-DE", "af-ZA", "am-ET"]
ORDER2 = ["am-ET", "de-DE", "af-ZA"]
# order-aligned R matrices (rows: after step i, columns: training order)
R1 = np.array([[0.8, 0.3, 0.2], [0.6, 0.9, 0.4], [0.5, 0.7, 0.7]])
R2 = np.array([[0.7, 0.4, 0.3], [0.6, 0.8, 0.5], [0.6, 0.6, 0.9]])


def to_store_columns(R: np.ndarray, order: list[str]) -> np.ndarray:
    """The store's steps x languages matrix (columns in LANGS order) of an aligned R."""
    m = np.full((len(order), len(LANGS)), nan)
    for j, lang in enumerate(order):
        m[:, LANGS.index(lang)] = R[:, j]
    return m


def run_record(run_id, key, kind, languages, steps, R, *, config=None, settings=None) -> RunRecord:
    """An in-memory run, as the store's reader gives it."""
    return RunRecord(
        run_id=run_id,
        key=key,
        kind=kind,
        languages=list(languages),
        steps=list(steps),
        labels=[],
        config=dict(config or {}),
        settings=dict(settings or {}),
        R=np.asarray(R, dtype=float),
    )


def key(method: str, rank: int = 0, order: str = "", seed: int = 0) -> RunKey:
    return RunKey(method=method, model="xlm-roberta-base", rank=rank, order=order, seed=seed)


def seq_run(R, order, o, method="vanilla", rank=0) -> RunRecord:
    k = key(method, rank, o)
    return run_record(k.run_id, k.as_dict(), "sequential", LANGS, order, to_store_columns(R, order))


def small_runs() -> list[RunRecord]:
    runs = [seq_run(R1, ORDER1, "1"), seq_run(R2, ORDER2, "2")]
    k = key("multi")
    runs.append(
        run_record(k.run_id, k.as_dict(), "joint", LANGS, ["all"], np.array([[0.8, 0.7, 0.75]]))
    )
    k = key("mono")
    mono = np.full((3, 3), nan)
    np.fill_diagonal(mono, [0.78, 0.6, 0.72])
    runs.append(run_record(k.run_id, k.as_dict(), "per-language", LANGS, LANGS, mono))
    inc = seq_run(R1, ORDER1, "1", "shared_lora", 8)  # last step not written yet
    inc.R[2, :] = nan
    runs.append(inc)
    return runs


@pytest.fixture(scope="module")
def metrics() -> dict:
    return reduce.compute_metrics(load.StoreData("mem", small_runs()), bootstrap=200, seed=0)


def group(metrics, method, rank=0):
    return next(
        g for g in metrics["groups"] if g["key"]["method"] == method and g["key"]["rank"] == rank
    )


# ---------------------------------------------------------------------------- metrics


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
        vitality="Top=5,Rest=0-4",
        convention="gem",
        bootstrap=0,
    )
    v = group(m, "vanilla")
    assert set(k for k in v["headline"] if k.startswith("f1_")) == {"f1_Top", "f1_Rest"}
    assert v["headline"]["cbt"]["mean"] == pytest.approx((-0.5 / 3 - 0.1) / 2)
    assert v["headline"]["cbt"]["ci_low"] is None  # bootstrap=0: no CI
    assert tables.table1(m).columns[-2:] == ["Top", "Rest"]
    with pytest.raises(AnalysisError, match="--vitality"):
        reduce.compute_metrics(load.StoreData("mem", []), vitality="High=4-5")
    with pytest.raises(AnalysisError, match="--convention 'x'"):
        reduce.compute_metrics(load.StoreData("mem", []), convention="x")


def test_bootstrap_determinism():
    data = load.StoreData("mem", small_runs())
    a = reduce.compute_metrics(data, bootstrap=300, seed=5)
    b = reduce.compute_metrics(data, bootstrap=300, seed=5)
    c = reduce.compute_metrics(data, bootstrap=300, seed=6)
    ha, hb, hc = (group(x, "vanilla")["headline"]["cft"] for x in (a, b, c))
    assert ha == hb
    assert a["groups"] == b["groups"]
    assert ha["mean"] == hc["mean"]


# ---------------------------------------------------------------------------- tables


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
    assert reduce.default_params({"model": "tiny", "method": "multi", "rank": 0}, 3) is None


@pytest.mark.slow
def test_preset_params_agree_with_models():
    from hpc_forget.models import models

    for row in models.params_table("xlm-roberta-base", 7, (8, 32)):
        key = {"model": "xlm-roberta-base", "method": row.method, "rank": row.rank}
        assert reduce.default_params(key, 7) == pytest.approx(row.paper / 1e6), row


# ---------------------------------------------------------------------------- end to end


def write_store(path: Path) -> list[str]:
    """The small_runs() grid written with the Store writer API."""
    from hpc_forget.store.store import Store

    store = Store(path)
    ids = []
    for run in small_runs():
        store.put_run(
            run.run_id,
            key=run.key,
            kind=run.kind,
            languages=run.languages,
            steps=run.steps,
            labels=["O", "B-date", "I-date"],
            config={"test": True, "method": run.key["method"]},
        )
        for i in range(run.R.shape[0]):
            scores = {
                lang: float(run.R[i, j])
                for j, lang in enumerate(run.languages)
                if not math.isnan(run.R[i, j])
            }
            if scores:
                store.put_step(
                    run.run_id,
                    i,
                    scores=scores,
                    dev_curve=[0.5, 0.6],
                    meta={"epochs_run": 2},
                    provenance={"git_commit": "abc123", "host": "testhost"},
                )
        ids.append(run.run_id)
    return ids


@pytest.fixture(scope="module")
def store_path(tmp_path_factory) -> Path:
    pytest.importorskip("hpc_forget.store.store")
    path = tmp_path_factory.mktemp("store") / "results"
    write_store(path)
    return path


def test_load_store_reads_what_was_written(store_path):
    data = load.load_store(store_path)
    assert len(data.runs) == 5 and data.problems == []
    by_method = {(r.key["method"], r.key["rank"], r.key["order"]): r for r in data.runs}
    v1 = by_method[("vanilla", 0, "1")]
    np.testing.assert_allclose(v1.R, to_store_columns(R1, ORDER1))
    inc = by_method[("shared_lora", 8, "1")]
    assert inc.missing() == [(2, lang) for lang in LANGS]
    assert v1.provenance[0]["git_commit"] == "abc123"
    with pytest.raises(AnalysisError, match="no such store"):
        load.load_store(store_path.parent / "nope")


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_analyze_end_to_end(store_path, tmp_path, workers):
    out = tmp_path / "analysis"
    m = entry.analyze(store_path, out, bootstrap=100, params=lambda k, n: 1.5, workers=workers)
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


_PARENT_PID = None


def _dying_figure_job(*args):
    """A figure job that kills the worker process it runs in (module level: picklable)."""
    import os

    if os.getpid() != _PARENT_PID:
        os._exit(3)
    return _REAL_FIGURE_JOB(*args)


_REAL_FIGURE_JOB = figures._figure_job


@pytest.mark.slow
def test_a_dead_figure_worker_falls_back_to_drawing_in_process(tmp_path, monkeypatch):
    import os
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("relies on forked workers")
    monkeypatch.setattr(sys.modules[__name__], "_PARENT_PID", os.getpid())
    monkeypatch.setattr(figures, "_figure_job", _dying_figure_job)
    data = load.StoreData("mem", small_runs())
    m = reduce.compute_metrics(data, bootstrap=0)
    figs = figures.write_figures(data, m, tmp_path, workers=2)
    assert {f.name[:4] for f in figs} == {"fig2", "fig3", "fig4", "fig5", "fig6", "fig7"}


# ---------------------------------------------------------------------------- issue #8


SETTINGS_A = {"data": {"max_train": 800}, "train": {"lr": 1e-5, "max_epochs_full": 10}}
SETTINGS_B = {"data": {"max_train": 400}, "train": {"lr": 1e-5, "max_epochs_full": 5}}


def with_settings(run: RunRecord, settings: dict, shift: float = 0.0) -> RunRecord:
    from hpc_forget.study.identity import settings_digest

    k = dict(run.key)
    k["settings"] = settings_digest(settings)
    rk = RunKey(**k)
    return run_record(
        rk.run_id,
        rk.as_dict(),
        run.kind,
        run.languages,
        run.steps,
        run.R + shift,
        settings=settings,
    )


def two_settings_runs() -> list[RunRecord]:
    a = [with_settings(r, SETTINGS_A) for r in small_runs()[:3]]
    b = [with_settings(r, SETTINGS_B, -0.1) for r in small_runs()[:2]]  # vanilla only
    return a + b


def test_runs_of_different_settings_are_never_averaged():
    m = reduce.compute_metrics(load.StoreData("mem", two_settings_runs()), bootstrap=0)
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
    out = reduce.compute_metrics(load.StoreData("mem", [run]), bootstrap=0)
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
    common = reduce.compute_metrics(load.StoreData("mem", small_runs()), hop_p_set="common")
    assert group(common, "vanilla")["mbt"]["af-ZA"]["by_hop"][0] == pytest.approx(-0.15)
    with pytest.raises(AnalysisError, match="--hop-p-set 'x'"):
        reduce.compute_metrics(load.StoreData("mem", []), hop_p_set="x")


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
    m = reduce.compute_metrics(load.StoreData("mem", runs), bootstrap=500)
    h = group(m, "vanilla")["headline"]["cbt"]
    assert h["n"] == 6 and h["ci_units"] == 3 and h["ci_low"] <= h["mean"] <= h["ci_high"]
    assert m["settings"]["bootstrap"]["min_units"] == 3


def test_fig7_prints_values_and_fig2_counts_whole_languages(tmp_path, monkeypatch):
    from matplotlib.ticker import MaxNLocator

    data = load.StoreData("mem", small_runs()[:1])
    m = reduce.compute_metrics(data, bootstrap=0)
    run, R, label = figures._fig7_runs(data, m)[0]
    hm = figures._Heatmap(
        (3, 3),
        (4, 4),
        xlabel="x",
        ylabel="y",
        cbar="c",
        margins=dict.fromkeys(("left", "bottom", "right", "top"), 0.5),
    )
    hm.draw(R * 100, run.steps, run.steps, label, 0, 100, annotate="{:.0f}")
    assert sorted(t.get_text() for t in hm.texts) == sorted(f"{v * 100:.0f}" for v in R.flat)
    hm.draw(R * 100, run.steps, run.steps, label, 0, 100)  # the next panel: no stale values
    assert hm.texts == [] and not hm.ax.texts
    figs = figures.fig7(data, m, tmp_path, pdf=False)
    assert figs and figures.FIG7_ANNOTATE_MAX_T == 16
    saved = {}
    real_save = figures._save

    def spy(fig, *a, **k):
        saved["locator"] = fig.axes[0].xaxis.get_major_locator()
        return real_save(fig, *a, **k)

    monkeypatch.setattr(figures, "_save", spy)
    assert figures.fig2(m, tmp_path)[0].png.is_file()
    assert isinstance(saved["locator"], MaxNLocator)


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

    from hpc_forget.store.store import Store

    path = tmp_path / "results"
    store = Store(path)
    for run in two_settings_runs():
        store.put_run(
            run.run_id,
            key=run.key,
            kind=run.kind,
            languages=run.languages,
            steps=run.steps,
            labels=["O"],
            config={},
            settings=run.settings,
        )
        for i in range(run.R.shape[0]):
            scores = {
                lang: float(v)
                for lang, v in zip(run.languages, run.R[i], strict=True)
                if not np.isnan(v)
            }
            store.put_step(run.run_id, i, scores=scores, dev_curve=[], meta={}, provenance={})
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
