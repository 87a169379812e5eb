"""Run folders: the layout of one submission, finding it, and reading its record."""

from __future__ import annotations

import datetime as dt
import json
from types import SimpleNamespace

import pytest

from hpc_forget.cluster import runfolder as RF
from hpc_forget.errors import SlurmError
from hpc_forget.files import write_json


def record(folder, **kw) -> None:
    write_json(
        folder / "submission.json",
        {"format": RF.SUBMISSION_FORMAT, "version": RF.SUBMISSION_VERSION, **kw},
    )


def test_layout_paths_and_the_escaped_log_pattern():
    lay = RF.JobLayout(run_folder="/r 100%", workdir="/w", store="/s", cache_dir="/c")
    assert lay.manifest("chains-0") == "/r 100%/manifests/chains-0.json"
    assert lay.script("chains-0") == "/r 100%/scripts/chains-0.sbatch"
    assert lay.log_pattern("chains-0") == "/r 100%%/logs/chains-0-%A_%a.log"
    assert lay.accelerate_config == "/r 100%/accelerate.yaml"


def test_the_default_run_folder_sits_next_to_the_store(tmp_path):
    cfg = SimpleNamespace(store=str(tmp_path / "store"), name="demo")
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert RF.default_run_folder(cfg, when) == tmp_path / "slurm" / "demo-20260102-030405"


def test_resolve_takes_a_run_folder_or_the_newest_below(tmp_path):
    for name in ("demo-20260101-000000", "demo-20260102-000000"):
        record(tmp_path / "slurm" / name)
    newest = tmp_path / "slurm" / "demo-20260102-000000"
    assert RF.resolve_run_folder(newest) == newest
    assert RF.resolve_run_folder(tmp_path / "slurm") == newest
    assert RF.resolve_run_folder(tmp_path) == newest  # the store's parent: looks in slurm/
    with pytest.raises(SlurmError, match="not a run folder"):
        RF.resolve_run_folder(tmp_path / "nowhere")


def test_read_submission_checks_format_and_version(tmp_path):
    record(tmp_path, arrays=[])
    assert RF.read_submission(tmp_path)["arrays"] == []
    (tmp_path / "submission.json").write_text(json.dumps({"format": "x", "version": 1}))
    with pytest.raises(SlurmError, match="not an hpc-forget submission record of version 1"):
        RF.read_submission(tmp_path)
    (tmp_path / "submission.json").write_text("{")
    with pytest.raises(SlurmError, match="not valid JSON"):
        RF.read_submission(tmp_path)
