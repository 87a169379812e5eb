"""The calls to the cluster (scontrol, sbatch, sacct, apptainer), with the commands faked."""

from __future__ import annotations

import subprocess

import pytest
from _runs import small_demo

from hpc_forget.cluster import profiles as P
from hpc_forget.cluster import sbatch as SB
from hpc_forget.cluster import submit as SU
from hpc_forget.errors import SlurmError

# ============================================================================ array limits

SCONTROL_CONFIG = """Configuration data as of 2026-12-02T18:00:00
MaxArraySize            = 1001
MaxJobCount             = 10000
SchedulerParameters     = bf_continue,max_array_tasks=200,bf_window=4320
SchedulerType           = sched/backfill
"""


def test_array_limits_read_max_array_tasks_too():
    assert SB.array_limits(SCONTROL_CONFIG) == {"MaxArraySize": 1001, "max_array_tasks": 200}
    assert SB.array_limits("MaxArraySize = 50\nSchedulerParameters = (null)\n") == {
        "MaxArraySize": 50
    }
    assert SB.array_limits("") == {}


def test_submit_splits_at_max_array_tasks_below_max_array_size(tmp_path, monkeypatch):
    monkeypatch.setattr(SB.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(
        SB,
        "_run",
        lambda argv, timeout=60: subprocess.CompletedProcess(argv, 0, SCONTROL_CONFIG, ""),
    )
    assert SB.query_max_array_size() == 200
    cfg = small_demo(tmp_path)
    prof = P.load_profile("local", ["max_array_size=500"])
    res = SU.submit(cfg, prof, dry_run=True, run_folder=tmp_path / "r")
    assert "arrays split at 200 tasks (MaxArraySize=1001, max_array_tasks=200, profile" in (
        res.summary()
    )


def test_an_array_sbatch_rejects_names_max_array_size(monkeypatch):
    err = "sbatch: error: Batch job submission failed: Invalid job array specification"
    monkeypatch.setattr(
        SB, "_run", lambda argv, timeout=60: subprocess.CompletedProcess(argv, 1, "", err)
    )
    with pytest.raises(SlurmError) as e:
        SB.sbatch_submit("/r/scripts/chains-0.sbatch", size=500)
    msg = str(e.value)
    assert "\n" not in msg and "Invalid job array specification" in msg
    assert "500 task(s)" in msg and "max_array_tasks" in msg and "--slurm max_array_size=N" in msg


def test_submit_with_an_image_but_no_apptainer_reports_it_was_not_checked(tmp_path, monkeypatch):
    monkeypatch.setattr(SB.shutil, "which", lambda name: None)
    assert "not checked: apptainer is not installed" in SB.check_image_versions("/i.sif")


def test_sacct_states_prefer_element_lines_over_pending_ranges(monkeypatch):
    out = "JobID|State\n4_7|RUNNING\n4_7.batch|RUNNING\n4_[8-9]|PENDING\n4_[7-9]|PENDING\n4_0|COMPLETED\n"
    monkeypatch.setattr(
        SB, "_run", lambda argv, timeout=60: subprocess.CompletedProcess(argv, 0, out, "")
    )
    got = SB.sacct_states(["4"])
    assert got == {"4_7": "RUNNING", "4_8": "PENDING", "4_9": "PENDING", "4_0": "COMPLETED"}
