"""submit without Slurm: dry runs, images, and the files a submission writes (sbatch faked)."""

from __future__ import annotations

import json

import pytest
from _runs import fake_submit, small_demo

from hpc_forget.cluster import profiles as P
from hpc_forget.cluster import submit as SU
from hpc_forget.errors import SlurmError

# ============================================================================ submit (no Slurm)


def test_dry_run_needs_no_slurm_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    cfg = small_demo(tmp_path)
    run = tmp_path / "run folder"
    res = SU.submit(cfg, P.load_profile("local"), dry_run=True, run_folder=run, max_array_size=6)
    text = res.summary()
    assert not run.exists() and not (tmp_path / "store").exists()
    # 4 chains + 10 independent tasks split at 6: three sbatch calls
    assert text.count("#!/bin/bash") == 3
    assert "# ==== " in text and "independent-1.sbatch (4 task(s)" in text
    assert f"-m hpc_forget.worker '{run}/manifests/chains-0.json'" in text


def test_dry_run_with_an_image_says_versions_were_not_checked(tmp_path):
    cfg = small_demo(tmp_path)
    res = SU.submit(
        cfg, P.load_profile("local"), dry_run=True, run_folder=tmp_path / "r", container="x.sif"
    )
    assert "versions not checked" in res.summary()
    assert "apptainer exec --cleanenv" in res.summary()


def test_a_missing_image_is_one_line_before_anything_is_written(tmp_path):
    cfg = small_demo(tmp_path)
    with pytest.raises(SlurmError) as e:
        SU.submit(cfg, P.load_profile("local"), run_folder=tmp_path / "r", container="nope.sif")
    assert str(e.value).startswith("--container:") and "no such image" in str(e.value)
    assert not (tmp_path / "r").exists()


def test_submit_writes_manifests_scripts_and_the_record(tmp_path, monkeypatch):
    run = fake_submit(tmp_path, monkeypatch)
    sub = json.loads((run / "submission.json").read_text())
    assert [a["name"] for a in sub["arrays"]] == ["chains-0", "independent-0", "independent-1"]
    assert [a["job_id"] for a in sub["arrays"]] == ["100", "101", "102"]
    m = json.loads((run / "manifests" / "independent-1.json").read_text())
    assert len(m["tasks"]) == 4 and m["environment"]["package_version"]
    assert m["config"]["store"] == str(tmp_path / "store")
    assert (run / "scripts" / "chains-0.sbatch").read_text().startswith("#!/bin/bash")
    with pytest.raises(SlurmError, match="already holds a submission"):
        SU.submit(small_demo(tmp_path), P.load_profile("local"), run_folder=run)


def test_several_gpus_per_task_must_match_train_processes():
    from hpc_forget.cluster.submit import check_gpus
    from hpc_forget.errors import SlurmError

    check_gpus(0, 1)
    check_gpus(1, 1)
    check_gpus(2, 2)
    with pytest.raises(SlurmError, match="train.processes is 1"):
        check_gpus(2, 1)
    with pytest.raises(SlurmError, match="set gres gpu:2"):
        check_gpus(1, 2)
