"""The sbatch scripts (golden files), array splitting, and control characters refused from
every source before they reach a script."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from _golden import NASTY, check_golden  # noqa: E402

from hpc_forget.cluster import profiles as P
from hpc_forget.cluster import runfolder as RF
from hpc_forget.cluster import scripts as SC
from hpc_forget.cluster import submit as SU
from hpc_forget.errors import SlurmError
from hpc_forget.study.config import load_config

ROOT = Path(__file__).resolve().parents[2]


# ============================================================================ arrays


def test_split_array_respects_max_array_size():
    assert SC.split_array(10, 4) == [(0, 4), (4, 4), (8, 2)]
    assert SC.split_array(3, 1001) == [(0, 3)]
    assert SC.split_array(0, 5) == []
    chunks = SC.split_array(2500, 1001)
    assert sum(c for _, c in chunks) == 2500 and max(c for _, c in chunks) <= 1001


def test_array_range_and_throttle():
    assert SC.array_range(1, None) == "0"
    assert SC.array_range(10, None) == "0-9"
    assert SC.array_range(10, 3) == "0-9%3"
    assert SC.array_range(3, 5) == "0-2"


# ============================================================================ scripts (golden)


def nasty_layout() -> RF.JobLayout:
    return RF.JobLayout(
        run_folder=f"{NASTY}/runs/demo 100%",
        workdir=NASTY,
        store=f"{NASTY}/store",
        cache_dir=f"{NASTY}/cache",
    )


def test_sbatch_script_host_golden():
    prof = P.load_profile("local", ["array_throttle=2", "setup=echo 'setup ran'"])
    text = SC.sbatch_script(
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
    prof = P.load_profile(
        str(ROOT / "slurm" / "profiles" / "example-gpu.yaml"),
        ["gres=gpu:a100:2", "constraint=a100"],
    )
    text = SC.sbatch_script(
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
        text = SC.sbatch_script(
            layout=layout,
            array="chains-0",
            job_name="j",
            count=2,
            time_min=10,
            profile=P.Profile(),
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
    prof = P.load_profile("local", case.get("slurm", ()))
    if "profile" in case:
        prof = dataclasses.replace(prof, source="site.yaml", **case["profile"])
    SU.submit(
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
        with pytest.raises(SlurmError) as e:
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
        with pytest.raises(SlurmError) as e:
            hostile_submit(case)
        lines.append(f"{source}\n    {e.value}")
    check_golden("hostile-values.txt", "\n".join(lines) + "\n")


def test_a_newline_in_a_script_value_would_have_injected_a_command(tmp_path):
    """Why the check exists: without it the script built from a newline path runs `touch`."""
    marker = tmp_path / "pwned"
    text = SC.sbatch_script(
        layout=nasty_layout(),
        array="chains-0",
        job_name="j",
        count=1,
        time_min=10,
        profile=P.Profile(),
        image=None,
        python="/opt/venv/bin/python",
    )
    assert "\n#SBATCH --time=10\n" in text  # the normal script keeps every #SBATCH line
    layout = RF.JobLayout(
        run_folder=f"/r\ntouch {marker}", workdir="/w", store="/s", cache_dir="/c"
    )
    with pytest.raises(SlurmError, match=r"^--run-folder: '/r\\ntouch "):
        SC.sbatch_script(
            layout=layout,
            array="chains-0",
            job_name="j",
            count=1,
            time_min=10,
            profile=P.Profile(),
            image=None,
            python="/opt/venv/bin/python",
        )


# ============================================================================ submitit (pinned)

SUBMITIT_PIN = "1.5.4"  # setup.cfg and containers/requirements.txt pin the same
SUBMITIT_REDO = (
    "we call submitit's private submitit.slurm.slurm._make_sbatch_string and edit its output"
    " (scripts.sbatch_script drops its `export SUBMITIT_EXECUTOR=slurm` line; sbatch.sacct_states"
    " parses sacct with its SlurmInfoWatcher): re-check those edits against the new submitit"
    " (the sbatch-*.sh golden files show its output), then update the pin (setup.cfg,"
    " containers/requirements.txt, SUBMITIT_PIN here) and the golden file"
    " tests/golden/submitit-make-sbatch-string-signature.txt (HPC_FORGET_UPDATE_GOLDEN=1)"
)


def test_submitit_is_the_pinned_version_with_the_private_api_we_edit():
    """Fails when submitit changes under us (docs/slurm.md, "submitit is pinned")."""
    import inspect

    import submitit
    from submitit.slurm import slurm as submitit_slurm

    assert submitit.__version__ == SUBMITIT_PIN, (
        f"submitit {submitit.__version__} is installed but {SUBMITIT_PIN} is pinned; "
        + SUBMITIT_REDO
    )
    signature = str(inspect.signature(submitit_slurm._make_sbatch_string)) + "\n"
    try:
        check_golden("submitit-make-sbatch-string-signature.txt", signature)
    except AssertionError as exc:
        pytest.fail(f"{exc}: submitit's _make_sbatch_string changed its signature; {SUBMITIT_REDO}")
    # the line sbatch_script removes is there to remove, exactly once
    text = submitit_slurm._make_sbatch_string(command="true", folder="/logs", use_srun=False)
    assert text.count("export SUBMITIT_EXECUTOR=slurm\n") == 1, SUBMITIT_REDO
