"""The job contract between submit, the worker and status: manifest, markers, exit codes and
the log path."""

from __future__ import annotations

import json

import pytest

from hpc_forget.cluster import contract as C
from hpc_forget.cluster.scripts import batch_body
from hpc_forget.errors import WorkerError


def manifest(**kw) -> dict:
    return C.build_manifest(
        config={"name": "x"},
        tasks=[{"task_id": "t0"}, {"task_id": "t1"}],
        run_folder="/run",
        array="chains-0",
        log_pattern="/run/logs/chains-0-%A_%a.log",
        cache_dir="/cache",
        max_requeues=3,
        environment=kw.pop("environment", C.environment_facts()),
        created_at="2026-01-01T00:00:00+00:00",
    )


def test_manifest_round_trips_and_names_a_version_mismatch(tmp_path):
    m = manifest()
    assert (m["format"], m["version"]) == (C.MANIFEST_FORMAT, C.MANIFEST_VERSION)
    assert [t["task_id"] for t in m["tasks"]] == ["t0", "t1"]  # tasks[i] is array index i
    path = tmp_path / "chains-0.json"
    path.write_text(json.dumps(m))
    assert C.load_manifest(path) == m
    path.write_text(json.dumps(dict(m, version=C.MANIFEST_VERSION + 1)))
    with pytest.raises(WorkerError, match="manifest version 3 but this worker reads versions 1, 2"):
        C.load_manifest(path)
    path.write_text(json.dumps(dict(m, format="other")))
    with pytest.raises(WorkerError, match="not an hpc-forget task manifest"):
        C.load_manifest(path)


def test_the_package_version_must_match_but_python_may_differ():
    here = C.environment_facts()
    C.check_compatible(manifest(environment=dict(here, python="3.0.0")), "m.json", here)
    with pytest.raises(WorkerError, match="submitted with hpc-forget 0.0.0"):
        C.check_compatible(manifest(environment=dict(here, package_version="0.0.0")), "m", here)


def test_markers_live_in_tasks_and_an_unreadable_one_is_none(tmp_path):
    path = C.marker_path(tmp_path, "t0")
    assert path == tmp_path / "tasks" / "t0.json"
    C.write_marker(path, {"state": "running", "task_id": "t0"})
    assert C.read_marker(path) == {"state": "running", "task_id": "t0"}
    assert [p.name for p in path.parent.iterdir()] == ["t0.json"]  # no temporary file left
    path.write_text("{not json")
    assert C.read_marker(path) is None
    path.write_text("[1, 2]")
    assert C.read_marker(path) is None
    assert C.read_marker(tmp_path / "tasks" / "missing.json") is None
    assert set(C.MARKER_STATES) >= {"running", "stopping", "requeued", "done", "failed"}
    assert C.HEARTBEAT_S < C.STALE_S


def test_the_batch_script_requeues_on_exit_preempted_only():
    body = batch_body("python -m hpc_forget.worker m.json", max_requeues=4, gpus=1)
    assert f'[ "$hpcf_rc" -eq {C.EXIT_PREEMPTED} ] && [ "$hpcf_signal" = USR1 ]' in body
    assert len({C.EXIT_OK, C.EXIT_FAILED, C.EXIT_USAGE, C.EXIT_PREEMPTED}) == 4


def test_log_path_pattern():
    env = {"SLURM_ARRAY_JOB_ID": "5", "SLURM_ARRAY_TASK_ID": "7", "SLURM_JOB_ID": "12"}
    assert C.log_path("/a%%b/x-%A_%a.log", env) == "/a%b/x-5_7.log"
    assert C.log_path("/x-%j.log", env) == "/x-12.log"
