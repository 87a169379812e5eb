"""The small in-memory runs (hand-checked numbers) the analysis tests share, and a writer
that puts them into a real store."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hpc_forget.store.format import RunRecord
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


def group(metrics, method, rank=0):
    return next(
        g for g in metrics["groups"] if g["key"]["method"] == method and g["key"]["rank"] == rank
    )


def store_runs(
    path: Path,
    runs: Iterable[RunRecord],
    *,
    labels: Sequence[str] = ("O",),
    config: Callable[[RunRecord], dict] = lambda run: {"test": True},
    dev_curve: Sequence[float] = (),
    meta: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> list[str]:
    """Write synthetic runs with the Store writer API: each R row with a value is one step
    (NaN cells are not written; a row of NaN is a step not written yet). Returns the run ids."""
    from hpc_forget.store.store import Store

    store = Store(path)
    ids = []
    for run in runs:
        store.put_run(
            run.run_id,
            key=run.key,
            kind=run.kind,
            languages=run.languages,
            steps=run.steps,
            labels=list(labels),
            config=config(run),
            settings=run.settings,
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
                    dev_curve=list(dev_curve),
                    meta=dict(meta or {}),
                    provenance=dict(provenance or {}),
                )
        ids.append(run.run_id)
    return ids


def write_store(path: Path) -> list[str]:
    """The small_runs() grid written with the Store writer API."""
    return store_runs(
        path,
        small_runs(),
        labels=["O", "B-date", "I-date"],
        config=lambda run: {"test": True, "method": run.key["method"]},
        dev_curve=[0.5, 0.6],
        meta={"epochs_run": 2},
        provenance={"git_commit": "abc123", "host": "testhost"},
    )


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
