"""Packed arrays (``tasks_per_job``, ``submit --pack N``; docs/slurm.md "Packed arrays"): the
grouping, the packed sbatch script (golden), the manifest's elements, the worker running an
element's tasks in order and resuming at the first unfinished one, status per task."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from _golden import check_golden
from _runs import small_demo

from hpc_forget.cluster import contract as C
from hpc_forget.cluster import profiles as P
from hpc_forget.cluster import runfolder as RF
from hpc_forget.cluster import sbatch as SB
from hpc_forget.cluster import scripts as SC
from hpc_forget.cluster import status as ST
from hpc_forget.cluster import submit as SU
from hpc_forget.cluster import worker as W
from hpc_forget.errors import SlurmError


def t(i: int, kind: str = "per-language", model: str = "tiny") -> dict:
    return {"task_id": f"t{i}", "run_id": f"r{i}", "kind": kind, "key": {"model": model}}


# ============================================================================ the grouping (pure)


def test_pack_tasks_groups_independent_tasks_and_keeps_chains_alone():
    tasks = [t(0), t(1, "sequential"), t(2, "joint"), t(3), t(4), t(5, "sequential"), t(6)]
    assert SC.pack_tasks(tasks, 1) == [[0], [1], [2], [3], [4], [5], [6]]
    assert SC.pack_tasks(tasks, 2) == [[0, 2], [1], [3, 4], [5], [6]]
    assert SC.pack_tasks(tasks, 10) == [[0, 2, 3, 4, 6], [1], [5]]
    with pytest.raises(SlurmError, match="tasks_per_job must be >= 1"):
        SC.pack_tasks(tasks, 0)


def test_pack_tasks_never_mixes_base_models_in_one_element():
    tasks = [t(0, model="a"), t(1, model="b"), t(2, model="a"), t(3, model="b"), t(4, model="a")]
    assert SC.pack_tasks(tasks, 2) == [[0, 2], [1, 3], [4]]
    assert SC.pack_tasks(tasks, 3) == [[0, 2, 4], [1, 3]]


def test_tasks_per_job_is_a_profile_key_at_least_1():
    assert P.load_profile("local").tasks_per_job == 1
    assert P.load_profile("local", ["tasks_per_job=4"]).tasks_per_job == 4
    with pytest.raises(SlurmError, match="tasks_per_job: must be an integer >= 1"):
        P.load_profile("local", ["tasks_per_job=0"])
    old = P.Profile().as_dict()
    del old["tasks_per_job"]  # a submission.json written before packing
    assert P.profile_from_dict(old).tasks_per_job == 1


# ============================================================================ plan and script


def _plan(tmp_path, per_job: int, max_size: int = 100):
    from hpc_forget.study.planning import plan

    cfg = small_demo(tmp_path)
    layout = RF.JobLayout(str(tmp_path / "run"), str(tmp_path), str(tmp_path / "s"), "/c")
    prof = P.load_profile("local", [f"tasks_per_job={per_job}"])
    return SC.plan_arrays(
        config={},
        tasks=[SC.task_record(x) for x in plan(cfg)],
        profile=prof,
        layout=layout,
        image=None,
        python="/opt/venv/bin/python",
        max_array_size=max_size,
        environment={},
        created_at="2026-01-01T00:00:00+00:00",
        name="demo",
    )


def test_plan_arrays_packs_independent_elements_and_splits_by_elements(tmp_path):
    one = _plan(tmp_path, 1)
    four = _plan(tmp_path, 4)
    assert [(a.name, a.size, a.n_elements) for a in one] == [
        ("chains-0", 4, 4),
        ("independent-0", 10, 10),
    ]
    assert [(a.name, a.size, a.n_elements) for a in four] == [
        ("chains-0", 4, 4),
        ("independent-0", 10, 3),
    ]
    ind = four[1]
    assert ind.manifest["elements"] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert "#SBATCH --array=0-2" in ind.script and "packed: each element runs up to 4" in ind.script
    # same tasks, same order: only the grouping differs
    assert [x["task_id"] for x in ind.tasks] == [x["task_id"] for x in one[1].tasks]
    # the split counts elements (MaxArraySize limits array indices, not tasks)
    split = _plan(tmp_path, 4, max_size=2)
    assert [(a.name, a.size, a.n_elements) for a in split[-2:]] == [
        ("independent-0", 8, 2),
        ("independent-1", 2, 1),
    ]
    assert split[-1].manifest["elements"] == [[0, 1]]
    # the chains' script is the unpacked one: no packed line
    assert "packed" not in four[0].script and four[0].script == one[0].script


def test_sbatch_script_packed_golden():
    from test_scripts import nasty_layout

    prof = P.load_profile("local", ["tasks_per_job=8"])
    text = SC.sbatch_script(
        layout=nasty_layout(),
        array="independent-0",
        job_name="hf-demo-independent",
        count=3,
        time_min=prof.time,
        profile=prof,
        image=None,
        python="/opt/venv/bin/python",
        tasks_per_job=8,
    )
    check_golden("sbatch-host-packed.sh", text)


def test_submit_pack_overrides_the_profile_and_records_elements(tmp_path, monkeypatch):
    monkeypatch.setattr(SB, "sbatch_submit", lambda path, size=None: f"{size}")
    cfg = small_demo(tmp_path)
    res = SU.submit(cfg, P.load_profile("local"), run_folder=tmp_path / "run", max_array_size=50,
                    pack=3)  # fmt: skip
    sub = RF.read_submission(tmp_path / "run")
    ind = sub["arrays"][1]
    assert ind["job_id"] == "4"  # sbatch was told the element count
    assert ind["elements"] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert sub["profile"]["tasks_per_job"] == 3
    assert "10 task(s) in 4 element(s)" in res.summary()
    # status: every task on its own, at its element's job id
    st = {x.task_id: x for x in ST.status(tmp_path / "run").tasks}
    assert len(st) == 14 and {x.state for x in st.values()} == {"pending"}
    assert [st[tid].job_id for tid in ind["task_ids"]] == [
        f"4_{e}" for e, members in enumerate(ind["elements"]) for _ in members
    ]


# ============================================================================ manifests


def test_a_version_1_manifest_is_read_as_one_task_per_element(tmp_path):
    m = C.build_manifest(config={}, tasks=[t(0), t(1)], run_folder="/r", array="a",
                         log_pattern="", cache_dir="", max_requeues=0, environment={},
                         created_at="")  # fmt: skip
    assert m["elements"] == [[0], [1]]
    v1 = {k: v for k, v in m.items() if k != "elements"} | {"version": 1}
    path = tmp_path / "m.json"
    path.write_text(json.dumps(v1))
    assert C.manifest_elements(C.load_manifest(path)) == [[0], [1]]


# ============================================================================ the worker


ENV = {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_JOB_ID": "77", "SLURM_JOB_ID": "78"}


def packed_manifest(tmp_path: Path, n: int = 3) -> Path:
    run = tmp_path / "run"
    m = C.build_manifest(
        config={"name": "x"},
        tasks=[t(i) for i in range(n)],
        run_folder=str(run),
        array="independent-0",
        log_pattern=str(run / "logs" / "independent-0-%A_%a.log"),
        cache_dir=str(tmp_path / "cache"),
        max_requeues=3,
        environment=C.environment_facts(),
        created_at="2026-01-01T00:00:00+00:00",
        elements=[list(range(n))],
    )
    path = run / "manifests" / "independent-0.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(m))
    return path


def marker(tmp_path: Path, task_id: str) -> dict | None:
    return C.read_marker(tmp_path / "run" / "tasks" / f"{task_id}.json")


def test_an_element_runs_its_tasks_in_order_and_a_failure_does_not_stop_the_rest(tmp_path):
    path = packed_manifest(tmp_path)
    seen = []

    def runner(task_d, manifest, stop):
        seen.append(task_d["task_id"])
        if task_d["task_id"] == "t1":
            raise ValueError("boom")

    assert W.run(str(path), runner=runner, env=ENV, install_signals=False) == C.EXIT_FAILED
    assert seen == ["t0", "t1", "t2"]
    states = [marker(tmp_path, f"t{i}")["state"] for i in range(3)]
    assert states == ["done", "failed", "done"]
    assert [marker(tmp_path, f"t{i}")["position"] for i in range(3)] == [0, 1, 2]
    assert {marker(tmp_path, f"t{i}")["index"] for i in range(3)} == {0}


def test_a_requeued_element_resumes_at_its_first_unfinished_task(tmp_path):
    path = packed_manifest(tmp_path)
    seen = []

    def stopping_at_t1(task_d, manifest, stop):
        seen.append(task_d["task_id"])
        if task_d["task_id"] == "t1":
            stop.handle(signal.SIGUSR1)
            raise W.TaskPreempted("stopped before epoch 2")

    rc = W.run(str(path), runner=stopping_at_t1, env=ENV, install_signals=False)
    assert rc == C.EXIT_PREEMPTED and seen == ["t0", "t1"]
    assert marker(tmp_path, "t1")["state"] == "requeued"
    assert marker(tmp_path, "t2") is None  # not started: status says pending
    seen.clear()
    env = dict(ENV, SLURM_RESTART_COUNT="1")
    rc = W.run(str(path), runner=lambda d, m, s: seen.append(d["task_id"]), env=env,
               install_signals=False)  # fmt: skip
    assert rc == C.EXIT_OK and seen == ["t1", "t2"]  # t0 is skipped, not rerun
    assert marker(tmp_path, "t0")["attempts"] == 1 and marker(tmp_path, "t1")["attempts"] == 2


def test_the_runner_shares_one_workspace_across_an_elements_tasks(tmp_path, monkeypatch):
    """engine_runner makes the config, store and Workspace once per manifest."""
    from hpc_forget.run import engine

    made, used = [], []
    monkeypatch.setattr(engine, "Workspace", lambda cfg: made.append(cfg) or object())
    monkeypatch.setattr(
        engine,
        "run_task",
        lambda task, cfg, store, *, should_stop, workspace: used.append(workspace),
    )
    from hpc_forget.study.config import config_to_dict
    from hpc_forget.study.planning import plan

    cfg = small_demo(tmp_path)
    tasks = [SC.task_record(x) for x in plan(cfg) if x.kind == "per-language"][:3]
    manifest = {"config": config_to_dict(cfg), "cache_dir": str(tmp_path / "cache")}
    for d in tasks:
        W.engine_runner(d, manifest, lambda: False)
    assert len(made) == 1 and len(used) == 3 and len({id(w) for w in used}) == 1


def test_status_of_a_packed_element_that_slurm_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(SB, "sbatch_submit", lambda path, size=None: "500")
    cfg = small_demo(tmp_path, methods=["mono"])
    SU.submit(cfg, P.load_profile("local"), run_folder=tmp_path / "run", max_array_size=50,
              pack=4)  # fmt: skip
    sub = RF.read_submission(tmp_path / "run")
    ids = sub["arrays"][0]["task_ids"]
    run = tmp_path / "run"
    base = {"array": "independent-0", "index": 0, "attempts": 1, "last_error": ""}
    C.write_marker(run / "tasks" / f"{ids[0]}.json", dict(base, state="failed", last_error="X"))
    C.write_marker(run / "tasks" / f"{ids[1]}.json", dict(base, state="running",
                                                          updated_at=C.files.utc_now()))  # fmt: skip
    monkeypatch.setattr(SB, "sacct_states", lambda ids_: {"500_0": "RUNNING"})
    st = {x.task_id: x for x in ST.status(run, sacct=True).tasks}
    assert len(ids) == 4 and sub["arrays"][0]["elements"] == [[0, 1, 2, 3]]
    # Slurm runs the element: the marker says which of its tasks runs; the later ones wait
    assert [st[i].state for i in ids] == ["failed", "running", "pending", "pending"]
    assert st[ids[0]].last_error == "X"
