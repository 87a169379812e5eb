"""summary.format_summary: what `hpc-forget run` prints, on small stores written with the
Store writer API (no training)."""

from __future__ import annotations

import math
import shlex

import numpy as np
import pytest

from hpc_forget.analysis.summary import format_summary
from hpc_forget.errors import StoreError
from hpc_forget.store.store import Store
from hpc_forget.study.identity import settings_digest
from hpc_forget.study.planning import RunKey

nan = float("nan")
LANGS = ["af-ZA", "de-DE"]


def put(store: Store, method: str, kind: str, steps, matrix, *, order="", settings=None, seed=0):
    settings = settings if settings is not None else {"data": {"max_train": 800}}
    key = RunKey(
        method=method,
        model="xlm-roberta-base",
        rank=0,
        order=order,
        seed=seed,
        settings=settings_digest(settings),
    )
    store.put_run(
        key.run_id,
        key=key.as_dict(),
        kind=kind,
        languages=LANGS,
        steps=list(steps),
        labels=["O"],
        config={},
        settings=settings,
    )
    m = np.asarray(matrix, dtype=float)
    for i in range(m.shape[0]):
        scores = {lang: float(m[i, j]) for j, lang in enumerate(LANGS) if not math.isnan(m[i, j])}
        if scores:
            store.put_step(key.run_id, i, scores=scores, dev_curve=[0.5], meta={}, provenance={})
    return key.run_id


def row(text: str, start: str) -> list[str]:
    line = next(x for x in text.splitlines() if x.startswith(start))
    return line.split("]", 1)[1].split()


def test_no_runs(tmp_path):
    store = Store(tmp_path / "s")
    put(store, "multi", "joint", ["all"], [[0.8, 0.8]])
    assert format_summary(store, set()) == "the store holds no runs yet"


def test_f1_table_and_r_matrix(tmp_path):
    store = Store(tmp_path / "s")
    put(store, "vanilla", "sequential", ["de-DE", "af-ZA"], [[0.1, 0.8], [0.7, 0.6]], order="1")
    put(store, "multi", "joint", ["all"], [[0.75, nan]])
    # per-language: step i is languages[i]'s own model (the store's rule)
    put(store, "mono", "per-language", LANGS, [[0.5, nan], [nan, 0.9]])
    text = format_summary(store)
    assert row(text, "VANILLA order 1") == ["70.00", "60.00", "65.00"]
    assert row(text, "MULTI") == ["75.00", "-", "-"]  # avg only when every language is there
    assert row(text, "MONO") == ["50.00", "90.00", "70.00"]
    assert "R matrix of VANILLA order 1 [xlm-roberta-base, seed 0]" in text
    assert " 1 de-DE       10.00  80.00" in text
    assert text.endswith("3 runs; 1 expected cells missing")
    assert "data.max_train" not in text  # one settings per cell: no settings label


def test_runs_of_other_settings_are_rows_of_their_own(tmp_path):
    store = Store(tmp_path / "s")
    a = {"data": {"max_train": 800}, "train": {"lr": 1e-5}}
    b = {"data": {"max_train": 400}, "train": {"lr": 1e-5}}
    put(store, "multi", "joint", ["all"], [[0.8, 0.8]], settings=a)
    put(store, "multi", "joint", ["all"], [[0.4, 0.4]], settings=b)
    put(store, "vanilla", "sequential", LANGS, [[0.5, 0.1], [0.4, 0.6]], order="1", settings=a)
    text = format_summary(store)
    assert row(text, "MULTI [xlm-roberta-base, seed 0, data.max_train=400]") == [
        "40.00",
        "40.00",
        "40.00",
    ]
    assert row(text, "MULTI [xlm-roberta-base, seed 0, data.max_train=800]")[2] == "80.00"
    # the label names only the differing key, and only in the cell that has two settings
    assert "train.lr" not in text
    assert "VANILLA order 1 [xlm-roberta-base, seed 0]" in text


def test_only_the_runs_asked_for(tmp_path):
    store = Store(tmp_path / "s")
    keep = put(store, "multi", "joint", ["all"], [[0.8, 0.8]])
    put(store, "multi", "joint", ["all"], [[0.4, 0.4]], seed=1)
    text = format_summary(store, {keep})
    assert "seed 1" not in text and text.endswith("1 runs; 0 expected cells missing")


def test_per_language_scores_follow_the_store_rule(tmp_path):
    # step i is languages[i]'s cell; a run whose steps are in another order is refused
    store = Store(tmp_path / "s")
    rid = put(store, "mono", "per-language", LANGS, [[0.5, nan], [nan, 0.9]])
    assert store.missing(rid) == []
    assert row(format_summary(store), "MONO") == ["50.00", "90.00", "70.00"]
    with pytest.raises(StoreError, match="in the same order"):
        put(store, "mono", "per-language", LANGS[::-1], [[0.5, nan], [nan, 0.9]], seed=1)


def test_run_message_says_what_ran_the_summary_and_the_next_command(tmp_path):
    """What `hpc-forget run` prints after a run, from the engine's StudyRun (no training)."""
    from hpc_forget.analysis.summary import run_message
    from hpc_forget.run.engine import StudyRun
    from hpc_forget.study.config import load_config
    from hpc_forget.study.planning import plan

    cfg = load_config("demo", overrides={"store": str(tmp_path / "my store")})
    tasks = plan(cfg)
    ran = {t.task_id: 0 for t in tasks}
    ran[tasks[0].task_id] = 1
    Store(cfg.store).check_writable()  # an empty store, as after a run that wrote nothing
    text = run_message(StudyRun(cfg=cfg, tasks=tasks, ran=ran, seconds=12.34))
    head, *_ = text.splitlines()
    assert head == (
        f"demo: {len(tasks)} tasks, 1 step(s) trained in 12.3 s"
        " (steps already in the store were skipped)"
    )
    store = Store(cfg.store)
    assert format_summary(store, {t.run_id for t in tasks}) in text
    assert text.endswith(
        f"store: {cfg.store}\nnext: hpc-forget analyze {shlex.quote(cfg.store)} --out"
        f" {shlex.quote(str(tmp_path / 'report'))}   (metrics, tables, figures and report.html)"
    )
