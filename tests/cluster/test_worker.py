"""The worker: manifest checks, markers, the stop flag, and the signal path through the batch
script (with a fake engine and a fake scontrol; no Slurm needed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hpc_forget.cluster import contract as C
from hpc_forget.cluster import worker as W
from hpc_forget.cluster.scripts import batch_body


def make_manifest(tmp_path: Path, n: int = 2, **kw) -> Path:
    run = tmp_path / "run"
    tasks = [{"task_id": f"t{i}", "run_id": f"r{i}", "kind": "joint"} for i in range(n)]
    m = C.build_manifest(
        config={"name": "x"},
        tasks=tasks,
        run_folder=str(run),
        array="independent-0",
        log_pattern=str(run / "logs" / "independent-0-%A_%a.log"),
        cache_dir=str(tmp_path / "cache"),
        max_requeues=kw.pop("max_requeues", 3),
        environment=kw.pop("environment", C.environment_facts()),
        created_at="2026-01-01T00:00:00+00:00",
    )
    path = run / "manifests" / "independent-0.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(m))
    return path


def marker(tmp_path: Path, task_id: str) -> dict:
    return json.loads((tmp_path / "run" / "tasks" / f"{task_id}.json").read_text())


ENV = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_JOB_ID": "77", "SLURM_JOB_ID": "78"}


def test_offline_variables_are_set_before_any_hugging_face_import(tmp_path):
    """`python -m hpc_forget.worker` sets them in main(); the module itself imports no Hugging
    Face library (nor torch), and importing it changes no environment variable."""
    path = make_manifest(tmp_path, n=1)
    code = textwrap.dedent(
        f"""
        import os, sys
        before = dict(os.environ)
        import hpc_forget.worker
        import hpc_forget.cluster.worker as w
        assert dict(os.environ) == before
        HF = ("transformers", "datasets", "huggingface_hub", "accelerate", "peft", "torch")

        def runner(task, manifest, should_stop):
            loaded = [m for m in sys.modules if m.split(".")[0] in HF]
            assert not loaded, loaded
            assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["HF_DATASETS_OFFLINE"] == "1"
            print("runner ok")

        w.engine_runner = runner
        sys.exit(w.main([{str(path)!r}, "--index", "0"]))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "runner ok" in out.stdout


def test_runs_the_task_at_the_array_index_and_marks_it_done(tmp_path):
    seen = []
    path = make_manifest(tmp_path)
    rc = W.run(
        str(path),
        runner=lambda t, m, stop: seen.append(t["task_id"]),
        env=ENV,
        install_signals=False,
    )
    assert rc == C.EXIT_OK and seen == ["t1"]
    m = marker(tmp_path, "t1")
    assert m["state"] == "done" and m["attempts"] == 1 and m["job_id"] == "78"
    assert m["log"] == str(tmp_path / "run" / "logs" / "independent-0-77_1.log")
    # a second attempt counts up
    W.run(str(path), runner=lambda *a: None, env=ENV, install_signals=False)
    assert marker(tmp_path, "t1")["attempts"] == 2


def test_a_failing_task_records_its_last_error_line(tmp_path):
    path = make_manifest(tmp_path)

    def boom(*a):
        raise ValueError("bad thing\nsecond line")

    rc = W.run(str(path), runner=boom, env=ENV, install_signals=False)
    assert rc == C.EXIT_FAILED
    m = marker(tmp_path, "t1")
    assert m["state"] == "failed" and m["last_error"] == "ValueError: bad thing"


def test_version_mismatch_is_one_clear_line(tmp_path, capsys):
    env_facts = dict(C.environment_facts(), package_version="0.0.0-other", python="3.9.1")
    path = make_manifest(tmp_path, environment=env_facts)
    rc = W.run(str(path), runner=lambda *a: None, env=ENV, install_signals=False)
    assert rc == C.EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "0.0.0-other" in err and "Python 3.9.1" in err and str(path) in err
    assert not (tmp_path / "run" / "tasks").exists()


@pytest.mark.parametrize(
    ("content", "needle"),
    [("{not json", "not valid JSON"), ('{"format": "x"}', "not an hpc-forget task manifest")],
)
def test_bad_manifests(tmp_path, capsys, content, needle):
    p = tmp_path / "m.json"
    p.write_text(content)
    assert W.run(str(p), runner=lambda *a: None, env=ENV, install_signals=False) == C.EXIT_USAGE
    assert needle in capsys.readouterr().err


def test_index_out_of_range_and_missing_index(tmp_path, capsys):
    path = make_manifest(tmp_path, n=1)
    assert W.run(str(path), runner=lambda *a: None, env=ENV, install_signals=False) == C.EXIT_USAGE
    assert "index 1" in capsys.readouterr().err
    assert W.run(str(path), runner=lambda *a: None, env={}, install_signals=False) == C.EXIT_USAGE
    assert "SLURM_ARRAY_TASK_ID" in capsys.readouterr().err
    assert W.run(str(path), index=0, runner=lambda *a: None, env={}, install_signals=False) == 0


@pytest.fixture
def keep_handlers():
    old = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)}
    yield
    for s, h in old.items():
        signal.signal(s, h)


def stopping_runner(sig: int):
    """A fake engine: gets ``sig`` mid-task (as forwarded by the batch script), polls the stop
    flag like engine.run_task does between epochs, and stops."""

    def runner(task, manifest, should_stop):
        os.kill(os.getpid(), sig)
        for _ in range(100):
            if should_stop():
                raise W.TaskPreempted("stopped before step 2")
            time.sleep(0.01)
        raise AssertionError("the stop flag was never set")

    return runner


def test_usr1_stops_the_task_and_asks_for_a_requeue(tmp_path, keep_handlers):
    path = make_manifest(tmp_path)
    rc = W.run(str(path), runner=stopping_runner(signal.SIGUSR1), env=ENV)
    assert rc == C.EXIT_PREEMPTED
    m = marker(tmp_path, "t1")
    assert m["state"] == "requeued" and m["signal"] == "SIGUSR1"


def test_usr1_after_the_last_allowed_requeue_is_a_failure(tmp_path, keep_handlers):
    path = make_manifest(tmp_path, max_requeues=2)
    env = dict(ENV, SLURM_RESTART_COUNT="2")
    rc = W.run(str(path), runner=stopping_runner(signal.SIGUSR1), env=env)
    assert rc == C.EXIT_PREEMPTED
    m = marker(tmp_path, "t1")
    assert m["state"] == "failed" and "2 requeue(s)" in m["last_error"]


def test_term_marks_the_task_interrupted(tmp_path, keep_handlers):
    path = make_manifest(tmp_path)
    rc = W.run(str(path), runner=stopping_runner(signal.SIGTERM), env=ENV)
    assert rc == C.EXIT_PREEMPTED
    m = marker(tmp_path, "t1")
    assert m["state"] == "interrupted" and "SIGTERM" in m["last_error"]


# ---------------------------------------------------------------------------- the batch script

FAKE_WORKER = textwrap.dedent(
    """
    import os, signal, sys, time
    got = []
    signal.signal(signal.SIGUSR1, lambda s, f: got.append("USR1"))
    signal.signal(signal.SIGTERM, lambda s, f: got.append("TERM"))
    open(os.environ["READY"], "w").close()
    for _ in range(500):
        if got:
            print("worker got", got[0], flush=True)
            sys.exit(75)
        time.sleep(0.01)
    sys.exit(0)
    """
)


def run_batch_body(
    tmp_path: Path, sig: str | None, restart: int = 0, extra_env: dict | None = None
) -> tuple[int, str, str]:
    """Run the generated script body with a fake worker and a fake scontrol; send ``sig`` to
    the batch shell (as Slurm's --signal=B:... does) once the worker runs."""
    (tmp_path / "bin").mkdir(exist_ok=True)
    worker = tmp_path / "fake_worker.py"
    worker.write_text(FAKE_WORKER)
    scontrol = tmp_path / "bin" / "scontrol"
    calls = tmp_path / "scontrol.calls"
    scontrol.write_text(f'#!/bin/bash\necho "$@" >> "{calls}"\n')
    scontrol.chmod(0o755)
    ready = tmp_path / "ready"
    ready.unlink(missing_ok=True)
    command = f"export X=1\n{sys.executable} {worker}"
    script = tmp_path / "body.sh"
    script.write_text("#!/bin/bash\n" + batch_body(command, max_requeues=3, gpus=0) + "\n")
    env = dict(
        os.environ,
        PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}",
        SLURM_JOB_ID="4242",
        SLURM_RESTART_COUNT=str(restart),
        READY=str(ready),
        **(extra_env or {}),
    )
    p = subprocess.Popen(
        ["bash", str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    for _ in range(500):
        if ready.exists():
            break
        time.sleep(0.01)
    if sig is not None:
        p.send_signal(getattr(signal, sig))
    out, err = p.communicate(timeout=30)
    return p.returncode, out + err, calls.read_text() if calls.exists() else ""


def test_batch_script_forwards_usr1_and_requeues_from_the_host_side(tmp_path):
    rc, out, calls = run_batch_body(tmp_path, "SIGUSR1")
    assert "worker got USR1" in out
    assert calls.strip() == "requeue 4242"
    assert rc == 0


def test_batch_script_requeues_only_its_own_array_element(tmp_path):
    """The last element of an array to start can carry the array's own job id, and
    `scontrol requeue <array id>` would requeue every element: name the element."""
    rc, out, calls = run_batch_body(
        tmp_path, "SIGUSR1", extra_env={"SLURM_ARRAY_JOB_ID": "4242", "SLURM_ARRAY_TASK_ID": "7"}
    )
    assert calls.strip() == "requeue 4242_7" and rc == 0


def test_batch_script_does_not_requeue_after_the_limit(tmp_path):
    rc, out, calls = run_batch_body(tmp_path, "SIGUSR1", restart=3)
    assert "worker got USR1" in out and calls == "" and rc == 75


def test_batch_script_forwards_term_without_requeueing(tmp_path):
    rc, out, calls = run_batch_body(tmp_path, "SIGTERM")
    assert "worker got TERM" in out and calls == "" and rc == 75


def test_batch_script_passes_a_normal_exit_through(tmp_path):
    worker_rc_script = tmp_path / "w.sh"
    worker_rc_script.write_text("exit 3\n")
    script = tmp_path / "b.sh"
    script.write_text(
        "#!/bin/bash\n" + batch_body(f"bash {worker_rc_script}", max_requeues=3, gpus=0)
    )
    assert subprocess.run(["bash", str(script)]).returncode == 3


def test_heartbeat_refreshes_the_marker_while_the_task_runs(tmp_path):
    path = make_manifest(tmp_path)
    stamps = []

    def runner(task, manifest, should_stop):
        for _ in range(3):
            time.sleep(0.25)
            stamps.append(marker(tmp_path, "t1")["updated_at"])

    W.run(str(path), runner=runner, env=ENV, install_signals=False, heartbeat_s=0.1)
    assert marker(tmp_path, "t1")["state"] == "done"
    assert len(stamps) == 3  # the file was rewritten by the heartbeat thread meanwhile


def test_a_stop_before_any_step_names_it_1_based_and_the_task_once(tmp_path, capsys):
    """The real engine stopping before the first step of a 4-step MONO task: the worker's line
    says "step 1/4" (as the log counts steps) and names the task once."""
    from hpc_forget.run import engine
    from hpc_forget.study.config import config_to_dict, load_config
    from hpc_forget.study.planning import plan

    cfg = load_config("demo", overrides={"store": str(tmp_path / "store"), "methods": ["mono"]})
    task = next(t for t in plan(cfg) if t.kind == "per-language" and len(t.steps) == 4)

    def runner(task_d, manifest, should_stop):
        try:
            engine.run_task(task, cfg, engine.Store(cfg.store), should_stop=lambda: True)
        except engine.Preempted as exc:
            raise W.TaskPreempted(str(exc)) from exc

    path = make_manifest(tmp_path, n=1)
    m = json.loads(path.read_text())
    m["config"] = config_to_dict(cfg)
    m["tasks"][0]["task_id"] = task.task_id
    path.write_text(json.dumps(m))
    rc = W.run(str(path), runner=runner, env=dict(ENV, SLURM_ARRAY_TASK_ID="0"),
               install_signals=False)  # fmt: skip
    assert rc == C.EXIT_PREEMPTED
    line = [x for x in capsys.readouterr().err.splitlines() if "stopped before" in x][-1]
    assert line.endswith("stopped before step 1/4") and line.count(task.run_id) == 1, line


def test_a_stop_inside_a_step_names_the_step_1_based():
    class Task:
        run_id = "r"
        step_indices = (0, 1, 2, 3)
        steps = ("a", "b", "c", "d")

    class Store:
        def done_steps(self, run_id):
            return {0, 1}

    assert W.stop_message("stopped before epoch 2", Task(), Store()) == (
        "step 3/4: stopped before epoch 2"
    )
    assert W.stop_message("stopped before step 3/4", Task(), Store()) == "stopped before step 3/4"


# ------------------------------------------------------- several processes (accelerate launch)

RANK_WORKER = textwrap.dedent(
    """
    import os, sys, time
    from hpc_forget.cluster import worker as W

    def runner(task, manifest, should_stop):
        open(os.environ["READY"] + os.environ["RANK"], "w").close()
        for _ in range(3000):  # 30 s: a rank that never sees the stop request fails the test
            if should_stop():
                raise W.TaskPreempted("stopped at an epoch boundary")
            time.sleep(0.01)

    sys.exit(W.run(sys.argv[1], index=0, runner=runner))
    """
)


@pytest.mark.slow
def test_usr1_under_torchrun_reaches_every_rank_and_requeues(tmp_path):
    """With several GPUs the worker runs under torchrun, which dies of SIGUSR1 and would pass
    nothing on (the job would end 138 with its ranks killed). The batch script instead makes
    the stop request every rank polls, and takes rank 0's exit code 75 in place of the
    launcher's, so the job requeues itself."""
    path = make_manifest(tmp_path, n=1)
    (tmp_path / "bin").mkdir()
    calls = tmp_path / "scontrol.calls"
    scontrol = tmp_path / "bin" / "scontrol"
    scontrol.write_text(f'#!/bin/bash\necho "$@" >> "{calls}"\n')
    scontrol.chmod(0o755)
    (tmp_path / "rank.py").write_text(RANK_WORKER)
    ready = tmp_path / "ready"
    command = (
        f"{sys.executable} -m torch.distributed.run --standalone --nproc_per_node 2"
        f" {tmp_path / 'rank.py'} {path}"
    )
    body = batch_body(command, max_requeues=3, gpus=2, stop_dir=str(tmp_path / "run" / "stop"))
    script = tmp_path / "body.sh"
    script.write_text("#!/bin/bash\n" + body + "\n")
    env = dict(
        os.environ,
        PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}",
        SLURM_JOB_ID="4242",
        SLURM_RESTART_COUNT="0",
        SLURM_CPUS_PER_TASK="2",
        READY=str(ready),
        PYTHONPATH=str(Path(W.__file__).resolve().parents[2]),
    )
    p = subprocess.Popen(
        ["bash", str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 120
    while not all(Path(f"{ready}{r}").exists() for r in (0, 1)):
        assert time.monotonic() < deadline and p.poll() is None, p.communicate()[0]
        time.sleep(0.05)
    p.send_signal(signal.SIGUSR1)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 0, out
    assert calls.read_text().strip() == "requeue 4242", out
    assert (tmp_path / "run" / "stop" / "4242.exit").read_text().strip() == "75"
    m = marker(tmp_path, "t0")
    assert m["state"] == "requeued" and m["signal"] == "SIGUSR1", m


def test_the_stop_request_file_sets_the_flag_once(tmp_path):
    seen = []
    flag = W.StopFlag(on_signal=seen.append, stop_file=tmp_path / "stop" / "4242_3")
    assert not flag() and seen == []
    flag.stop_file.parent.mkdir()
    flag.stop_file.touch()
    assert flag() and flag() and seen == ["SIGUSR1"] and flag.signal_name == "SIGUSR1"


def test_the_stop_lines_say_the_step_stops_after_the_current_batch(tmp_path, capsys):
    # the loop polls the flag after every batch (mid-step checkpoints), not once an epoch
    flag = W.StopFlag(stop_file=tmp_path / "stop")
    flag.handle(signal.SIGUSR1)
    flag.stop_file.touch()
    W.StopFlag(stop_file=flag.stop_file)()
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "hpc-forget worker: got SIGUSR1; stopping after the current batch",
        "hpc-forget worker: stop requested (Slurm's warning); stopping after the current batch",
    ]


def test_the_stop_request_is_named_as_scontrol_names_the_element():
    assert C.job_key({"SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "3"}) == "77_3"
    assert C.job_key({"SLURM_JOB_ID": "78"}) == "78" and C.job_key({}) == "local"
    stop = C.stop_request_path("/r", {"SLURM_JOB_ID": "78"})
    assert stop == Path("/r/stop/78") and C.exit_record_path(stop) == Path("/r/stop/78.exit")
