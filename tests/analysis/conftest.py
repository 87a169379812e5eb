"""Fixtures of the analysis tests: the metrics of small_runs() and a small real store."""

from __future__ import annotations

from pathlib import Path

import pytest
from _analysis_runs import small_runs, write_store

from hpc_forget.analysis import load, reduce
from hpc_forget.analysis.options import AnalysisOptions


@pytest.fixture(scope="module")
def metrics() -> dict:
    return reduce.compute_metrics(
        load.StoreData("mem", small_runs()), AnalysisOptions(bootstrap=200, seed=0)
    )


@pytest.fixture(scope="module")
def store_path(tmp_path_factory) -> Path:
    pytest.importorskip("hpc_forget.store.store")
    path = tmp_path_factory.mktemp("store") / "results"
    write_store(path)
    return path
