"""The store adapter: load_store reads what the Store writer wrote."""

from __future__ import annotations

import numpy as np
import pytest
from _analysis_runs import LANGS, ORDER1, R1, to_store_columns

from hpc_forget.analysis import load
from hpc_forget.errors import AnalysisError


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
