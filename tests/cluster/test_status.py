"""status, resubmit and cancel of a run folder (sbatch, squeue and scancel faked)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _runs import fake_submit, put_steps, small_demo

from hpc_forget.cluster import profiles as P
from hpc_forget.cluster import runfolder as RF
from hpc_forget.cluster import sbatch as SB
from hpc_forget.cluster import status as ST
from hpc_forget.cluster import submit as SU
from hpc_forget.cluster.contract import write_marker
from hpc_forget.errors import SlurmError

ROOT = Path(__file__).resolve().parents[2]


def test_status_states_from_store_markers_and_records(tmp_path, monkeypatch):
    run = fake_submit(tmp_path, monkeypatch)
    manifests = {p.stem: json.loads(p.read_text()) for p in (run / "manifests").glob("*.json")}
    chains = manifests["chains-0"]["tasks"]
    ind = manifests["independent-0"]["tasks"]

    def mark(task, array, index, state, err=""):
        write_marker(
            run / "tasks" / f"{task['task_id']}.json",
            {"task_id": task["task_id"], "array": array, "index": index, "state": state,
             "attempts": 1, "last_error": err, "log": f"/logs/{task['task_id']}.log"},
        )  # fmt: skip

    put_steps(tmp_path / "store", chains[0], range(4))  # done
    put_steps(tmp_path / "store", chains[1], [0, 1])  # half done, running
    mark(chains[1], "chains-0", 1, "running")
    mark(chains[2], "chains-0", 2, "failed", "RuntimeError: boom")
    mark(chains[3], "chains-0", 3, "requeued")
    mark(ind[0], "independent-0", 0, "interrupted", "stopped by SIGTERM")
    mark(ind[1], "some-older-array", 0, "failed", "old")  # not this element: pending
    mark(ind[2], "independent-0", 2, "running")
    stale = json.loads((run / "tasks" / f"{ind[2]['task_id']}.json").read_text())
    stale["updated_at"] = "2020-01-01T00:00:00+00:00"  # no heartbeat for years: killed
    write_marker(run / "tasks" / f"{ind[2]['task_id']}.json", stale)
    mark(ind[3], "independent-0", 3, "stopping")
    m3 = json.loads((run / "tasks" / f"{ind[3]['task_id']}.json").read_text())
    write_marker(run / "tasks" / f"{ind[3]['task_id']}.json", dict(m3, signal="SIGTERM"))
    mark(ind[4], "independent-0", 4, "stopping")
    m4 = json.loads((run / "tasks" / f"{ind[4]['task_id']}.json").read_text())
    write_marker(run / "tasks" / f"{ind[4]['task_id']}.json", dict(m4, signal="SIGUSR1"))

    st = ST.status(run)
    by = {t.task_id: t for t in st.tasks}
    assert by[chains[0]["task_id"]].state == "done"
    assert (by[chains[0]["task_id"]].cells_done, by[chains[0]["task_id"]].cells_expected) == (
        16,
        16,
    )
    c1 = by[chains[1]["task_id"]]
    assert c1.state == "running" and (c1.cells_done, c1.steps_done) == (8, 2)
    assert by[chains[2]["task_id"]].state == "failed"
    assert by[chains[2]["task_id"]].last_error == "RuntimeError: boom"
    assert by[chains[2]["task_id"]].log == f"/logs/{chains[2]['task_id']}.log"
    assert by[chains[3]["task_id"]].state == "pending"
    assert by[ind[0]["task_id"]].state == "failed"
    assert by[ind[1]["task_id"]].state == "pending" and by[ind[1]["task_id"]].last_error == ""
    assert by[ind[1]["task_id"]].log == str(run / "logs" / "independent-0-101_1.log")
    assert by[ind[1]["task_id"]].job_id == "101_1"
    assert by[ind[2]["task_id"]].state == "failed"
    assert "no heartbeat" in by[ind[2]["task_id"]].last_error
    assert by[ind[3]["task_id"]].state == "failed"
    assert "stopped by SIGTERM" in by[ind[3]["task_id"]].last_error
    assert by[ind[4]["task_id"]].state == "running"  # USR1: checkpointing, then requeued
    assert st.counts() == {"pending": 7, "running": 2, "done": 1, "failed": 4, "missing": 0}
    text = st.format()
    assert "14 task(s): 7 pending, 2 running, 1 done, 4 failed" in text
    assert "error: RuntimeError: boom" in text
    data = st.as_json()
    assert data["counts"]["failed"] == 4 and len(data["tasks"]) == 14
    json.dumps(data)
    # a run folder of run folders resolves to the newest
    assert RF.resolve_run_folder(tmp_path).name == "run"


def test_status_after_cancel_and_resubmit_selection(tmp_path, monkeypatch):
    run = fake_submit(tmp_path, monkeypatch)
    calls = []
    monkeypatch.setattr(SB, "_run", lambda argv, timeout=60: calls.append(argv) or subprocess.CompletedProcess(argv, 0, "", ""))  # fmt: skip
    assert ST.cancel(run) == ["100", "101", "102"]
    assert calls == [["scancel", "100", "101", "102"]]
    st = ST.status(run)
    assert all(t.state == "failed" and "cancelled" in t.last_error for t in st.tasks)
    # resubmit picks every failed task, into new arrays of the same run folder, with the
    # submission's profile plus overrides
    res = ST.resubmit(run, dry_run=True, overrides=["time=0:45:00"])
    assert (
        "#SBATCH --time=45" in res.dry_run_text and "#SBATCH --partition=debug" in res.dry_run_text
    )
    assert "r1-chains-0.sbatch (4 task(s)" in res.dry_run_text
    assert "r1-independent-0.sbatch (6 task(s)" in res.dry_run_text


def test_resubmit_only_failed_and_missing(tmp_path, monkeypatch):
    cfg = small_demo(tmp_path)
    from hpc_forget.study.planning import plan

    tasks = plan(cfg)
    chains = [t for t in tasks if t.kind == "sequential"]
    # submit only the chains: the independent tasks are "missing"
    run = tmp_path / "run"
    monkeypatch.setattr(SB, "sbatch_submit", lambda p, size=None: "200")
    SU.submit(cfg, P.load_profile("local"), run_folder=run, tasks=chains, max_array_size=50)
    from hpc_forget.cluster.scripts import task_record

    recs = [task_record(t) for t in chains]
    put_steps(tmp_path / "store", recs[0], range(4))
    write_marker(
        run / "tasks" / f"{recs[1]['task_id']}.json", {"array": "chains-0", "state": "failed"}
    )
    write_marker(
        run / "tasks" / f"{recs[2]['task_id']}.json", {"array": "chains-0", "state": "running"}
    )
    st = {t.task_id: t.state for t in ST.status(run).tasks}
    assert list(st.values()).count("missing") == 10
    monkeypatch.setattr(SB, "alive_elements", lambda ids: {"200_2", "200_3"})
    ids: list[str] = []
    monkeypatch.setattr(
        SB, "sbatch_submit", lambda p, size=None: ids.append(p) or str(300 + len(ids))
    )
    res = ST.resubmit(run)
    names = {a["name"]: a["size"] for a in res.arrays}
    assert names == {"r1-chains-0": 1, "r1-independent-0": 10}
    sub = json.loads((run / "submission.json").read_text())
    assert [a["name"] for a in sub["arrays"]] == ["chains-0", "r1-chains-0", "r1-independent-0"]
    st2 = {t.task_id: t for t in ST.status(run).tasks}
    assert (
        st2[recs[1]["task_id"]].state == "pending"
        and st2[recs[1]["task_id"]].array == "r1-chains-0"
    )


def test_status_of_10000_tasks_smoke(tmp_path):
    """Smoke check only (generous bound); benchmarks/bench_status.py measures the real claim."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_status
    finally:
        sys.path.pop(0)
    folder, n = bench_status.fabricate(tmp_path, 10_000, real_plan=False)
    assert n >= 10_000
    t0 = time.perf_counter()
    st = ST.status(folder)
    dt = time.perf_counter() - t0
    assert len(st.tasks) == n and all(
        st.counts()[s] > 1000 for s in ("pending", "running", "done", "failed")
    )
    assert dt < 15, f"status took {dt:.1f} s for {n} tasks"


HEAVY = ("torch", "transformers", "peft", "accelerate", "datasets", "submitit")


def test_status_imports_nothing_heavy(tmp_path, monkeypatch):
    """`hpc-forget status` starts fast: neither hpc_forget.cluster.status nor the CLI
    command imports torch or a Hugging Face library (run in a fresh interpreter)."""
    run = fake_submit(tmp_path, monkeypatch)
    code = (
        "import sys\n"
        "from hpc_forget.cluster.status import status\n"
        f"print(status({str(run)!r}).format().splitlines()[0])\n"
        "from hpc_forget.cli import cli\n"
        f"cli.main(['status', {str(run)!r}], standalone_mode=False)\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert "14 task(s)" in res.stdout


def test_missing_run_folder_is_one_line(tmp_path):
    with pytest.raises(SlurmError, match="not a run folder"):
        ST.status(tmp_path)


def test_status_says_when_the_store_holds_these_cells_under_other_settings(tmp_path, monkeypatch):
    """#8: a changed config makes new runs beside the old ones; status says so in one line."""
    from hpc_forget.store.store import Store
    from hpc_forget.study.config import config_from_dict, config_to_dict
    from hpc_forget.study.identity import run_settings
    from hpc_forget.study.planning import plan

    cfg = small_demo(tmp_path)
    run = fake_submit(tmp_path, monkeypatch, cfg=cfg)
    assert ST.status(run).note is None
    old_raw = config_to_dict(cfg)
    old_raw["data"]["max_train"] = 7  # an earlier study, same cells, other settings
    old_cfg = config_from_dict(old_raw)
    task = plan(old_cfg)[0]
    assert task.run_id not in {t.run_id for t in ST.status(run).tasks}
    Store(cfg.store).put_run(
        task.run_id, key=task.key.as_dict(), kind=task.kind, languages=list(task.languages),
        steps=list(task.steps), labels=["O"], config=old_raw,
        settings=run_settings(old_cfg, task.key.method, task.key.rank),
    )  # fmt: skip
    st = ST.status(run)
    assert st.note is not None and "\n" not in st.note
    assert "1 run(s)" in st.note and "(differing in data.max_train)" in st.note
    assert st.note in st.format() and st.as_json()["note"] == st.note
