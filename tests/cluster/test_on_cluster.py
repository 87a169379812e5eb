"""Integration tests, marked `slurm`, against the real one-node cluster of slurm/cluster-up.sh:
submit, the workers, status, scancel, resubmit and requeue end to end.

The `slurm` tests skip when no cluster answers, unless HPC_FORGET_REQUIRE_SLURM=1 (CI), where a
missing cluster fails. Start one with `eval "$(bash slurm/cluster-up.sh | grep '^export ')"`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _runs import SMALL

from hpc_forget.cluster import profiles as P
from hpc_forget.cluster import runfolder as RF
from hpc_forget.cluster import status as ST
from hpc_forget.cluster import submit as SU
from hpc_forget.study.config import load_config

# ============================================================================ real Slurm

REQUIRE = os.environ.get("HPC_FORGET_REQUIRE_SLURM") == "1"


def cluster_problem() -> str | None:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return "Slurm clients (sbatch, sinfo) are not installed"
    conf = os.environ.get("SLURM_CONF")
    if conf and not Path(conf).is_file():  # (unset: configless clusters are allowed)
        return f"SLURM_CONF={conf} does not exist"
    try:
        res = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20
        )
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 20 s"
    if res.returncode != 0:
        return f"sinfo failed: {(res.stderr.strip().splitlines() or ['?'])[-1]}"
    if not any(s.strip() in ("idle", "mixed", "allocated") for s in res.stdout.splitlines()):
        return f"no usable node (sinfo says {res.stdout.strip()!r})"
    if (
        subprocess.run(["sacct", "-n", "-X", "-j", "1"], capture_output=True, timeout=20).returncode
        != 0
    ):
        return "sacct does not work (the cluster needs accounting: slurmdbd)"
    return None


@pytest.fixture(scope="module")
def cluster():
    problem = cluster_problem()
    if problem is not None:
        msg = f"no Slurm cluster: {problem}; start one with `bash slurm/cluster-up.sh` and export SLURM_CONF"
        if REQUIRE:
            pytest.fail(f"HPC_FORGET_REQUIRE_SLURM=1 but {msg}")
        pytest.skip(msg)
    return True


def test_cluster_fixture_fails_when_required(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert cluster_problem() == "Slurm clients (sbatch, sinfo) are not installed"


# ---------------------------------------------------------------------------- helpers

SLURM_MODULE_T0 = time.monotonic()


def wait_for(pred, timeout: float, what: str, every: float = 1.0, debug=lambda: ""):
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{debug()}")
        time.sleep(every)


def debug_text(run: Path) -> str:
    """Status, squeue and the tail of every log: what a failing integration test prints."""
    parts = []
    try:
        parts.append(ST.status(run, sacct=True).format())
    except Exception as exc:  # noqa: BLE001 - debugging aid only
        parts.append(f"status failed: {exc}")
    parts.append(subprocess.run(["squeue"], capture_output=True, text=True).stdout)
    for log in sorted((run / "logs").glob("*.log")):
        tail = log.read_text(errors="replace").splitlines()[-8:]
        parts.append(f"--- {log.name}\n" + "\n".join(tail))
    return "\n".join(parts)


def cli_env() -> dict[str, str]:
    # The jobs run with one thread per CPU (OMP_NUM_THREADS from --cpus-per-task=1); run the
    # reference the same way so the floating-point reductions are the same.
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def set_args(overrides: dict) -> list[str]:
    out = []
    for k, v in overrides.items():
        out += ["--set", f"{k}={json.dumps(v)}"]
    return out


def start_reference(config: str, overrides: dict, log: Path) -> subprocess.Popen:
    """`hpc-forget run CONFIG --set ...` in the background: the uninterrupted reference."""
    f = open(log, "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hpc_forget.cli",
            "run",
            config,
            "--no-progress",
            *set_args(overrides),
        ],
        stdout=f,
        stderr=subprocess.STDOUT,
        env=cli_env(),
        cwd=log.parent,
    )


def finish_reference(p: subprocess.Popen, log: Path, timeout: float = 900) -> None:
    try:
        rc = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        pytest.fail(f"the reference `hpc-forget run` did not finish in {timeout:.0f} s")
    assert rc == 0, f"reference run failed:\n{log.read_text()[-3000:]}"


def assert_same_results(a_path: Path, b_path: Path, run_ids) -> None:
    """Same R matrices, dev curves and training losses: bit for bit."""
    import numpy as np

    from hpc_forget.store.store import Store

    a, b = Store(a_path), Store(b_path)
    for rid in sorted(run_ids):
        ma, mb = a.matrix(rid), b.matrix(rid)
        assert np.array_equal(ma, mb, equal_nan=True), f"{rid}: R differs\n{ma}\n{mb}"
        ra, rb = a.run(rid), b.run(rid)
        assert ra.dev_curves == rb.dev_curves, f"{rid}: dev curves differ"
        for step, meta in ra.step_meta.items():
            assert meta["train_loss"] == rb.step_meta[step]["train_loss"], f"{rid} step {step}"
            assert meta["best_epoch"] == rb.step_meta[step]["best_epoch"], f"{rid} step {step}"


def wait_done(run: Path, timeout: float) -> ST.RunStatus:
    def all_done():
        st = ST.status(run)
        bad = [t for t in st.tasks if t.state == "failed"]
        if bad:
            pytest.fail(f"{bad[0].task_id} failed: {bad[0].last_error}\n{debug_text(run)}")
        return st if all(t.state == "done" for t in st.tasks) else None

    return wait_for(
        all_done, timeout, f"every task of {run} to be done", 2, lambda: debug_text(run)
    )


# The two studies the integration tests run, each once locally (the reference) and on Slurm.
# DEMO: the embedded demo, small (64 training examples per language, 2 epochs).
# CHAINS: two VANILLA chains with steps long enough (50 epochs) to interrupt one mid-chain.
def demo_overrides(root: Path) -> dict:
    return {**SMALL, "cache_dir": str(root / "cache")}


def chain_overrides(root: Path) -> dict:
    return {
        **SMALL,
        "methods": ["vanilla"],
        "data.max_train": 400,
        "train.max_epochs_full": 50,  # about 20 s a step: the time-limit warning comes mid-chain
        "cache_dir": str(root / "cache"),
    }


@pytest.fixture(scope="module")
def slurm_root(tmp_path_factory, cluster):
    # spaces, quotes and $ in the store, cache and run folders: the generated scripts must cope
    root = tmp_path_factory.mktemp("slurm") / 'it\'s a "slurm" $HOME test'
    root.mkdir()
    yield root
    # leave no job of these tests behind, whatever happened
    for sub in root.glob("*/run/submission.json"):
        ids = [a["job_id"] for a in json.loads(sub.read_text())["arrays"]]
        subprocess.run(["scancel", *ids], capture_output=True)


@pytest.fixture(scope="module")
def references(slurm_root):
    """Start both reference runs at once (they overlap with the Slurm jobs)."""
    procs = {}
    for name, ov in (("demo", demo_overrides(slurm_root)), ("chains", chain_overrides(slurm_root))):
        d = slurm_root / f"ref-{name}"
        d.mkdir()
        log = d / "run.log"
        procs[name] = (
            start_reference("demo", {**ov, "store": str(d / "store")}, log),
            log,
            d / "store",
        )
    yield procs
    for p, _, _ in procs.values():
        if p.poll() is None:
            p.kill()


def reference_store(references, name: str) -> Path:
    p, log, store = references[name]
    finish_reference(p, log)
    return store


# ---------------------------------------------------------------------------- (1) demo arrays


@pytest.mark.slurm
@pytest.mark.slow
def test_demo_as_arrays_equals_a_local_run(slurm_root, references):
    work = slurm_root / "demo"
    work.mkdir()
    overrides = {**demo_overrides(slurm_root), "store": str(work / "store")}
    t0 = time.monotonic()
    # the command users type: `hpc-forget submit demo --container none`
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "hpc_forget.cli",
            "submit",
            "demo",
            "--container",
            "none",
            "--profile",
            "local",
            "--slurm",
            "max_array_size=6",
            "--run-folder",
            str(work / "run"),
            *set_args(overrides),
        ],
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=work,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - t0 < 30, "submit must return as soon as sbatch answered"
    # 4 chains + 10 independent tasks, arrays split at 6: three sbatch calls
    sub = RF.read_submission(work / "run")
    assert [(a["name"], a["size"]) for a in sub["arrays"]] == [
        ("chains-0", 4),
        ("independent-0", 6),
        ("independent-1", 4),
    ]
    st = wait_done(work / "run", 900)
    assert sum(t.cells_done for t in st.tasks) == sum(t.cells_expected for t in st.tasks) == 80
    ref = reference_store(references, "demo")
    assert_same_results(work / "store", ref, {t.run_id for t in st.tasks})


# ---------------------------------------------------------------------------- (2) scancel


@pytest.mark.slurm
@pytest.mark.slow
def test_scancel_shows_in_status_and_resubmit_finishes_it(slurm_root, references):
    work = slurm_root / "cancel"
    work.mkdir()
    ov = {**demo_overrides(slurm_root), "methods": ["mono"], "store": str(work / "store")}
    cfg = load_config("demo", overrides=ov)
    run = work / "run"
    SU.submit(cfg, P.load_profile("local"), container="none", run_folder=run, workdir=work)

    def a_running_task():
        return next((t for t in ST.status(run).tasks if t.state == "running"), None)

    victim = wait_for(a_running_task, 300, "a running task", 0.5, lambda: debug_text(run))
    subprocess.run(["scancel", victim.job_id], check=True)
    wait_for(
        lambda: not subprocess.run(["squeue", "-h", "-j", victim.job_id], capture_output=True, text=True).stdout.strip(),
        120,
        f"{victim.job_id} to leave the queue",
    )  # fmt: skip
    after = {t.task_id: t for t in ST.status(run).tasks}[victim.task_id]
    assert after.state == "failed", debug_text(run)
    assert "SIGTERM" in after.last_error or "Slurm" in after.last_error

    def sacct_state():  # accounting records reach slurmdbd a few seconds after the job ends
        state = {t.task_id: t for t in ST.status(run, sacct=True).tasks}[victim.task_id]
        final = state.slurm_state not in ("", "PENDING", "RUNNING", "REQUEUED")
        return state.slurm_state if final else None

    assert wait_for(sacct_state, 60, "sacct to record the cancelled job", 1.0) == "CANCELLED"
    res = ST.resubmit(run)
    resubmitted = [
        t["task_id"]
        for a in res.arrays
        for t in json.loads((run / a["manifest"]).read_text())["tasks"]
    ]
    assert resubmitted == [victim.task_id]
    st = wait_done(run, 600)
    ref = reference_store(references, "demo")
    assert_same_results(work / "store", ref, {t.run_id for t in st.tasks})


# ---------------------------------------------------------------------------- (3)+(4) chains


@pytest.fixture(scope="module")
def interrupted_chains(slurm_root):
    """Two VANILLA chains as one array. Once chain A has stored step 0, `scontrol requeue`
    it (by its element id ARRAY_INDEX: an element's own job id may equal the array's, which
    names the whole array); once chain B has stored step 0, cut its time limit so that Slurm's USR1 warning comes
    within the next 30-s check: B checkpoints and requeues itself; then the limit is raised
    again so the restarted job can finish."""
    work = slurm_root / "chains"
    work.mkdir()
    cfg = load_config(
        "demo", overrides={**chain_overrides(slurm_root), "store": str(work / "store")}
    )
    run = work / "run"
    prof = P.load_profile("local", ["time=30", "signal_lead_s=90"])
    SU.submit(cfg, prof, container="none", run_folder=run, workdir=work)
    from hpc_forget.store.store import Store

    store = Store(work / "store")
    tasks = ST.status(run).tasks
    a, b = tasks[0], tasks[1]
    events: dict[str, object] = {}

    def marker(t):
        p = run / "tasks" / f"{t.task_id}.json"
        return json.loads(p.read_text()) if p.exists() else {}

    def step(t, i):
        return store.step_file(t.run_id, i)

    def tick():
        mb = marker(b)
        if "requeued_a" not in events and step(a, 0).exists() and not step(a, 1).exists():
            st0 = step(a, 0).stat()
            events["a_step0"] = (st0.st_ino, st0.st_mtime_ns)
            subprocess.run(["scontrol", "requeue", a.job_id], check=True)
            events["requeued_a"] = time.monotonic()
        if "cut_b" not in events and step(b, 0).exists() and not step(b, 1).exists():
            st0 = step(b, 0).stat()
            events["b_step0"] = (st0.st_ino, st0.st_mtime_ns)
            info = subprocess.run(
                ["scontrol", "show", "job", b.job_id], capture_output=True, text=True
            ).stdout
            d, h, m_, s_ = re.search(r"RunTime=(?:(\d+)-)?(\d+):(\d+):(\d+)", info).groups()
            secs = int(d or 0) * 86400 + int(h) * 3600 + int(m_) * 60 + int(s_)
            limit = -(-secs // 60) + 1  # ends 60-120 s from now; USR1 (90 s lead) within 30 s
            subprocess.run(
                ["scontrol", "update", f"JobId={b.job_id}", f"TimeLimit={limit}"], check=True
            )
            events["cut_b"] = limit
        restarted = int(mb.get("restart_count", 0)) >= 1 or mb.get("state") == "requeued"
        if "cut_b" in events and "restored_b" not in events and restarted:
            # B has requeued itself: give the restarted job time to finish
            subprocess.run(["scontrol", "update", f"JobId={b.job_id}", "TimeLimit=30"], check=True)
            events["restored_b"] = True
        st = ST.status(run)
        bad = [t for t in st.tasks if t.state == "failed" and marker(t).get("state") == "failed"]
        if bad:
            pytest.fail(f"{bad[0].task_id} failed: {bad[0].last_error}\n{debug_text(run)}")
        return all(t.state == "done" for t in st.tasks)

    wait_for(tick, 900, "both chains to finish", 0.5, lambda: f"{events}\n{debug_text(run)}")
    return {"work": work, "run": run, "a": a, "b": b, "events": events, "store": store}


def step_restarts(store, run_id: str) -> dict[int, str]:
    rec = store.run(run_id)
    return {s: str(p.get("slurm_restart_count", "")) for s, p in rec.provenance.items()}


@pytest.mark.slurm
@pytest.mark.slow
def test_scontrol_requeue_resumes_a_chain_from_its_last_finished_step(
    interrupted_chains, references
):
    r = interrupted_chains
    a, store = r["a"], r["store"]
    assert "requeued_a" in r["events"], (
        f"chain A finished before it could be requeued: {r['events']}"
    )
    st0 = store.step_file(a.run_id, 0).stat()
    assert (st0.st_ino, st0.st_mtime_ns) == r["events"]["a_step0"], "step 0 was recomputed"
    restarts = step_restarts(store, a.run_id)
    first = ("", "0")  # SLURM_RESTART_COUNT is unset (or 0) before any requeue
    assert restarts[0] in first and all(restarts[s] not in first for s in (2, 3)), restarts
    ref = reference_store(references, "chains")
    assert_same_results(r["work"] / "store", ref, {a.run_id})


@pytest.mark.slurm
@pytest.mark.slow
def test_time_limit_checkpoints_and_completes_after_requeue(interrupted_chains, references):
    r = interrupted_chains
    b, store, run = r["b"], r["store"], r["run"]
    assert "cut_b" in r["events"], f"chain B finished before its time limit was cut: {r['events']}"
    log = "\n".join(p.read_text(errors="replace") for p in (run / "logs").glob("chains-0-*_1.log"))
    assert "batch script got SIGUSR1" in log, log[-3000:]
    assert "requeueing job" in log, log[-3000:]
    st0 = store.step_file(b.run_id, 0).stat()
    assert (st0.st_ino, st0.st_mtime_ns) == r["events"]["b_step0"], "step 0 was recomputed"
    restarts = step_restarts(store, b.run_id)
    assert restarts[0] in ("", "0") and restarts[3] not in ("", "0"), restarts
    sacct = subprocess.run(
        ["sacct", "-n", "-X", "-D", "-P", "-o", "JobID,State", "-j", ST.status(run).tasks[1].job_id.split("_")[0]],
        capture_output=True,
        text=True,
    ).stdout  # fmt: skip
    assert "REQUEUED" in sacct, sacct
    ref = reference_store(references, "chains")
    assert_same_results(r["work"] / "store", ref, {b.run_id})


# ---------------------------------------------------------------------------- (5) packed


def packed_overrides(root: Path) -> dict:
    return {
        **SMALL,
        "methods": ["mono"],
        "data.max_train": 400,
        "train.max_epochs_full": 20,  # several seconds a task: room to requeue between tasks
        "cache_dir": str(root / "packed-cache"),
    }


@pytest.mark.slurm
@pytest.mark.slow
def test_a_packed_element_requeued_mid_way_resumes_at_its_first_unfinished_task(slurm_root):
    """The 4 MONO tasks of the demo packed into one array element (`--pack 4`). Once task 1
    has stored its step and task 2 has not, `scontrol requeue` the element: the restarted
    element skips task 1 (its step file is not rewritten), runs tasks 2-4 reading the model
    once, and every score equals an unpacked local run's, bit for bit."""
    work = slurm_root / "packed"
    work.mkdir()
    ref_dir = work / "ref"
    ref_dir.mkdir()
    ov = packed_overrides(slurm_root)
    ref = start_reference("demo", {**ov, "store": str(ref_dir / "store")}, ref_dir / "run.log")
    cfg = load_config("demo", overrides={**ov, "store": str(work / "store")})
    run = work / "run"
    res = SU.submit(
        cfg, P.load_profile("local"), container="none", run_folder=run, workdir=work, pack=4
    )
    assert [(a["size"], len(a["elements"])) for a in res.arrays] == [(4, 1)]
    from hpc_forget.store.store import Store

    store = Store(work / "store")
    tasks = ST.status(run).tasks
    first, second = tasks[0], tasks[1]
    assert len({t.run_id for t in tasks}) == 1  # one MONO run, a task per language (step)

    def step(t):
        return store.step_file(t.run_id, int(t.task_id.rsplit("-s", 1)[1]))

    events: dict[str, object] = {}

    def tick():
        if "requeued" not in events and step(first).exists() and not step(second).exists():
            st0 = step(first).stat()
            events["first"] = (st0.st_ino, st0.st_mtime_ns)
            subprocess.run(["scontrol", "requeue", first.job_id], check=True)
            events["requeued"] = time.monotonic()
        st = ST.status(run)
        return all(t.state == "done" for t in st.tasks)

    wait_for(tick, 600, "the packed element to finish", 0.2, lambda: f"{events}\n{debug_text(run)}")
    assert "requeued" in events, f"the element finished before it could be requeued: {events}"
    st0 = step(first).stat()
    assert (st0.st_ino, st0.st_mtime_ns) == events["first"], "task 1 was rerun after the requeue"
    restarts = step_restarts(store, first.run_id)  # step i is task i+1
    assert restarts[0] in ("", "0") and [restarts[s] for s in (1, 2, 3)] == ["1"] * 3, restarts

    def element_log() -> str:
        logs = (run / "logs").glob("independent-0-*_0.log")
        return "\n".join(p.read_text(errors="replace") for p in logs)

    # the worker's last line comes after the last task's scores, which ended the wait above
    final = r"element 0: 4 task\(s\); base model read from disk 1 time\(s\)"
    wait_for(
        lambda: re.search(final, element_log()),
        60,
        "the element's last log line",
        0.2,
        lambda: element_log()[-3000:],
    )
    log = element_log()
    assert f"task {first.task_id} (1/4 of element 0) is done; skipping it" in log, log[-3000:]
    st = ST.status(run)
    assert [t.state for t in st.tasks] == ["done"] * 4
    finish_reference(ref, ref_dir / "run.log")
    assert_same_results(work / "store", ref_dir / "store", {t.run_id for t in st.tasks})


# ---------------------------------------------------------------------------- (6) long step


def long_step_overrides(root: Path) -> dict:
    return {
        **SMALL,
        "methods": ["multi"],  # one task of one (joint) step
        "data.max_train": 200,
        # about 130 s of training on an idle machine (150 epochs took ~80 s): well over what two
        # cuts leave (~70 s), so the step is cut twice however fast the machine
        "train.max_epochs_full": 240,
        "train.patience_full": 1000,  # early stopping never ends it early
        "cache_dir": str(root / "long-cache"),
    }


RESUMED = re.compile(r"continuing from its mid-step checkpoint \(epoch (\d+), batch (\d+)/(\d+)\)")
# the worker's line for a stop inside an epoch, or between two (the warning came during the
# dev evaluation): saved at (epoch, batch), (epoch, 0) for the latter
STOPPED = re.compile(
    r"stopped (?:in epoch (\d+) after batch (\d+)/\d+ \(checkpointed\)|before epoch (\d+))"
)


def stop_positions(log: str) -> list[tuple[int, int]]:
    return [(int(a or c), int(b or 0)) for a, b, c in STOPPED.findall(log)]


@pytest.mark.slurm
@pytest.mark.slow
def test_a_step_longer_than_the_time_limit_finishes_over_several_requeues(slurm_root):
    """One MULTI step of about 130 s of training (idle machine), cut by its time limit twice.
    Each time the job has trained for a while (the first attempt 10 s after its marker says
    running, later ones 3 s after their "continuing from its mid-step checkpoint" line), its
    limit is cut as in `interrupted_chains`, to 60-120 s from now, so Slurm's USR1 warning
    (the profile's 120-s lead) comes with its next time-limit check, within 30 s: the step
    saves its mid-step checkpoint and the batch script requeues the job. While the job waits
    to restart its limit is raised again. The third attempt finishes the step.

    The first two attempts train for at most about 35 s each (their waits plus a 30-s check
    period), 70 s together; the step is longer, so the third attempt has work left. Each
    requeue costs about 20 s (10-15 s pending, then the worker's start-up). 3.9-4.8 min on 2
    CPUs kept busy by other work (load average 4-6), the reference run overlapping; about 2.5
    min expected on an idle machine.
    """
    t_start = time.monotonic()
    work = slurm_root / "long-step"
    work.mkdir()
    ref_dir = work / "ref"
    ref_dir.mkdir()
    ov = long_step_overrides(slurm_root)
    ref = start_reference("demo", {**ov, "store": str(ref_dir / "store")}, ref_dir / "run.log")
    # the job starts once the reference has built the tiny model into the shared cache (else
    # it waits for that build, a start-up of its own that the first cut would have to allow)
    wait_for(
        lambda: "tiny model:" in (ref_dir / "run.log").read_text() or ref.poll() is not None,
        300,
        "the reference to build the tiny model",
        0.2,
    )
    cfg = load_config("demo", overrides={**ov, "store": str(work / "store")})
    run = work / "run"
    prof = P.load_profile("local", ["time=30", "signal_lead_s=120"])
    SU.submit(cfg, prof, container="none", run_folder=run, workdir=work)
    from hpc_forget.run.checkpoints import midstep_path
    from hpc_forget.store.store import Store

    (task,) = ST.status(run).tasks
    midstep = midstep_path(cfg, task.run_id, 0)
    cuts = 2
    events: dict[str, list] = {"cut": [], "restored": [], "midstep_between": []}
    seen: dict[tuple[int, int], float] = {}  # (restart, resumed lines) -> first seen

    def marker() -> dict:
        p = run / "tasks" / f"{task.task_id}.json"
        try:
            return json.loads(p.read_text())
        except (OSError, ValueError):  # (not written yet, or being replaced)
            return {}

    def job_log() -> str:
        logs = (run / "logs").glob("independent-0-*_0.log")
        return "\n".join(p.read_text(errors="replace") for p in logs)

    def runtime_s() -> int:
        info = subprocess.run(
            ["scontrol", "show", "job", task.job_id], capture_output=True, text=True
        ).stdout
        d, h, m_, s_ = re.search(r"RunTime=(?:(\d+)-)?(\d+):(\d+):(\d+)", info).groups()
        return int(d or 0) * 86400 + int(h) * 3600 + int(m_) * 60 + int(s_)

    def tick():
        m = marker()
        state, restart = m.get("state"), int(m.get("restart_count", 0))
        n = len(events["cut"])
        if state == "requeued" and len(events["restored"]) < n:
            # stopped for the warning: the restarted job gets its full limit again
            subprocess.run(["scontrol", "update", f"JobId={task.job_id}", "TimeLimit=30"], check=True)  # fmt: skip
            events["restored"].append(time.monotonic())
            events["midstep_between"].append(midstep.exists())
        elif n < cuts and state == "running" and restart == n == len(events["restored"]):
            resumed = len(RESUMED.findall(job_log()))
            first = seen.setdefault((restart, resumed), time.monotonic())
            wait = 10 if n == 0 else 3  # the first attempt: its start-up (~5 s), then training
            if (n == 0 or resumed >= n) and time.monotonic() - first >= wait:
                limit = -(-runtime_s() // 60) + 1  # ends in 60-120 s: USR1 (120 s lead) at once
                subprocess.run(["scontrol", "update", f"JobId={task.job_id}", f"TimeLimit={limit}"], check=True)  # fmt: skip
                events["cut"].append(time.monotonic())
        if state == "failed":
            pytest.fail(f"{task.task_id} failed: {m.get('last_error')}\n{debug_text(run)}")
        return state == "done"

    t_submit = time.monotonic()
    wait_for(tick, 600, "the long step to finish", 0.5, lambda: f"{events}\n{debug_text(run)}")
    wall = time.monotonic() - t_submit
    log = job_log()
    assert len(events["cut"]) == cuts, f"the step ended after {len(events['cut'])} cut(s): {events}\n{log[-3000:]}"  # fmt: skip
    # (1) requeued twice, by itself after the warning
    assert log.count("batch script got SIGUSR1") >= cuts, log[-3000:]
    assert log.count("requeueing job") >= cuts, log[-3000:]
    final = marker()
    assert final["restart_count"] == cuts, final
    assert step_restarts(Store(work / "store"), task.run_id) == {0: str(cuts)}

    def requeued_in_sacct():  # accounting records reach slurmdbd a few seconds late
        out = subprocess.run(
            ["sacct", "-n", "-X", "-D", "-P", "-o", "JobID,State", "-j", task.job_id.split("_")[0]],
            capture_output=True,
            text=True,
        ).stdout  # fmt: skip
        states = [ln.split("|")[1] for ln in out.splitlines() if "|" in ln]
        return states if "COMPLETED" in states else None

    states = wait_for(requeued_in_sacct, 60, "sacct to record the finished job", 1.0)
    assert states.count("REQUEUED") == cuts, states
    # (2) each attempt continued from where the last one stopped on the warning, further on
    stops = stop_positions(log)
    resumes = [(int(e), int(b)) for e, b, _ in RESUMED.findall(log)]
    assert len(resumes) == cuts and resumes == stops, f"stops {stops}, resumes {resumes}"
    assert resumes == sorted(set(resumes)), f"positions do not increase: {resumes}"
    # (4) the mid-step checkpoint was there between the attempts, and is gone now
    assert events["midstep_between"] == [True] * cuts, events
    assert not midstep.exists() and not midstep.with_suffix(".json").exists()
    # (3) every score, the dev curve and the losses equal an uninterrupted run's
    finish_reference(ref, ref_dir / "run.log")
    assert_same_results(work / "store", ref_dir / "store", {task.run_id})
    cut_at = [round(t - t_submit) for t in events["cut"]]
    total = time.monotonic() - t_start
    print(f"long step: {total:.0f} s in all, {wall:.0f} s on Slurm; cuts at {cut_at} s, resumes {resumes}")  # fmt: skip
