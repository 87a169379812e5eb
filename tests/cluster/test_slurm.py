"""Slurm: profiles, sbatch scripts (golden files), arrays, status, resubmit — and, marked
`slurm`, integration tests against the real one-node cluster of slurm/cluster-up.sh.

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
from _golden import NASTY, check_golden  # noqa: E402

from hpc_forget.cluster import slurm as S
from hpc_forget.cluster.worker import write_marker
from hpc_forget.study.config import load_config

ROOT = Path(__file__).resolve().parents[2]


# ============================================================================ profiles


@pytest.mark.parametrize(
    ("text", "minutes"),
    [("30", 30), ("1:30", 2), ("2:00:00", 120), ("1-00", 1440), ("1-02:30", 1590), ("0:0:59", 1)],
)
def test_parse_time(text, minutes):
    assert S.parse_time(text, "x") == minutes


@pytest.mark.parametrize("bad", ["", "abc", "1h", "0", "-5"])
def test_parse_time_errors_name_the_option(bad):
    with pytest.raises(S.SlurmError) as e:
        S.parse_time(bad, "p.yaml: time")
    assert str(e.value).startswith("p.yaml: time:") and "\n" not in str(e.value)


def test_gpus_from_gres():
    assert S.gpus_from_gres(None) == 0
    assert S.gpus_from_gres("gpu:1") == 1
    assert S.gpus_from_gres("gpu:a100:2") == 2
    assert S.gpus_from_gres("gpu") == 1
    assert S.gpus_from_gres("gpu:2,tmpfs:10") == 2


def test_shipped_profiles_load():
    local = S.load_profile("local")
    assert local.partition == "debug" and local.gpus == 0 and not local.nv
    gpu = S.load_profile(str(ROOT / "slurm" / "profiles" / "example-gpu.yaml"))
    assert gpu.gpus == 1 and gpu.chain_time == 24 * 60 and gpu.array_throttle == 50
    assert gpu.sbatch == ("--mail-type=FAIL",)


def test_the_command_lines_in_the_shipped_profiles_work():
    """Profile comments show users how to override a key: that is --slurm, never --set."""
    for path in sorted((ROOT / "slurm" / "profiles").glob("*.yaml")):
        text = path.read_text()
        for key in S.PROFILE_KEYS:
            assert f"--set {key}=" not in text, f"{path.name}: --set {key}= is --slurm {key}="
        for pair in re.findall(r"--slurm (\S+=\S+)", text):
            S.load_profile(str(path), [pair])


def test_overrides_on_the_command_line():
    p = S.load_profile(
        "local", ["time=2:00:00", "array_throttle=4", "setup=module load x", "gres=gpu:2"]
    )
    assert p.time == 120 and p.array_throttle == 4 and p.setup == ("module load x",)
    assert p.gpus == 2
    p = S.load_profile("local", ["sbatch=[--exclusive, --mail-type=END]", "account=null"])
    assert p.sbatch == ("--exclusive", "--mail-type=END") and p.account is None


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("partition: gpu\ncolour: red\n", "colour: unknown key"),
        ("time: 1h\n", "time: '1h' is not a Slurm time"),
        ("cpus_per_task: zero\n", "cpus_per_task: must be an integer"),
        ("mem: lots\n", "mem: 'lots' is not a Slurm memory size"),
        ("time: 1\nsignal_lead_s: 90\n", "signal_lead_s: 90 s is not shorter"),
        ("sbatch: [exclusive]\n", "is not an sbatch option"),
        ("sbatch: ['--array=0-3']\n", "--array is set by hpc-forget"),
        ("partition: [a\n", "cannot parse the profile"),
        ('"time\\n30": 5\n', "contains the control character '\\n'"),
        ('partition: "gpu\\ntouch x"\n', "partition: 'gpu\\ntouch x' contains the control"),
    ],
)
def test_profile_errors_are_one_line_naming_file_and_key(tmp_path, content, needle):
    p = tmp_path / "site.yaml"
    p.write_text(content)
    with pytest.raises(S.SlurmError) as e:
        S.load_profile(str(p))
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg and needle in msg


def test_override_errors_name_the_option():
    with pytest.raises(S.SlurmError, match=r"^--slurm: colour: unknown profile key"):
        S.load_profile("local", ["colour=red"])
    with pytest.raises(S.SlurmError, match=r"^--slurm: time: "):
        S.load_profile("local", ["time=soon"])
    with pytest.raises(S.SlurmError, match="KEY=VALUE"):
        S.load_profile("local", ["time"])


def test_unknown_profile_lists_where_it_looked():
    with pytest.raises(S.SlurmError, match="no profile named 'nope' in"):
        S.load_profile("nope")


# ============================================================================ arrays


def test_split_array_respects_max_array_size():
    assert S.split_array(10, 4) == [(0, 4), (4, 4), (8, 2)]
    assert S.split_array(3, 1001) == [(0, 3)]
    assert S.split_array(0, 5) == []
    chunks = S.split_array(2500, 1001)
    assert sum(c for _, c in chunks) == 2500 and max(c for _, c in chunks) <= 1001


def test_array_range_and_throttle():
    assert S.array_range(1, None) == "0"
    assert S.array_range(10, None) == "0-9"
    assert S.array_range(10, 3) == "0-9%3"
    assert S.array_range(3, 5) == "0-2"


# ============================================================================ scripts (golden)


def nasty_layout() -> S.JobLayout:
    return S.JobLayout(
        run_folder=f"{NASTY}/runs/demo 100%",
        workdir=NASTY,
        store=f"{NASTY}/store",
        cache_dir=f"{NASTY}/cache",
    )


def test_sbatch_script_host_golden():
    prof = S.load_profile("local", ["array_throttle=2", "setup=echo 'setup ran'"])
    text = S.sbatch_script(
        layout=nasty_layout(),
        array="chains-0",
        job_name="hf-demo-chains",
        count=4,
        time_min=prof.time,
        profile=prof,
        image=None,
        python="/opt/venv/bin/python",
    )
    check_golden("sbatch-host.sh", text)


def test_sbatch_script_apptainer_multi_gpu_golden():
    prof = S.load_profile(
        str(ROOT / "slurm" / "profiles" / "example-gpu.yaml"),
        ["gres=gpu:a100:2", "constraint=a100"],
    )
    text = S.sbatch_script(
        layout=nasty_layout(),
        array="r1-independent-3",
        job_name="hf-paper-independent",
        count=1001,
        time_min=prof.time,
        profile=prof,
        image="/images/hpc forget.sif",
        python="/opt/venv/bin/python",
    )
    check_golden("sbatch-apptainer-2gpu.sh", text)


def parse_sbatch_lines(text: str) -> dict[str, str]:
    """#SBATCH lines as sbatch reads them (quotes removed by the shell's rules)."""
    out = {}
    for line in text.splitlines():
        if line.startswith("#SBATCH --"):
            opt = line[len("#SBATCH --") :]
            k, _, v = opt.partition("=")
            words = subprocess.run(
                ["bash", "-c", f"printf '%s' {v}"], capture_output=True, text=True, check=True
            ).stdout if v else "true"  # fmt: skip
            out[k] = words
    return out


def test_generated_scripts_parse_and_keep_paths_whole():
    layout = nasty_layout()
    for image in (None, "/images/hpc forget.sif"):
        text = S.sbatch_script(
            layout=layout,
            array="chains-0",
            job_name="j",
            count=2,
            time_min=10,
            profile=S.Profile(),
            image=image,
            python="/opt/venv/bin/python",
        )
        subprocess.run(["bash", "-n"], input=text, text=True, check=True)
        opts = parse_sbatch_lines(text)
        assert opts["chdir"] == NASTY
        assert opts["output"] == f"{NASTY}/runs/demo 100%%/logs/chains-0-%A_%a.log"
        assert opts["signal"] == "B:USR1@120" and opts["requeue"] == "true"
        assert opts["array"] == "0-1"


# ============================================================================ hostile values

HOSTILE = ["\n", "\r", "\0", "\x1b", "\x7f", "\x85", "\u2028", "\t"]


def hostile_cases(bad: str) -> dict[str, dict]:
    """The start of the expected error (the value's source) -> the submit() arguments that
    carry ``bad`` from that source."""
    inj = f"{bad}touch /tmp/hpcf-pwned"
    return {
        "config store:": {"cfg": {"store": f"/scratch/s{inj}"}},
        "config cache_dir (or --cache):": {"cfg": {"cache_dir": f"/scratch/c{inj}"}},
        "config name (the job name):": {"cfg": {"name": f"demo{inj}"}},
        "--run-folder:": {"run_folder": f"/scratch/r{inj}"},
        "--container:": {"container": f"/images/x.sif{inj}"},
        "working directory:": {"workdir": f"/scratch/w{inj}"},
        "--slurm: time:": {"slurm": [f"time=30{inj}"]},
        "--slurm: partition:": {"slurm": [f"partition=debug{inj}"]},
        "--slurm: setup:": {"slurm": [f"setup=module load x{inj}"]},
        "--slurm: sbatch:": {"slurm": [f"sbatch=--mail-type=END{inj}"]},
        "--slurm: python:": {"slurm": [f"python=/opt/py{inj}"]},
        "--slurm: container_python:": {"slurm": [f"container_python=python{inj}"]},
        "--slurm: gres:": {"slurm": [f"gres=gpu:1{inj}"]},
        "--slurm:": {"slurm": [f"time{inj}=30"]},
        # a Profile built in code, not loaded: the script builder still refuses
        "site.yaml: python:": {"profile": {"python": f"/opt/py{inj}"}},
        "site.yaml: setup[0]:": {"profile": {"setup": (f"echo{inj}",)}},
        "site.yaml: partition:": {"profile": {"partition": f"a{inj}"}},
        "site.yaml: sbatch[0]:": {"profile": {"sbatch": (f"--comment=x{inj}",)}},
    }


def hostile_submit(case: dict) -> None:
    import dataclasses

    cfg = load_config("demo", overrides={"store": "/scratch/store"})
    cfg = dataclasses.replace(cfg, **case.get("cfg", {}))
    prof = S.load_profile("local", case.get("slurm", ()))
    if "profile" in case:
        prof = dataclasses.replace(prof, source="site.yaml", **case["profile"])
    S.submit(
        cfg,
        prof,
        dry_run=True,
        container=case.get("container"),
        run_folder=case.get("run_folder", "/scratch/run"),
        workdir=case.get("workdir", "/scratch/work"),
        max_array_size=1001,
    )


@pytest.mark.parametrize("bad", HOSTILE, ids=[repr(c) for c in HOSTILE])
def test_control_characters_are_rejected_from_every_source(bad, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for source, case in hostile_cases(bad).items():
        with pytest.raises(S.SlurmError) as e:
            hostile_submit(case)
        msg = str(e.value)
        assert "\n" not in msg and "\r" not in msg and "\0" not in msg, (source, msg)
        assert repr(bad)[1:-1] in msg and "control character" in msg, (source, msg)
        assert msg.startswith(source), (source, msg)
    assert not (tmp_path / "hpcf-pwned").exists()


def test_hostile_value_messages_golden(tmp_path, monkeypatch):
    """The one-line message for a newline from each source (tests/golden/hostile-values.txt)."""
    monkeypatch.chdir(tmp_path)
    lines = []
    for source, case in hostile_cases("\n").items():
        with pytest.raises(S.SlurmError) as e:
            hostile_submit(case)
        lines.append(f"{source}\n    {e.value}")
    check_golden("hostile-values.txt", "\n".join(lines) + "\n")


def test_a_newline_in_a_script_value_would_have_injected_a_command(tmp_path):
    """Why the check exists: without it the script built from a newline path runs `touch`."""
    marker = tmp_path / "pwned"
    text = S.sbatch_script(
        layout=nasty_layout(),
        array="chains-0",
        job_name="j",
        count=1,
        time_min=10,
        profile=S.Profile(),
        image=None,
        python="/opt/venv/bin/python",
    )
    assert "\n#SBATCH --time=10\n" in text  # the normal script keeps every #SBATCH line
    layout = S.JobLayout(run_folder=f"/r\ntouch {marker}", workdir="/w", store="/s", cache_dir="/c")
    with pytest.raises(S.SlurmError, match=r"^--run-folder: '/r\\ntouch "):
        S.sbatch_script(
            layout=layout,
            array="chains-0",
            job_name="j",
            count=1,
            time_min=10,
            profile=S.Profile(),
            image=None,
            python="/opt/venv/bin/python",
        )


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("gres=gpu:x:y:z", "gres: 'gpu:x:y:z' is not a gres list"),
        ("gres=gpu:a100:two", "is not a gres list"),
        ("gres=gpu:", "is not a gres list"),
        ("gres=:2", "is not a gres list"),
        ("gres=gpu:1,,", "is not a gres list"),
        ("cpus_per_task=\u0663", "cpus_per_task: must be an integer >= 1"),
        ("cpus_per_task=-1", "cpus_per_task: must be an integer >= 1"),
        ("max_array_size=0", "max_array_size: must be an integer >= 1"),
        ("signal_lead_s=70000", "signal_lead_s: must be an integer between 0 and 65535"),
        ("mem=16 G", "is not a Slurm memory size"),
        ("partition=gpu;rm", "is not a partition name"),
        ("partition=a b", "is not a partition name"),
        ("account=lab$HOME", "is not a Slurm account name"),
        ("qos=high,low", "is not a Slurm qos name"),
        ("constraint=a100 h100", "is not a Slurm feature expression"),
        ("time=1:2:3:4", "is not a Slurm time"),
        ("time=1-", "is not a Slurm time"),
        ("nv=maybe", "nv: must be true or false"),
        ("setup=[unclosed", "setup: '[unclosed' is not a YAML list"),
        ("sbatch=[a: b]", "sbatch: must be a list of strings"),
        ("time", "use KEY=VALUE"),
        ("=5", "the key before '=' is empty"),
        (" =5", "the key before '=' is empty"),
    ],
)
def test_profile_values_sbatch_would_reject_are_one_line_errors(override, needle):
    with pytest.raises(S.SlurmError) as e:
        S.load_profile("local", [override])
    msg = str(e.value)
    assert msg.startswith("--slurm") and needle in msg and "\n" not in msg


@pytest.mark.parametrize(
    ("override", "gpus"),
    [("gres=gpu", 1), ("gres=gpu:2", 2), ("gres=gpu:a100:2", 2), ("gres=gpu:a100_80g:1,shard:4", 1),
     ("gres=gpu:h100", 1), ("gres=null", 0)],
)  # fmt: skip
def test_gres_values_slurm_accepts(override, gpus):
    assert S.load_profile("local", [override]).gpus == gpus


def test_names_and_expressions_slurm_accepts():
    p = S.load_profile(
        "local",
        ["partition=gpu,gpu-long", "account=lab.ai_2", "qos=normal", "constraint=a100|h100",
         "mem=64g", "signal_lead_s=65535", "time=7-00:00:00"],
    )  # fmt: skip
    assert p.partition == "gpu,gpu-long" and p.constraint == "a100|h100" and p.mem == "64g"


# ============================================================================ array limits

SCONTROL_CONFIG = """Configuration data as of 2026-12-02T18:00:00
MaxArraySize            = 1001
MaxJobCount             = 10000
SchedulerParameters     = bf_continue,max_array_tasks=200,bf_window=4320
SchedulerType           = sched/backfill
"""


def test_array_limits_read_max_array_tasks_too():
    assert S.array_limits(SCONTROL_CONFIG) == {"MaxArraySize": 1001, "max_array_tasks": 200}
    assert S.array_limits("MaxArraySize = 50\nSchedulerParameters = (null)\n") == {
        "MaxArraySize": 50
    }
    assert S.array_limits("") == {}


def test_submit_splits_at_max_array_tasks_below_max_array_size(tmp_path, monkeypatch):
    monkeypatch.setattr(S.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(
        S,
        "_run",
        lambda argv, timeout=60: subprocess.CompletedProcess(argv, 0, SCONTROL_CONFIG, ""),
    )
    assert S.query_max_array_size() == 200
    cfg = small_demo(tmp_path)
    prof = S.load_profile("local", ["max_array_size=500"])
    res = S.submit(cfg, prof, dry_run=True, run_folder=tmp_path / "r")
    assert "arrays split at 200 tasks (MaxArraySize=1001, max_array_tasks=200, profile" in (
        res.summary()
    )


def test_an_array_sbatch_rejects_names_max_array_size(monkeypatch):
    err = "sbatch: error: Batch job submission failed: Invalid job array specification"
    monkeypatch.setattr(
        S, "_run", lambda argv, timeout=60: subprocess.CompletedProcess(argv, 1, "", err)
    )
    with pytest.raises(S.SlurmError) as e:
        S.sbatch_submit("/r/scripts/chains-0.sbatch", size=500)
    msg = str(e.value)
    assert "\n" not in msg and "Invalid job array specification" in msg
    assert "500 task(s)" in msg and "max_array_tasks" in msg and "--slurm max_array_size=N" in msg


# ============================================================================ submit (no Slurm)

SMALL = {
    "data.max_train": 64,
    "data.max_eval": 32,
    "train.max_epochs_full": 2,
    "train.max_epochs_lora": 2,
    "train.patience_full": 100,
    "train.patience_lora": 100,
}


def small_demo(tmp: Path, **more) -> object:
    return load_config("demo", overrides={**SMALL, "store": str(tmp / "store"), **more})


def test_dry_run_needs_no_slurm_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    cfg = small_demo(tmp_path)
    run = tmp_path / "run folder"
    res = S.submit(cfg, S.load_profile("local"), dry_run=True, run_folder=run, max_array_size=6)
    text = res.summary()
    assert not run.exists() and not (tmp_path / "store").exists()
    # 4 chains + 10 independent tasks split at 6: three sbatch calls
    assert text.count("#!/bin/bash") == 3
    assert "# ==== " in text and "independent-1.sbatch (4 task(s)" in text
    assert f"-m hpc_forget.worker '{run}/manifests/chains-0.json'" in text


def test_dry_run_with_an_image_says_versions_were_not_checked(tmp_path):
    cfg = small_demo(tmp_path)
    res = S.submit(
        cfg, S.load_profile("local"), dry_run=True, run_folder=tmp_path / "r", container="x.sif"
    )
    assert "versions not checked" in res.summary()
    assert "apptainer exec --cleanenv" in res.summary()


def test_submit_with_an_image_but_no_apptainer_reports_it_was_not_checked(tmp_path, monkeypatch):
    monkeypatch.setattr(S.shutil, "which", lambda name: None)
    assert "not checked: apptainer is not installed" in S.check_image_versions("/i.sif")


def test_a_missing_image_is_one_line_before_anything_is_written(tmp_path):
    cfg = small_demo(tmp_path)
    with pytest.raises(S.SlurmError) as e:
        S.submit(cfg, S.load_profile("local"), run_folder=tmp_path / "r", container="nope.sif")
    assert str(e.value).startswith("--container:") and "no such image" in str(e.value)
    assert not (tmp_path / "r").exists()


def fake_submit(tmp_path: Path, monkeypatch, cfg=None, **kw) -> Path:
    """submit() with sbatch replaced by a counter: job ids 100, 101, ..."""
    calls: list[str] = []

    def fake_sbatch(path: str, size: int | None = None) -> str:
        calls.append(path)
        return str(100 + len(calls) - 1)

    monkeypatch.setattr(S, "sbatch_submit", fake_sbatch)
    cfg = cfg or small_demo(tmp_path)
    run = tmp_path / "run"
    res = S.submit(cfg, S.load_profile("local"), run_folder=run, max_array_size=6, **kw)
    assert len(calls) == len(res.arrays) == 3  # one sbatch per array
    return run


def test_submit_writes_manifests_scripts_and_the_record(tmp_path, monkeypatch):
    run = fake_submit(tmp_path, monkeypatch)
    sub = json.loads((run / "submission.json").read_text())
    assert [a["name"] for a in sub["arrays"]] == ["chains-0", "independent-0", "independent-1"]
    assert [a["job_id"] for a in sub["arrays"]] == ["100", "101", "102"]
    m = json.loads((run / "manifests" / "independent-1.json").read_text())
    assert len(m["tasks"]) == 4 and m["environment"]["package_version"]
    assert m["config"]["store"] == str(tmp_path / "store")
    assert (run / "scripts" / "chains-0.sbatch").read_text().startswith("#!/bin/bash")
    with pytest.raises(S.SlurmError, match="already holds a submission"):
        S.submit(small_demo(tmp_path), S.load_profile("local"), run_folder=run)


def put_steps(store_path: Path, task: dict, steps) -> None:
    from hpc_forget.store.store import Store

    st = Store(store_path)
    st.put_run(
        task["run_id"],
        key=task["key"],
        kind=task["kind"],
        languages=task["languages"],
        steps=task["steps"],
        labels=["O"],
        config={},
    )
    for s in steps:
        langs = task["languages"] if task["kind"] != "per-language" else [task["languages"][s]]
        st.put_step(
            task["run_id"],
            s,
            scores={lg: 0.5 for lg in langs},
            dev_curve=[0.1],
            meta={},
            provenance={},
        )


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

    st = S.status(run)
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
    assert S.resolve_run_folder(tmp_path).name == "run"


def test_status_after_cancel_and_resubmit_selection(tmp_path, monkeypatch):
    run = fake_submit(tmp_path, monkeypatch)
    calls = []
    monkeypatch.setattr(S, "_run", lambda argv, timeout=60: calls.append(argv) or subprocess.CompletedProcess(argv, 0, "", ""))  # fmt: skip
    assert S.cancel(run) == ["100", "101", "102"]
    assert calls == [["scancel", "100", "101", "102"]]
    st = S.status(run)
    assert all(t.state == "failed" and "cancelled" in t.last_error for t in st.tasks)
    # resubmit picks every failed task, into new arrays of the same run folder, with the
    # submission's profile plus overrides
    res = S.resubmit(run, dry_run=True, overrides=["time=0:45:00"])
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
    monkeypatch.setattr(S, "sbatch_submit", lambda p, size=None: "200")
    S.submit(cfg, S.load_profile("local"), run_folder=run, tasks=chains, max_array_size=50)
    from hpc_forget.cluster.slurm import task_record

    recs = [task_record(t) for t in chains]
    put_steps(tmp_path / "store", recs[0], range(4))
    write_marker(
        run / "tasks" / f"{recs[1]['task_id']}.json", {"array": "chains-0", "state": "failed"}
    )
    write_marker(
        run / "tasks" / f"{recs[2]['task_id']}.json", {"array": "chains-0", "state": "running"}
    )
    st = {t.task_id: t.state for t in S.status(run).tasks}
    assert list(st.values()).count("missing") == 10
    monkeypatch.setattr(S, "_alive_elements", lambda ids: {"200_2", "200_3"})
    ids: list[str] = []
    monkeypatch.setattr(
        S, "sbatch_submit", lambda p, size=None: ids.append(p) or str(300 + len(ids))
    )
    res = S.resubmit(run)
    names = {a["name"]: a["size"] for a in res.arrays}
    assert names == {"r1-chains-0": 1, "r1-independent-0": 10}
    sub = json.loads((run / "submission.json").read_text())
    assert [a["name"] for a in sub["arrays"]] == ["chains-0", "r1-chains-0", "r1-independent-0"]
    st2 = {t.task_id: t for t in S.status(run).tasks}
    assert (
        st2[recs[1]["task_id"]].state == "pending"
        and st2[recs[1]["task_id"]].array == "r1-chains-0"
    )


def test_sacct_states_prefer_element_lines_over_pending_ranges(monkeypatch):
    out = "JobID|State\n4_7|RUNNING\n4_7.batch|RUNNING\n4_[8-9]|PENDING\n4_[7-9]|PENDING\n4_0|COMPLETED\n"
    monkeypatch.setattr(
        S, "_run", lambda argv, timeout=60: subprocess.CompletedProcess(argv, 0, out, "")
    )
    got = S.sacct_states(["4"])
    assert got == {"4_7": "RUNNING", "4_8": "PENDING", "4_9": "PENDING", "4_0": "COMPLETED"}


def test_status_of_10000_tasks_smoke(tmp_path):
    """Smoke check only (generous bound); slurm/bench_status.py measures the real claim."""
    sys.path.insert(0, str(ROOT / "slurm"))
    try:
        import bench_status
    finally:
        sys.path.pop(0)
    folder, n = bench_status.fabricate(tmp_path, 10_000, real_plan=False)
    assert n >= 10_000
    t0 = time.perf_counter()
    st = S.status(folder)
    dt = time.perf_counter() - t0
    assert len(st.tasks) == n and all(
        st.counts()[s] > 1000 for s in ("pending", "running", "done", "failed")
    )
    assert dt < 15, f"status took {dt:.1f} s for {n} tasks"


HEAVY = ("torch", "transformers", "peft", "accelerate", "datasets", "submitit")


def test_status_imports_nothing_heavy(tmp_path, monkeypatch):
    """`hpc-forget status` starts fast: neither the status path of hpc_forget.cluster.slurm nor the CLI
    command imports torch or a Hugging Face library (run in a fresh interpreter)."""
    run = fake_submit(tmp_path, monkeypatch)
    code = (
        "import sys\n"
        "from hpc_forget.cluster.slurm import status\n"
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
    with pytest.raises(S.SlurmError, match="not a run folder"):
        S.status(tmp_path)


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
        parts.append(S.status(run, sacct=True).format())
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


def wait_done(run: Path, timeout: float) -> S.RunStatus:
    def all_done():
        st = S.status(run)
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
    sub = S.read_submission(work / "run")
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
    S.submit(cfg, S.load_profile("local"), container="none", run_folder=run, workdir=work)

    def a_running_task():
        return next((t for t in S.status(run).tasks if t.state == "running"), None)

    victim = wait_for(a_running_task, 300, "a running task", 0.5, lambda: debug_text(run))
    subprocess.run(["scancel", victim.job_id], check=True)
    wait_for(
        lambda: not subprocess.run(["squeue", "-h", "-j", victim.job_id], capture_output=True, text=True).stdout.strip(),
        120,
        f"{victim.job_id} to leave the queue",
    )  # fmt: skip
    after = {t.task_id: t for t in S.status(run).tasks}[victim.task_id]
    assert after.state == "failed", debug_text(run)
    assert "SIGTERM" in after.last_error or "Slurm" in after.last_error

    def sacct_state():  # accounting records reach slurmdbd a few seconds after the job ends
        state = {t.task_id: t for t in S.status(run, sacct=True).tasks}[victim.task_id]
        final = state.slurm_state not in ("", "PENDING", "RUNNING", "REQUEUED")
        return state.slurm_state if final else None

    assert wait_for(sacct_state, 60, "sacct to record the cancelled job", 1.0) == "CANCELLED"
    res = S.resubmit(run)
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
    prof = S.load_profile("local", ["time=30", "signal_lead_s=90"])
    S.submit(cfg, prof, container="none", run_folder=run, workdir=work)
    from hpc_forget.store.store import Store

    store = Store(work / "store")
    tasks = S.status(run).tasks
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
        st = S.status(run)
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
        ["sacct", "-n", "-X", "-D", "-P", "-o", "JobID,State", "-j", S.status(run).tasks[1].job_id.split("_")[0]],
        capture_output=True,
        text=True,
    ).stdout  # fmt: skip
    assert "REQUEUED" in sacct, sacct
    ref = reference_store(references, "chains")
    assert_same_results(r["work"] / "store", ref, {b.run_id})


def test_status_says_when_the_store_holds_these_cells_under_other_settings(tmp_path, monkeypatch):
    """#8: a changed config makes new runs beside the old ones; status says so in one line."""
    from hpc_forget.store.store import Store
    from hpc_forget.study.config import config_from_dict, config_to_dict
    from hpc_forget.study.identity import run_settings
    from hpc_forget.study.planning import plan

    cfg = small_demo(tmp_path)
    run = fake_submit(tmp_path, monkeypatch, cfg=cfg)
    assert S.status(run).note is None
    old_raw = config_to_dict(cfg)
    old_raw["data"]["max_train"] = 7  # an earlier study, same cells, other settings
    old_cfg = config_from_dict(old_raw)
    task = plan(old_cfg)[0]
    assert task.run_id not in {t.run_id for t in S.status(run).tasks}
    Store(cfg.store).put_run(
        task.run_id, key=task.key.as_dict(), kind=task.kind, languages=list(task.languages),
        steps=list(task.steps), labels=["O"], config=old_raw,
        settings=run_settings(old_cfg, task.key.method, task.key.rank),
    )  # fmt: skip
    st = S.status(run)
    assert st.note is not None and "\n" not in st.note
    assert "1 run(s)" in st.note and "(differing in data.max_train)" in st.note
    assert st.note in st.format() and st.as_json()["note"] == st.note
